/**
 * The gc-runner's GET /storage, read through the controller's client: on a filesystem install the
 * size and free bytes of the volume holding the registry's root (a flag, the registry's own
 * REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY, or its configuration file), on S3 that there is no
 * volume; and where the runner finds the root. POST /collect with a garbage-collect that does not
 * end (a stand-in for `registry`: the runner's own process handling is under test): one at a time,
 * killed when the caller goes away, and killed at --timeout.
 */
import t from 'tap';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startGcRunner } from '../../src/cli/gc-runner.js';
import { parseGcRunnerConfig, type GcRunnerConfig } from '../../src/config/gc-runner.js';
import { runnerStorage } from '../../src/controller/gc-runner-client.js';
import { createLogger } from '../../src/observability/logger.js';
import { eventually } from '../helpers/wait.js';

const PORT = 15655;
const dir = mkdtempSync(join(tmpdir(), 'pt-gc-runner-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function withRunner<T>(
  storage: GcRunnerConfig['storage'],
  config: string,
  work: () => Promise<T>,
  run: Partial<Pick<GcRunnerConfig, 'registryBin' | 'timeoutMs'>> = {},
): Promise<T> {
  const file = join(dir, 'config.yml');
  writeFileSync(file, config);
  const server = await startGcRunner(
    {
      listen: { host: '127.0.0.1', port: PORT },
      registryBin: 'false',
      registryConfig: file,
      timeoutMs: 1000,
      storage,
      logLevel: 'silent',
      ...run,
    },
    createLogger('silent'),
  );
  try {
    return await work();
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

const storage = runnerStorage(`http://127.0.0.1:${PORT}`);
const FILESYSTEM = `version: 0.1\nstorage:\n  filesystem: {rootdirectory: ${dir}}\n  delete: {enabled: true}\n`;
const S3 =
  'version: 0.1\nstorage:\n  s3:\n    region: us-east-1\n    bucket: registry\n    accesskey: "AK"\n' +
  '    secretkey: "SK"\n  delete: {enabled: true}\n';

t.test('a filesystem install: the volume of the root directory', async (t) => {
  for (const [how, s, config] of [
    ['the flag', { dir }, S3],
    ["the configuration's rootdirectory", 'from-config', FILESYSTEM],
  ] as const) {
    const got = await withRunner(s, config, storage);
    const fs = statfsSync(dir);
    t.equal(got.kind, 'volume', how);
    if (got.kind !== 'volume') continue;
    t.equal(got.sizeBytes, fs.blocks * fs.bsize, `${how}: size`);
    // Others write to this disk meanwhile: free space is only near what statfs said.
    t.ok(Math.abs(got.freeBytes - fs.bavail * fs.bsize) < 1024 ** 3, `${how}: free bytes`);
  }
});

t.test('an S3 install: no volume, and no secret in the answer', async (t) => {
  await withRunner('from-config', S3, async () => {
    t.same(await storage(), { kind: 'no-volume' });
    const raw = await request(`http://127.0.0.1:${PORT}/storage`);
    t.notMatch(await raw.body.text(), /AK|SK|registry/);
  });
  await withRunner('no-volume', FILESYSTEM, async () => t.same(await storage(), { kind: 'no-volume' }));
});

t.test('an unreachable runner is STORAGE_UNKNOWN', async (t) => {
  await t.rejects(storage(), { code: 'STORAGE_UNKNOWN' });
});

t.test('where the runner looks for the root', async (t) => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
    const p = parseGcRunnerConfig(argv, env);
    if (p.help) throw new Error('help');
    return p.config.storage;
  };
  t.same(parse(['--storage-dir=/data']), { dir: '/data' });
  t.same(parse([], { REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY: '/var/lib/registry' }), { dir: '/var/lib/registry' });
  t.equal(parse([], { REGISTRY_STORAGE: 's3' }), 'no-volume', "the registry's variable names another driver");
  t.equal(parse([]), 'from-config');
});

/** A `registry` whose garbage-collect runs until killed, and says its pid. */
function endlessRegistry(): { bin: string; pidFile: string } {
  const pidFile = join(dir, 'gc.pid');
  rmSync(pidFile, { force: true });
  const bin = join(dir, 'registry-endless');
  writeFileSync(bin, `#!/bin/sh\necho $$ > ${pidFile}\nexec sleep 120\n`);
  chmodSync(bin, 0o755);
  return { bin, pidFile };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test('a caller that goes away: the garbage-collect is killed; a second caller meanwhile gets 409', async (t) => {
  const { bin, pidFile } = endlessRegistry();
  await withRunner(
    { dir },
    FILESYSTEM,
    async () => {
      // Its own connections: the runners of other cases listened on the same port.
      const dispatcher = new Agent();
      t.teardown(() => dispatcher.close());
      const caller = new AbortController();
      const first = request(`http://127.0.0.1:${PORT}/collect`, { method: 'POST', signal: caller.signal, dispatcher });
      first.catch(() => undefined);
      await eventually(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 'the run started');
      const pid = Number(readFileSync(pidFile, 'utf8'));
      t.ok(alive(pid), 'garbage-collect runs');
      const second = await request(`http://127.0.0.1:${PORT}/collect`, { method: 'POST', dispatcher });
      t.equal(second.statusCode, 409, 'one run at a time');
      await second.body.dump();
      caller.abort();
      await t.rejects(first, 'the caller went away');
      await eventually(() => !alive(pid), 'the garbage-collect was killed');
      t.pass('killed');
    },
    { registryBin: bin, timeoutMs: 60_000 },
  );
});

t.test('a garbage-collect past --timeout is killed, and the caller gets 500', async (t) => {
  const { bin, pidFile } = endlessRegistry();
  await withRunner(
    { dir },
    FILESYSTEM,
    async () => {
      const dispatcher = new Agent();
      t.teardown(() => dispatcher.close());
      const res = await request(`http://127.0.0.1:${PORT}/collect`, { method: 'POST', dispatcher });
      t.equal(res.statusCode, 500);
      t.match(await res.body.json(), { ok: false, exitCode: null });
      t.notOk(alive(Number(readFileSync(pidFile, 'utf8'))), 'the run is gone');
    },
    { registryBin: bin, timeoutMs: 500 },
  );
});
