/**
 * `pullthrough warm` arguments: one file of image references (or `-` for standard input), the
 * kubeconfig, and what every CachedImage it creates asks for.
 */
import { ConfigError, helpText, parseFlags, parseList, type FlagSpec } from './flags.js';
import type { ParsedArgs } from './encode.js';

export const warmFlags: readonly FlagSpec[] = [
  { name: 'kubeconfig', kind: 'string', arg: 'FILE', help: 'A kubeconfig file; in-cluster without it.' },
  { name: 'retain', kind: 'boolean', help: 'Never expire these images.' },
  { name: 'platforms', kind: 'string', arg: 'LIST', help: "os/arch[/variant] entries, or 'all'." },
  { name: 'pull-secret', kind: 'string', arg: 'NS/NAME', help: 'The docker config Secret for private images.' },
];

export const WARM_HELP = helpText(
  'Usage: pullthrough warm FILE|- [flags]\n' +
    'Creates a CachedImage for each image reference in FILE (one per line; `-` reads standard input;\n' +
    'blank lines and # comments skipped), so the controller fetches them into the cache.',
  warmFlags,
);

export interface WarmArgs {
  readonly file: string;
  readonly kubeconfig?: string;
  readonly retain: boolean;
  readonly platforms?: readonly string[];
  readonly pullSecret?: { readonly namespace: string; readonly name: string };
}

export function parseWarmArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedArgs<WarmArgs> {
  const options = { positionals: true, emptyEnvIsUnset: true };
  // `-` (standard input) is a file name here, not a flag the parser should refuse.
  const {
    values: v,
    positionals: named,
    help,
  } = parseFlags(
    warmFlags,
    argv.filter((a) => a !== '-'),
    env,
    options,
  );
  const positionals = argv.includes('-') ? ['-', ...named] : named;
  const [file] = positionals;
  if (help || positionals.length !== 1 || file === undefined) return { help: true, misuse: !help };
  let pullSecret: WarmArgs['pullSecret'];
  if (v['pull-secret'] !== undefined) {
    const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(v['pull-secret']);
    if (!m) throw new ConfigError(`--pull-secret: expected NAMESPACE/NAME, got ${JSON.stringify(v['pull-secret'])}`);
    pullSecret = { namespace: m[1] as string, name: m[2] as string };
  }
  const platforms = v.platforms === undefined ? undefined : parseList(v.platforms);
  return {
    help: false,
    file,
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
    retain: v.retain === 'true',
    ...(platforms !== undefined ? { platforms } : {}),
    ...(pullSecret ? { pullSecret } : {}),
  };
}
