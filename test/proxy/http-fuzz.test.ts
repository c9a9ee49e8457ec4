/**
 * A bounded HTTP fuzz of a running node proxy: a real listener (127.0.0.1:15220, embedded store)
 * in front of one lab registry (127.0.0.1:15221) holding one small image, and thousands of
 * generated requests (methods, /v2/ shapes, encoded registries, `..`, percent-encodings, very long
 * paths, query strings, Range, Accept and Authorization junk). Every answer is OCI error JSON with
 * a 4xx/5xx or a valid answer for its route (the digest of what is served checked, a 206 checked
 * against the blob's bytes); the process stays up; open file descriptors and memory come back to
 * their baseline. `--allowed-registries` names only this file's ports, so every other registry is
 * refused before any connection: nothing reaches the network beyond 127.0.0.1.
 */
import t from 'tap';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, request, errors as undiciErrors } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { runs } from '../property/settings.js';

const PROXY_PORT = 15220;
const REGISTRY_PORT = 15221;
/** Allowed, and nothing listens there: the origin-down path. */
const DEAD_PORT = 15239;
const REG = `127.0.0.1:${REGISTRY_PORT}`;
const ENC = `127.0.0.1_${REGISTRY_PORT}`;
const REPO = 'fuzz/app';
const REQUESTS = 3000;
const FD_MARGIN = 8;
const HEAP_MARGIN = 16 * 1024 * 1024;
const RSS_MARGIN = 64 * 1024 * 1024;

const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
];

const lab = new Lab('http-fuzz');
let proxy: TestProxy;
let image: Image;
/** Every blob of the image, by digest, as the registry holds it. */
const blobs = new Map<string, Buffer>();

const unexpected: unknown[] = [];
const onUnexpected = (reason: unknown) => unexpected.push(reason);
process.on('unhandledRejection', onUnexpected);

/** Replaced by the proxy's stop once it started. */
let stopProxy = (): Promise<void> => Promise.resolve();

t.teardown(async () => {
  process.off('unhandledRejection', onUnexpected);
  await stopProxy();
  await lab.cleanup();
});

/** V8's full collection, without --expose-gc on the command line (tap starts the process). */
function fullGc(): () => void {
  setFlagsFromString('--expose-gc');
  try {
    return runInNewContext('gc') as () => void;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
}
const gc = fullGc();

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const openFds = () => readdirSync('/proc/self/fd').length;

/** Polls `f` until it gives a value, for at most `ms`. */
async function until<T>(f: () => T | undefined, ms = 10_000): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined || Date.now() > end) return v;
    await sleep(10);
  }
}

async function quiesce(): Promise<{ fds: number; heap: number; rss: number }> {
  await proxy.settle();
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(20);
  }
  const m = process.memoryUsage();
  return { fds: openFds(), heap: m.heapUsed, rss: m.rss };
}

t.before(async () => {
  await lab.registry('origin', REGISTRY_PORT);
  image = await lab.image(REG, REPO, 'v1', ['--layers', '2', '--layer-mb', '0.05']);
  const manifest = await request(`http://${REG}/v2/${REPO}/manifests/${image.digest}`, {
    headers: { accept: MANIFEST_TYPES.join(', ') },
  });
  const body = Buffer.from(await manifest.body.arrayBuffer());
  const parsed = JSON.parse(body.toString('utf8')) as { config: { digest: string } };
  for (const digest of [parsed.config.digest, ...image.layers]) {
    const res = await request(`http://${REG}/v2/${REPO}/blobs/${digest}`);
    blobs.set(digest, Buffer.from(await res.body.arrayBuffer()));
  }
  proxy = await startProxy(
    [
      '--data-dir',
      lab.tempDir('pt-http-fuzz'),
      '--allowed-registries',
      `${REG},127.0.0.1:${DEAD_PORT}`,
      '--insecure-registries',
      `${REG},127.0.0.1:${DEAD_PORT}`,
      '--origin-connect-timeout',
      '2s',
      '--origin-timeout',
      '5s',
      // Request lines, not the debug detail: the kept log text is part of the memory measured.
      '--log-level',
      'info',
    ],
    { port: PROXY_PORT },
  );
  stopProxy = () => proxy.stop();
});

