/**
 * WWW-Authenticate parsing (RFC 7235 auth-params) for the two schemes registries use.
 */
export interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;
const PARAM_START = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*=(?!=)/;
const TOKEN68 = /^[A-Za-z0-9._~+/-]+=*/;

/** Parses one header value, which may hold several challenges (`Bearer a="1", Basic realm="x"`). */
export function parseChallenges(header: string | undefined): Challenge[] {
  if (!header) return [];
  const s = header.slice(0, 8192);
  const out: Challenge[] = [];
  let i = 0;
  const skip = (chars: string) => {
    while (i < s.length && chars.includes(s[i] as string)) i++;
  };
  while (i < s.length) {
    skip(' \t,');
    const scheme = TOKEN.exec(s.slice(i))?.[0];
    if (!scheme) break;
    i += scheme.length;
    const params: Record<string, string> = {};
    out.push({ scheme: scheme.toLowerCase(), params });
    skip(' \t');
    if (!PARAM_START.test(s.slice(i))) {
      const t68 = TOKEN68.exec(s.slice(i))?.[0];
      if (t68 && !PARAM_START.test(s.slice(i))) i += t68.length;
      continue;
    }
    while (PARAM_START.test(s.slice(i))) {
      const name = (TOKEN.exec(s.slice(i))?.[0] ?? '').toLowerCase();
      i += name.length;
      skip(' \t');
      i++; // '='
      skip(' \t');
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s.charAt(i);
          i++;
        }
        i++;
      } else {
        value = TOKEN.exec(s.slice(i))?.[0] ?? '';
        i += value.length;
      }
      // Defined, not assigned: a parameter named `__proto__` is a parameter, not the prototype.
      Object.defineProperty(params, name, { value, enumerable: true, writable: true, configurable: true });
      skip(' \t');
      if (s[i] !== ',') break;
      i++;
      skip(' \t,');
    }
  }
  return out;
}
