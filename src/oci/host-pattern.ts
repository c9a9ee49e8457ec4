/**
 * Registry host lists as operators write them: `quay.io`, `myreg:5000`, `*.example.com`,
 * `127.0.0.1:*`, or `*` for any. Compared against normalised registry names.
 */
import { normalizeRegistry } from './reference.js';

export interface HostList {
  readonly patterns: readonly string[];
  matches(registry: string): boolean;
}

export function parseHostList(patterns: readonly string[]): HostList {
  const cleaned = patterns.map((p) => p.trim().toLowerCase()).filter((p) => p !== '');
  const regexes = cleaned.map((p) => {
    const normal = p.includes('*') ? p : (normalizeRegistry(p) ?? p);
    const body = normal
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join(p === '*' ? '.*' : '[^.:]*');
    return new RegExp(`^${body}$`);
  });
  return {
    patterns: cleaned,
    matches: (registry) => regexes.some((r) => r.test(registry)),
  };
}