// ---- what is sent ----

interface FuzzRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Uint8Array;
}

const printable = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  maxLength: 40,
});
/** Some characters percent-encoded, in either case, some left alone (those a path may carry raw). */
const percentEncoded = fc
  .array(fc.tuple(fc.integer({ min: 0, max: 0xff }), fc.constantFrom('raw', 'lower', 'upper')), { maxLength: 16 })
  .map((cs) =>
    cs
      .map(([c, how]) => {
        const ch = String.fromCharCode(c);
        if (how === 'raw' && /[A-Za-z0-9._~:@!$&'()*+,;=-]/.test(ch)) return ch;
        const hex = c.toString(16).padStart(2, '0');
        return `%${how === 'lower' ? hex : hex.toUpperCase()}`;
      })
      .join(''),
  );

const segment = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,15}$/) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'fuzz',
      'app',
      'library',
      '..',
      '.',
      '',
      '%2e%2e',
      '%2E%2E',
      '.%2e',
      '%2F',
      '%2f..%2f',
      '%00',
      '%',
      '%zz',
      '%c0%ae',
      'A',
      'UPPER',
      '_',
      '__',
      '-a',
      'a--b',
      'a__b',
      'manifests',
      'blobs',
      'uploads',
      'v2',
      'tags',
      '~',
      ';x',
      '@',
      ':',
      'a'.repeat(256),
    ),
  },
  { weight: 2, arbitrary: percentEncoded },
);
const repoName = fc.oneof(
  { weight: 6, arbitrary: fc.constant(`${ENC}/${REPO}`) },
  { weight: 2, arbitrary: fc.constant(REPO) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.constantFrom(
          ENC,
          `127.0.0.1_${DEAD_PORT}`,
          'docker.io',
          'ghcr.io',
          'example.com',
          'localhost',
          'localhost_7439',
          '10.0.0.1_5000',
          '169.254.169.254',
          'EXAMPLE.COM',
          'a_b_c',
        ),
        fc.array(segment, { minLength: 0, maxLength: 4 }),
      )
      .map(([r, s]) => [r, ...s].join('/')),
  },
  { weight: 2, arbitrary: fc.array(segment, { minLength: 1, maxLength: 6 }).map((s) => s.join('/')) },
);
const randomDigest = fc
  .tuple(fc.constantFrom('sha256', 'sha512', 'SHA256', 'md5', ''), fc.stringMatching(/^[0-9a-fA-F]{0,130}$/))
  .map(([alg, hex]) => `${alg}:${hex}`);
const reference = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('v1', 'latest', 'v2', 'V1', '-x', '.') },
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: randomDigest },
  { weight: 2, arbitrary: segment },
);
const kind = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('manifests', 'blobs') },
  { weight: 1, arbitrary: fc.constantFrom('tags/list', 'referrers', 'blobs/uploads', 'blobs/uploads/x') },
);

const v2Path = fc.tuple(repoName, kind, reference, fc.nat(3)).map(([name, k, ref, pick]) => {
  // The image's own digests and tag often, so a good share of the requests reach the origin.
  const known = [image.digest, ...blobs.keys(), 'v1'];
  const r = ref === '' ? (known[pick % known.length] as string) : ref;
  return `/v2/${name}/${k}/${r}`;
});
const fixedPath = fc.constantFrom(
  '/',
  '/v2',
  '/v2/',
  '/v2//',
  '//v2/',
  '/healthz',
  '/readyz',
  '/metrics',
  '/v2/_catalog',
  '/v2/../healthz',
  '/v2/%2e%2e/healthz',
  '/v2/./',
  '/v2/%',
  '/%ff',
  '/v2/?',
);
const longPath = fc
  .tuple(fc.constantFrom('a/', `${ENC}/`, '%2e%2e/', 'x'), fc.integer({ min: 100, max: 20_000 }), kind)
  .map(([piece, n, k]) => `/v2/${piece.repeat(Math.ceil(n / piece.length))}/${k}/v1`);

