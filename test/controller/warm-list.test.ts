/**
 * `pullthrough warm`: references from a file or standard input become CachedImages on the fake API
 * server, one per image however it is spelled; a bad line is reported with its number and creates
 * nothing; an object already there is left as it is. The command itself runs as a child process.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCachedImages, readWarmList } from '../../src/controller/warm-list.js';
import { cachedImageName } from '../../src/controller/object-name.js';
import { createCachedImageApi, createKubeClient } from '../../src/kube/index.js';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { testTempDir } from '../helpers/temp.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

t.test('the list: lines, words, comments', async (t) => {
  t.same(readWarmList('nginx:1.27\n\n# a comment\nredis:7 ghcr.io/org/app:v2  # trailing\n'), [
    { line: 1, image: 'nginx:1.27' },
    { line: 4, image: 'redis:7' },
    { line: 4, image: 'ghcr.io/org/app:v2' },
  ]);
});

t.test('CachedImages created once per image; bad lines reported; existing ones left alone', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const cached = createCachedImageApi(createKubeClient({ kubeconfig: await writeKubeconfig(api) }));
  api.put('CachedImage', {
    metadata: { name: cachedImageName('redis:7') },
    spec: { image: 'docker.io/library/redis:7', retain: false },
  });
  const outcomes = await createCachedImages(
    cached,
    readWarmList('nginx:1.27\nlibrary/nginx:1.27\nNot A Ref::\nredis:7\n'),
    { retain: true, platforms: ['all'] },
  );
  t.same(
    outcomes.map((o) => [o.line, typeof o.result === 'string' ? o.result : 'error']),
    [
      [1, 'created'],
      [3, 'error'],
      [3, 'error'],
      [3, 'error'],
      [4, 'exists'],
    ],
  );
  const nginx = api.object('CachedImage', undefined, cachedImageName('nginx:1.27')) as unknown as CachedImage;
  t.same(nginx.spec, { image: 'docker.io/library/nginx:1.27', retain: true, platforms: ['all'] });
  const redis = api.object('CachedImage', undefined, cachedImageName('redis:7')) as unknown as CachedImage;
  t.equal(redis.spec.retain, false, 'an existing object is not changed');
});

t.test('pullthrough warm - reads standard input; exit 1 with a bad line', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const kubeconfig = await writeKubeconfig(api);
  const run = async (args: string[], input?: string) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/main.ts', 'warm', ...args, '--kubeconfig', kubeconfig],
      {
        cwd: ROOT,
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.stdin.end(input ?? '');
    const [code] = (await once(child, 'exit')) as [number];
    return { code, out, err };
  };
  const ok = await run(['-'], 'alpine:3.20\n');
  t.equal(ok.code, 0, ok.err);
  t.match(ok.out, /^created alpine-3.20-[0-9a-f]{10} alpine:3.20$/m);
  const file = join(testTempDir('pt-warm'), 'images.txt');
  writeFileSync(file, 'alpine:3.20\nBad::Ref\n');
  const bad = await run([file]);
  t.equal(bad.code, 1);
  t.match(bad.out, /^exists alpine-3.20-/m);
  t.match(bad.err, /^line 2: Bad::Ref: invalid image reference/m);
});
