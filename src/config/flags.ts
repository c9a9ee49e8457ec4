/**
 * Command-line flags with matching PULLTHROUGH_* environment variables: a flag wins over its
 * variable, the variable over the default. Every subcommand declares its flags once; `--help`
 * text is generated from the same declarations.
 */
import { parseArgs } from 'node:util';

export type FlagKind = 'string' | 'list' | 'duration' | 'boolean';

export interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  readonly help: string;
  readonly default?: string;
  /** Hide the value in messages (never echoed back). */
  readonly secret?: boolean;
}

export class ConfigError extends Error {}

export function envName(flag: string): string {
  return `PULLTHROUGH_${flag.replace(/-/g, '_').toUpperCase()}`;
}

export interface ParsedFlags {
  readonly values: Readonly<Record<string, string | undefined>>;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

export function parseFlags(specs: readonly FlagSpec[], argv: readonly string[], env: NodeJS.ProcessEnv, opts: { positionals?: boolean } = {}): ParsedFlags {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' } };
  for (const s of specs) options[s.name] = { type: s.kind === 'boolean' ? 'boolean' : 'string' };
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: opts.positionals ?? false });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const values: Record<string, string | undefined> = {};
  for (const s of specs) {
    const v = parsed.values[s.name];
    const fromFlag = typeof v === 'boolean' ? String(v) : v;
    values[s.name] = fromFlag ?? env[envName(s.name)] ?? s.default;
  }
  return { values, positionals: parsed.positionals, help: parsed.values.help === true };
}

export function helpText(usage: string, specs: readonly FlagSpec[]): string {
  const lines = [usage, '', 'Flags (each also read from the environment variable shown):'];
  for (const s of specs) {
    const arg = s.kind === 'boolean' ? '' : s.kind === 'list' ? ' A,B,...' : s.kind === 'duration' ? ' DURATION' : ' VALUE';
    lines.push(`  --${s.name}${arg}`);
    lines.push(`      ${s.help}`);
    lines.push(`      env ${envName(s.name)}${s.default !== undefined && s.default !== '' ? `; default ${s.default}` : ''}`);
  }
  lines.push('  --help', '      Print this text.');
  return lines.join('\n');
}

export function parseList(v: string | undefined): string[] {
  return (v ?? '')
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** `90`, `90s`, `15m`, `2h`, `1d`, `500ms` -> milliseconds. */
export function parseDuration(name: string, v: string | undefined): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(v ?? '');
  if (!m) throw new ConfigError(`--${name}: not a duration: ${JSON.stringify(v)} (use e.g. 30s, 15m, 2h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

export function parseHostPort(name: string, v: string | undefined): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(v ?? '');
  if (!m || Number(m[2]) > 65535) throw new ConfigError(`--${name}: expected HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}