const queryValue = fc.oneof(
  fc.constantFrom(
    REG,
    encodeURIComponent(REG),
    `127.0.0.1:${DEAD_PORT}`,
    'docker.io',
    'localhost:7439',
    'EXAMPLE.com',
    '',
    '%',
    '%zz',
    '[::1]:5000',
  ),
  percentEncoded,
);
const query = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  {
    weight: 3,
    arbitrary: fc
      .array(fc.tuple(fc.constantFrom('ns', 'ns', 'n', 'last', 'digest', 'x', ''), queryValue), {
        minLength: 1,
        maxLength: 3,
      })
      .map((kv) => `?${kv.map(([k, v]) => `${k}=${v}`).join('&')}`),
  },
  { weight: 1, arbitrary: fc.constantFrom('?', '??', '?&&', '?ns', '?=') },
);

const rangeHeader = fc.oneof(
  fc.constantFrom(
    'bytes=0-',
    'bytes=0-0',
    'bytes=0-9',
    'bytes=-5',
    'bytes=5-1',
    'bytes=abc',
    'items=0-5',
    'bytes=0-1,3-4',
    'bytes=999999999-',
    'bytes=-0',
    'bytes=',
    '',
  ),
  fc.tuple(fc.nat(400), fc.option(fc.nat(400))).map(([a, b]) => `bytes=${a}-${b ?? ''}`),
  fc.tuple(fc.nat(60_000), fc.option(fc.nat(60_000))).map(([a, b]) => `bytes=${a}-${b ?? ''}`),
  fc.nat(60_000).map((n) => `bytes=-${n}`),
  printable,
);
const acceptHeader = fc.oneof(
  fc.constantFrom(...MANIFEST_TYPES, '*/*', '', 'application/json', 'text/html;q=0.9, */*;q=0'),
  fc.subarray(MANIFEST_TYPES, { minLength: 1 }).map((a) => a.join(', ')),
  printable,
);
const authorizationHeader = fc.oneof(
  fc.constantFrom('Basic', 'Basic ====', 'Bearer', 'Bearer ', 'Negotiate x', ''),
  printable.map((s) => `Basic ${Buffer.from(s).toString('base64')}`),
  printable.map((s) => `Bearer ${s}`),
  printable,
);
const headers = fc
  .record(
    {
      range: rangeHeader,
      accept: acceptHeader,
      authorization: authorizationHeader,
      'content-type': printable,
      'if-none-match': printable,
      extra: fc.tuple(fc.stringMatching(/^x-[a-z0-9-]{1,20}$/), printable),
    },
    { requiredKeys: [] },
  )
  .map(({ extra, ...h }) => {
    const out: Record<string, string> = { ...(h as Record<string, string>) };
    if (extra) out[extra[0]] = extra[1];
    return out;
  });

const fuzzRequest: fc.Arbitrary<FuzzRequest> = fc
  .record({
    method: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('GET', 'HEAD') },
      { weight: 1, arbitrary: fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE') },
    ),
    path: fc.oneof(
      { weight: 8, arbitrary: v2Path },
      { weight: 2, arbitrary: fixedPath },
      { weight: 1, arbitrary: longPath },
    ),
    query,
    headers,
    body: fc.option(fc.uint8Array({ maxLength: 2048 }), { nil: undefined }),
  })
  .map(({ method, path, query, headers, body }) => ({
    method,
    path: `${path}${query}`,
    headers,
    ...(body && ['POST', 'PUT', 'PATCH'].includes(method) ? { body } : {}),
  }));

