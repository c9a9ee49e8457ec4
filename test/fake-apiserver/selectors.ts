/**
 * Field and label selectors, equality-based (`a=b`, `a==b`, `a!=b`, comma meaning AND), which is
 * all the API server supports for field selectors anyway.
 */
export interface Requirement {
  readonly key: string;
  readonly op: '=' | '!=';
  readonly value: string;
}

export function parseSelector(s: string | null | undefined): Requirement[] | undefined {
  if (!s) return [];
  const out: Requirement[] = [];
  for (const term of s.split(',')) {
    if (term.trim() === '') continue;
    const m = /^\s*([^!=\s]+)\s*(==|=|!=)\s*([^\s]*)\s*$/.exec(term);
    if (!m) return undefined;
    out.push({ key: m[1] as string, op: m[2] === '!=' ? '!=' : '=', value: m[3] as string });
  }
  return out;
}

function fieldValue(obj: unknown, path: string): string {
  let cur: unknown = obj;
  for (const p of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return '';
    cur = (cur as Record<string, unknown>)[p];
  }
  return typeof cur === 'string' || typeof cur === 'number' || typeof cur === 'boolean' ? String(cur) : '';
}

export function matchesFields(obj: unknown, reqs: readonly Requirement[]): boolean {
  return reqs.every((r) => (fieldValue(obj, r.key) === r.value) === (r.op === '='));
}

export function matchesLabels(labels: Record<string, string> | undefined, reqs: readonly Requirement[]): boolean {
  return reqs.every((r) => {
    const v = labels?.[r.key];
    return r.op === '=' ? v === r.value : v !== r.value;
  });
}
