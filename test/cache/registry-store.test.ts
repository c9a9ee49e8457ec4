import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { Lab } from '../helpers/lab.js';
import { testTempDir } from '../helpers/temp.js';
import { storeConformance } from './store-conformance.js';

const lab = new Lab('registry-store');
const agent = new Agent({ connect: { timeout: 2000 } });
let s3Up = false;
t.teardown(async () => {
  await agent.close();
  // Started with lab.script, so not in the lab's own list: stopped before cleanup removes its directory.
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

function storeFor(url: string, creds?: { username: string; password: string }): RegistryStore {
  const client = testRegistryClient(url, { name: 'cache', dispatcher: agent, creds, timeoutMs: 5000 });
  return new RegistryStore(client, 'cache');
}

/** radosgw on 15420..15432 (s3-up.sh takes PORT..PORT+12), its flags for registry-up.sh. */
let s3Flags: Promise<string[]> | undefined;
function s3(): Promise<string[]> {
  s3Flags ??= lab.script('s3-up.sh', ['s3', '15420']).then((out) => {
    s3Up = true;
    const v = Object.fromEntries(
      out
        .split('\n')
        .map((l) => /^([A-Z_0-9]+)=(.*)$/.exec(l.trim()))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1], m[2]]),
    ) as Record<string, string>;
    return [
      '--s3',
      v.S3_ENDPOINT ?? '',
      '--s3-access-key',
      v.S3_ACCESS_KEY ?? '',
      '--s3-secret-key',
      v.S3_SECRET_KEY ?? '',
    ];
  });
  return s3Flags;
}

storeConformance(t, 'registry store (distribution, anonymous)', async () =>
  storeFor((await lab.registry('cache', 15010)).url),
);
storeConformance(t, 'registry store (distribution, token auth)', async () =>
  storeFor(
    (await lab.registry('cache-token', 15011, ['--token', '--htpasswd', 'pt:secret', '--token-port', '15012'])).url,
    { username: 'pt', password: 'secret' },
  ),
);
// Blob GETs and HEADs are 307s to presigned radosgw URLs: the store follows them.
storeConformance(t, 'registry store (distribution on S3, redirects on)', async () =>
  storeFor((await lab.registry('cache-s3', 15433, await s3())).url),
);
storeConformance(t, 'registry store (distribution on S3, token auth, redirects on)', async () =>
  storeFor(
    (
      await lab.registry('cache-s3-token', 15434, [
        ...(await s3()),
        '--s3-root',
        '/token',
        '--token',
        '--htpasswd',
        'pt:secret',
        '--token-port',
        '15435',
      ])
    ).url,
    { username: 'pt', password: 'secret' },
  ),
);

t.test('blobLocation: the registry redirect, or that the registry serves the bytes itself', async (t) => {
  const blob = randomBytes(200_000);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const file = join(testTempDir('location-'), 'blob');
  writeFileSync(file, blob);
  const repo = `loc.example/team/app${randomBytes(3).toString('hex')}`;

  const onS3 = storeFor((await lab.registry('loc-s3', 15436, [...(await s3()), '--s3-root', '/loc'])).url);
  t.same(await onS3.blobLocation(repo, digest), { kind: 'missing' }, 'an unknown blob is missing');
  await onS3.putBlobFile(repo, digest, blob.length, file);
  const loc = await onS3.blobLocation(repo, digest);
  t.equal(loc.kind, 'redirect', 'on S3 the registry redirects');
  if (loc.kind === 'redirect') {
    t.match(loc.url, /^http:\/\/127\.0\.0\.1:15420\/registry\/loc\/docker\/registry\/v2\/blobs\/.*X-Amz-Signature=/);
    const part = await request(loc.url, { headers: { range: 'bytes=100-199' }, dispatcher: agent });
    t.equal(part.statusCode, 206, 'the presigned URL answers a Range');
    t.ok(Buffer.from(await part.body.arrayBuffer()).equals(blob.subarray(100, 200)), 'with those bytes');
  }

  const noRedirect = storeFor(
    (await lab.registry('loc-s3-plain', 15437, [...(await s3()), '--s3-root', '/loc', '--no-redirect'])).url,
  );
  t.same(await noRedirect.blobLocation(repo, digest), { kind: 'served' }, 'with redirects off it serves the bytes');
  const fs = storeFor((await lab.registry('loc-fs', 15438)).url);
  await fs.putBlobFile(repo, digest, blob.length, file);
  t.same(await fs.blobLocation(repo, digest), { kind: 'served' }, 'so does a registry on the filesystem');
});
