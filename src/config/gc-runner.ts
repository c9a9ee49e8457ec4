/**
 * `pullthrough gc-runner` settings (the sidecar in the cache registry's pod that runs
 * distribution's garbage-collect for the controller): every flag has a PULLTHROUGH_* variable.
 */
import { helpText, parseDuration, parseFlags, parseHostPort, valueOf, type FlagSpec } from './flags.js';

export interface GcRunnerConfig {
  readonly listen: { host: string; port: number };
  /** distribution's binary (`registry`), run as `<bin> garbage-collect <config>`. */
  readonly registryBin: string;
  /** The registry's configuration file; its REGISTRY_* environment applies on top, as for the registry. */
  readonly registryConfig: string;
  /** A garbage-collect running longer is killed and answered as failed. */
  readonly timeoutMs: number;
  /**
   * Where GET /storage looks: the registry's filesystem root; none (REGISTRY_STORAGE names another
   * driver); or the root the registry's configuration file names, if it stores on a filesystem.
   */
  readonly storage: { readonly dir: string } | 'no-volume' | 'from-config';
  readonly logLevel: string;
}

export const gcRunnerFlags: readonly FlagSpec[] = [
  { name: 'listen', kind: 'string', arg: 'HOST:PORT', default: '0.0.0.0:5001', help: 'Where POST /collect is served.' },
  {
    name: 'registry-bin',
    kind: 'string',
    arg: 'FILE',
    default: 'registry',
    help: "distribution's registry binary (the sidecar copies it from the registry image).",
  },
  {
    name: 'registry-config',
    kind: 'string',
    arg: 'FILE',
    default: '/etc/docker/registry/config.yml',
    help: "The registry's configuration file (with the registry container's REGISTRY_* variables).",
  },
  { name: 'timeout', kind: 'duration', default: '1h', help: 'A garbage-collect running longer is killed.' },
  {
    name: 'storage-dir',
    kind: 'string',
    arg: 'DIR',
    help:
      "The registry's filesystem root, whose volume GET /storage measures (default: " +
      "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY, else the configuration's storage.filesystem.rootdirectory).",
  },
  { name: 'log-level', kind: 'string', arg: 'LEVEL', default: 'info', help: 'pino level.' },
];

export const GC_RUNNER_HELP = helpText(
  [
    'Usage: pullthrough gc-runner [flags]',
    '',
    "Runs distribution's garbage-collect on the cache registry's storage when the controller asks",
    '(POST /collect), one at a time; a run whose caller goes away is killed; says the size and free',
    "space of the registry's volume (GET /storage). A sidecar of the registry.",
  ].join('\n'),
  gcRunnerFlags,
);

export function parseGcRunnerConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): { help: true } | { help: false; config: GcRunnerConfig } {
  const { values: v, help } = parseFlags(gcRunnerFlags, argv, env, { emptyEnvIsUnset: true });
  if (help) return { help: true };
  return {
    help: false,
    config: {
      listen: parseHostPort('listen', valueOf(v, 'listen')),
      registryBin: valueOf(v, 'registry-bin'),
      registryConfig: valueOf(v, 'registry-config'),
      timeoutMs: parseDuration('timeout', valueOf(v, 'timeout')),
      storage: storageOf(v['storage-dir'], env),
      logLevel: valueOf(v, 'log-level'),
    },
  };
}

/** The flag, else the registry's own variable; on another storage driver, none. */
function storageOf(flag: string | undefined, env: NodeJS.ProcessEnv): GcRunnerConfig['storage'] {
  if (flag) return { dir: flag };
  if (env.REGISTRY_STORAGE && env.REGISTRY_STORAGE !== 'filesystem') return 'no-volume';
  const dir = env.REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY;
  return dir ? { dir } : 'from-config';
}
