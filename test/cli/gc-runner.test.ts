/**
 * The gc-runner's GET /storage, read through the controller's client: on a filesystem install the
 * size and free bytes of the volume holding the registry's root (a flag, the registry's own
 * REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY, or its configuration file), on S3 that there is no
 * volume; and where the runner finds the root.
 */
import t from 'tap';
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startGcRunner } from '../../src/cli/gc-runner.js';
import { parseGcRunnerConfig, type GcRunnerConfig } from '../../src/config/gc-runner.js';
import { runnerStorage } from '../../src/controller/gc-runner-client.js';
import { createLogger } from '../../src/observability/logger.js';

const PORT = 15655;
const dir = mkdtempSync(join(tmpdir(), 'pt-gc-runner-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function withRunner<T>(storage: GcRunnerConfig['storage'], config: string, work: () => Promise<T>): Promise<T> {
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
