/**
 * The one flag parser of every subcommand: command-line flags with matching PULLTHROUGH_*
 * environment variables; a flag wins over its variable, the variable over the default. Every
 * subcommand declares its flags once as FlagSpec[]; `--help` text is generated from the same
 * declarations.
 */

/** 'repeatable': the flag may be given several times; its variable holds one value per line. */
export type FlagKind = 'string' | 'list' | 'duration' | 'boolean' | 'repeatable';

export interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  readonly help: string;
  readonly default?: string;
  /** The value's placeholder in the help text (HOST:PORT, FILE...); by kind when unset. */
  readonly arg?: string;
}

/** Any invalid flag, variable or value, whichever subcommand reads it: the command exits with 2. */
export class ConfigError extends Error {}

export function envName(flag: string): string {
  return `PULLTHROUGH_${flag.replace(/-/g, '_').toUpperCase()}`;
}

export interface ParsedFlags {
  /** Every flag but the repeatable ones: from the flag, else its variable, else the default. */
  readonly values: Readonly<Record<string, string | undefined>>;
  /** The repeatable flags: every occurrence in order, else the variable's non-empty lines. */
  readonly repeated: Readonly<Record<string, readonly string[]>>;
  readonly positionals: readonly string[];
  readonly help: boolean;
}

export interface ParseOptions {
  readonly positionals?: boolean;
  /**
   * An empty variable counts as unset, so the default applies (a manifest's `value: ""`). Without
   * it an empty variable is an empty value, as the proxy reads PULLTHROUGH_METRICS_LISTEN="".
   */
  readonly emptyEnvIsUnset?: boolean;
}

/**
 * Accepts `--name value` and `--name=value` for every flag, also when the value starts with a dash
 * (a regex), and `--bool`, `--bool=true|false|1|0`; `--help` or `-h` asks for the help text.
 * node:util parseArgs refuses the dash values and the valued booleans, which the webhook and
 * node-setup commands have always accepted.
 */
export function parseFlags(
  specs: readonly FlagSpec[],
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  opts: ParseOptions = {},
): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const given = new Map<string, string[]>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('-')) {
      positionals.push(arg);
      continue;
    }
    const m = /^--([^=]+)(?:=([\s\S]*))?$/.exec(arg);
    const spec = m ? byName.get(m[1] as string) : undefined;
    if (!m || !spec) throw new ConfigError(`unknown argument ${JSON.stringify(arg)} (unknown flag; --help lists them)`);
    let value = m[2];
    if (spec.kind === 'boolean') {
      value = booleanFlag(spec.name, value);
    } else if (value === undefined) {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`--${spec.name} needs a value`);
      value = next;
    }
    given.set(spec.name, spec.kind === 'repeatable' ? [...(given.get(spec.name) ?? []), value] : [value]);
  }
  if (positionals.length > 0 && !opts.positionals) {
    throw new ConfigError(`unknown argument ${JSON.stringify(positionals[0])} (this command takes flags only)`);
  }
  const values: Record<string, string | undefined> = {};
  const repeated: Record<string, readonly string[]> = {};
  for (const s of specs) {
    const raw = env[envName(s.name)];
    const fromEnv = opts.emptyEnvIsUnset && raw === '' ? undefined : raw;
    const fromFlag = given.get(s.name);
    if (s.kind === 'repeatable') {
      repeated[s.name] = fromFlag ?? lines(fromEnv);
    } else {
      values[s.name] = fromFlag?.at(-1) ?? fromEnv ?? s.default;
    }
  }
  return { values, repeated, positionals, help };
}

/** The value of a flag declared with a default: never undefined, so no caller repeats the default. */
export function valueOf(values: ParsedFlags['values'], name: string): string {
  const v = values[name];
  if (v === undefined) throw new Error(`--${name} is read as if it had a default, and it has none`);
  return v;
}

function booleanFlag(name: string, inline: string | undefined): string {
  if (inline === undefined || /^(true|1)$/i.test(inline)) return 'true';
  if (/^(false|0)$/i.test(inline)) return 'false';
  throw new ConfigError(`--${name}: expected true or false, got ${JSON.stringify(inline)}`);
}

function lines(v: string | undefined): string[] {
  return (v ?? '')
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Help text columns: the flag's description is wrapped to fit. */
const HELP_WIDTH = 100;
const INDENT = '      ';

export function helpText(usage: string, specs: readonly FlagSpec[]): string {
  const out = [usage, '', 'Flags (each also read from the environment variable shown):'];
  for (const s of specs) {
    out.push(`  --${s.name}${placeholder(s)}`);
    out.push(...wrap(s.help, HELP_WIDTH - INDENT.length).map((l) => INDENT + l));
    const env = s.kind === 'boolean' ? `${envName(s.name)}=true` : envName(s.name);
    out.push(`${INDENT}env ${env}${s.default !== undefined && s.default !== '' ? `; default ${s.default}` : ''}`);
  }
  out.push('  --help', `${INDENT}Print this text.`);
  return out.join('\n');
}

function placeholder(s: FlagSpec): string {
  if (s.kind === 'boolean') return '';
  if (s.arg !== undefined) return ` ${s.arg}`;
  return s.kind === 'list' ? ' A,B,...' : s.kind === 'duration' ? ' DURATION' : ' VALUE';
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') out.push(line);
  return out;
}

export function parseList(v: string | undefined): string[] {
  return (v ?? '')
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `90`, `90s`, `15m`, `2h`, `1d`, `500ms` -> milliseconds. */
export function parseDuration(name: string, v: string | undefined): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(v ?? '');
  if (!m) throw new ConfigError(`--${name}: not a duration: ${JSON.stringify(v)} (use e.g. 30s, 15m, 2h)`);
  const unit = (m[2] ?? 's') as keyof typeof DURATION_UNITS;
  return Math.round(Number(m[1]) * DURATION_UNITS[unit]);
}

export function parseHostPort(name: string, v: string | undefined): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:]+):(\d{1,5})$/.exec(v ?? '');
  if (!m || Number(m[2]) > 65535) throw new ConfigError(`--${name}: expected HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}