// ---- what comes back ----

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const header = (a: Answer, name: string): string | undefined => {
  const v = a.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Why the answer is not OCI error JSON nor a valid answer for its route; undefined when it is. */
function problem(req: FuzzRequest, a: Answer): string | undefined {
  const path = req.path.split('?')[0] as string;
  const text = a.body.toString('utf8');
  if (a.status >= 400) {
    if (a.status >= 600) return `status ${a.status}`;
    if (!(header(a, 'content-type') ?? '').startsWith('application/json')) return 'an error that is not JSON';
    if (req.method === 'HEAD') return a.body.length === 0 ? undefined : 'a HEAD answer with a body';
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return `an error body that is not JSON: ${text.slice(0, 200)}`;
    }
    if (path === '/readyz' && a.status === 503) return undefined;
    const errs = (parsed as { errors?: unknown }).errors;
    if (!Array.isArray(errs) || errs.length === 0) return `no "errors" array: ${text.slice(0, 200)}`;
    for (const e of errs as { code?: unknown; message?: unknown }[]) {
      if (typeof e.code !== 'string' || !/^[A-Z_]+$/.test(e.code)) return `an error without a code: ${text}`;
      if (typeof e.message !== 'string') return `an error without a message: ${text}`;
    }
    return undefined;
  }
  if (a.status !== 200 && a.status !== 206) return `status ${a.status}`;
  const head = req.method === 'HEAD';
  if (head && a.body.length > 0) return 'a HEAD answer with a body';
  if (path === '/healthz') return text === '{"status":"ok"}' ? undefined : `healthz said ${text}`;
  if (path === '/readyz')
    return /^\{"status":"ready","caching":(true|false)[,}]/.test(text) ? undefined : `readyz said ${text}`;
  if (path === '/v2' || path === '/v2/') return head || text === '{}' ? undefined : `the base said ${text}`;
  const digest = header(a, 'docker-content-digest');
  const type = header(a, 'content-type') ?? '';
  if (digest === undefined) return `a ${a.status} with no Docker-Content-Digest`;
  const length = Number(header(a, 'content-length'));
  if (MANIFEST_TYPES.includes(type)) {
    if (a.status !== 200) return `a manifest answered ${a.status}`;
    if (digest !== image.digest) return `an unknown manifest ${digest}`;
    return head || sha(a.body) === digest ? undefined : 'manifest bytes that do not match their digest';
  }
  if (type !== 'application/octet-stream') return `an unknown content type ${type}`;
  const blob = blobs.get(digest);
  if (!blob) return `an unknown blob ${digest}`;
  if (a.status === 200) {
    if (length !== blob.length) return `a whole blob with Content-Length ${length}`;
    return head || a.body.equals(blob) ? undefined : 'a whole blob with the wrong bytes';
  }
  if (req.headers.range === undefined) return 'a 206 to a request without Range';
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(a, 'content-range') ?? '');
  if (!m) return `a 206 with Content-Range ${header(a, 'content-range')}`;
  const [first, last, size] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (size !== blob.length || first > last || last >= size) return `a 206 for ${m[0]} of ${blob.length} bytes`;
  if (length !== last - first + 1) return `a 206 for ${m[0]} with Content-Length ${length}`;
  return head || a.body.equals(blob.subarray(first, last + 1)) ? undefined : `a 206 for ${m[0]} with the wrong bytes`;
}

