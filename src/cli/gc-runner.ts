/**
 * `pullthrough gc-runner`: the cache registry pod's sidecar that runs distribution's
 * `registry garbage-collect` when the controller's collection asks (docs/garbage-collection.md).
 * It shares the registry's volume and configuration. POST /collect runs one garbage-collect and
 * answers when it ends (200, or 500 with the tail of its output); a second request while one runs
 * gets 409. When the caller goes away (its Lease lost, so writers may go on) the run is killed:
 * an interrupted garbage-collect leaves the registry consistent. GET /storage answers the size and
 * free bytes of the registry's volume (a statfs: cheap), or that it stores on object storage. Only
 * the controller may reach the port (NetworkPolicy pullthrough-registry).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, statfs } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { parse } from 'yaml';
import { GC_RUNNER_HELP, parseGcRunnerConfig, type GcRunnerConfig } from '../config/gc-runner.js';
import type { RegistryStorage } from '../controller/registry-collector.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { untilSignal } from './usage.js';

export async function runGcRunnerCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseGcRunnerConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(`${GC_RUNNER_HELP}\n`);
    return 0;
  }
  const log = createLogger(parsed.config.logLevel);
  const server = await startGcRunner(parsed.config, log);
  log.info({ signal: await untilSignal() }, 'shutting down');
  server.close();
  return 0;
}

/** Outcome of one garbage-collect. */
export interface RunOutcome {
  readonly ok: boolean;
  readonly exitCode: number | null;
  /** Blobs it deleted (its `Deleting blob` lines). */
  readonly blobsDeleted: number;
  readonly durationMs: number;
  /** The end of its output, when it failed. */
  readonly tail?: string;
}

export async function startGcRunner(config: GcRunnerConfig, log: Logger): Promise<Server> {
  let running = false;
  const root =
    config.storage === 'no-volume'
      ? undefined
      : config.storage === 'from-config'
        ? await configuredRoot(config.registryConfig, log)
        : config.storage.dir;
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') return answer(res, 200, { ok: true });
    if (req.method === 'GET' && req.url === '/storage') {
      void storage(root).then(
        (s) => answer(res, 200, s),
        (err: unknown) => answer(res, 500, { error: `statfs ${root ?? ''}: ${(err as Error).message}` }),
      );
      return;
    }
    if (req.url !== '/collect') return answer(res, 404, { error: 'not found' });
    if (req.method !== 'POST') return answer(res, 405, { error: 'POST /collect' });
    if (running) return answer(res, 409, { error: 'a garbage-collect is running' });
    running = true;
    void collect(config, req, log)
      .then((outcome) => answer(res, outcome.ok ? 200 : 500, outcome))
      .finally(() => (running = false));
  });
  server.listen(config.listen.port, config.listen.host);
  await once(server, 'listening');
  log.info(
    {
      listen: `${config.listen.host}:${config.listen.port}`,
      config: config.registryConfig,
      storage: root ?? 'no volume',
    },
    'gc-runner ready',
  );
  return server;
}

async function collect(config: GcRunnerConfig, req: IncomingMessage, log: Logger): Promise<RunOutcome> {
  const started = Date.now();
  const child = spawn(config.registryBin, ['garbage-collect', config.registryConfig], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let blobsDeleted = 0;
  const take = (chunk: Buffer): void => {
    const text = chunk.toString('utf8');
    blobsDeleted += text.split('Deleting blob').length - 1;
    output = (output + text).slice(-4096);
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  const kill = (why: string) => (): void => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    log.warn({ why }, 'garbage-collect killed');
    child.kill('SIGKILL');
  };
  const timer = setTimeout(kill('timeout'), config.timeoutMs);
  const onGone = kill('the caller went away');
  req.socket.once('close', onGone);
  const [code] = (await Promise.race([
    once(child, 'exit'),
    once(child, 'error').then(([err]) => {
      output += String(err);
      return [null];
    }),
  ])) as [number | null];
  clearTimeout(timer);
  req.socket.off('close', onGone);
  const outcome: RunOutcome = {
    ok: code === 0,
    exitCode: code,
    blobsDeleted,
    durationMs: Date.now() - started,
    ...(code === 0 ? {} : { tail: output.slice(-1024) }),
  };
  if (outcome.ok) log.info({ blobsDeleted, durationMs: outcome.durationMs }, 'garbage-collect done');
  else log.warn({ exitCode: code, tail: outcome.tail }, 'garbage-collect failed');
  return outcome;
}

/** The volume holding `root`, or none (object storage). */
async function storage(root: string | undefined): Promise<RegistryStorage> {
  if (root === undefined) return { kind: 'no-volume' };
  const s = await statfs(root);
  // bavail: what the registry, not root, may still write.
  return { kind: 'volume', sizeBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
}

/** The configuration's storage.filesystem.rootdirectory; undefined when it stores elsewhere. */
async function configuredRoot(file: string, log: Logger): Promise<string | undefined> {
  try {
    const doc = parse(await readFile(file, 'utf8')) as {
      storage?: { filesystem?: { rootdirectory?: unknown } };
    } | null;
    const dir = doc?.storage?.filesystem?.rootdirectory;
    return typeof dir === 'string' && dir !== '' ? dir : undefined;
  } catch (err) {
    log.warn({ file, err: (err as Error).message }, "gc-runner: the registry's configuration could not be read");
    return undefined;
  }
}

function answer(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}