async function send(pool: Pool, req: FuzzRequest): Promise<Answer | 'refused by the client'> {
  let res;
  try {
    res = await pool.request({
      method: req.method,
      path: req.path,
      headers: req.headers,
      ...(req.body ? { body: req.body } : {}),
    });
  } catch (err) {
    // undici refuses to send some generated paths and header values: nothing reached the proxy.
    if (err instanceof undiciErrors.InvalidArgumentError) return 'refused by the client';
    throw err;
  }
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

t.test('a path the router cannot decode gets OCI error JSON and its log line', async (t) => {
  const res = await request(`${proxy.url}/v2/%ff/manifests/v1`);
  const body = (await res.body.json()) as { errors?: { code: string; message: string }[] };
  t.equal(res.statusCode, 400);
  t.match(res.headers['content-type'], /^application\/json/);
  t.match(body, { errors: [{ code: 'UNSUPPORTED', message: /not a valid url component/ }] });
  const line = await until(() => proxy.logs().find((l) => l.msg === 'request' && l.status === 400));
  t.match(line, { method: 'GET', path: '/v2/%ff/manifests/v1', code: 'UNSUPPORTED' }, 'one request log line');
});

t.test('thousands of generated requests: every answer is OCI error JSON or valid for its route', async (t) => {
  // A first pass over each route, so the baseline includes what the proxy opens once and keeps.
  const warm = new Pool(proxy.url, { connections: 4 });
  for (const path of [
    `/v2/${ENC}/${REPO}/manifests/v1`,
    `/v2/${REPO}/manifests/${image.digest}?ns=${REG}`,
    ...[...blobs.keys()].map((d) => `/v2/${ENC}/${REPO}/blobs/${d}`),
    `/v2/127.0.0.1_${DEAD_PORT}/${REPO}/manifests/v1`,
    '/v2/docker.io/library/x/manifests/v1',
  ]) {
    const a = await send(warm, { method: 'GET', path, headers: { range: 'bytes=1-' } });
    t.not(a, 'refused by the client', path);
  }
  await warm.close();
  const before = await quiesce();
  t.comment(`baseline: ${before.fds} fds, heap ${before.heap >> 20} MiB, rss ${before.rss >> 20} MiB`);

  const pool = new Pool(proxy.url, { connections: 4 });
  const statuses = new Map<number, number>();
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(fuzzRequest, async (req) => {
      const a = await send(pool, req);
      if (a === 'refused by the client') {
        refused++;
        return;
      }
      statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
      const why = problem(req, a);
      if (why !== undefined) throw new Error(`${req.method} ${req.path.slice(0, 300)} -> ${a.status}: ${why}`);
    }),
    runs(REQUESTS),
  );
  await pool.close();
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  t.ok(refused < REQUESTS / 10, `${refused} generated requests the client would not send`);
  // The fuzz reached the pull path, not only the error paths.
  t.ok((statuses.get(200) ?? 0) > 0, 'some answers are 200');
  t.ok((statuses.get(206) ?? 0) > 0, 'some answers are 206');
  t.ok((statuses.get(404) ?? 0) > 0, 'some answers are 404');

  t.same(unexpected, [], 'no unhandled rejection');
  const errors = proxy.logs().filter((l) => l.msg === 'unexpected error');
  t.same(
    errors.map((l) => l.err),
    [],
    'no unexpected error in the log',
  );
  const alive = await request(`${proxy.url}/healthz`);
  t.equal(alive.statusCode, 200, 'the proxy still answers');
  await alive.body.dump();

  // Sockets close asynchronously: wait until the descriptors are back, or fail with the count.
  let after = await quiesce();
  const until = Date.now() + 15_000;
  while (after.fds > before.fds + FD_MARGIN && Date.now() < until) {
    await sleep(200);
    after = await quiesce();
  }
  t.comment(`after: ${after.fds} fds, heap ${after.heap >> 20} MiB, rss ${after.rss >> 20} MiB`);
  t.ok(after.fds <= before.fds + FD_MARGIN, `open descriptors back to the baseline: ${before.fds} -> ${after.fds}`);
  t.ok(after.heap <= before.heap + HEAP_MARGIN, `heap back to the baseline: ${before.heap} -> ${after.heap}`);
  t.ok(after.rss <= before.rss + RSS_MARGIN, `RSS back to the baseline: ${before.rss} -> ${after.rss}`);
});
