/**
 * The vulnerability gate end to end, against real registries, the test scanner adapter (which
 * pulls from the cache registry with the credential it is given) and the fake API server: images pulled
 * through the node proxy land in the token-auth cache registry; the controller's scan queue scans
 * each cached digest and writes the verdict on the CachedImage status and as an Event; the verdict
 * feed keeps them in memory for the webhook and the proxy. Covered: a clean image admitted and
 * served; a vulnerable one denied at admission and refused by the proxy in enforce, admitted with
 * a warning (and served) in warn; a CVE exception that expires; the scanner down with fail-open
 * and fail-closed; a re-scan that turns a verdict. No credential in a status, an Event or a log.
 * Ports 15510 (origin), 15511 (cache registry, Basic auth: the token path of the pull credential is
 * test/scan/client.test.ts's), 15513 (adapter), 15514 (nothing listens: the scanner down).
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { createCachedImageApi } from '../../src/kube/cached-images.js';
import { createKubeClient, EventRecorder, silentLogger } from '../../src/kube/index.js';
import { ScanQueue } from '../../src/kube/scan-queue.js';
import { VerdictFeed } from '../../src/kube/verdict-feed.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { ScannerClient } from '../../src/scan/client.js';
import { DigestScanner } from '../../src/scan/digest-scanner.js';
import { VulnerabilityGate } from '../../src/scan/gate.js';
import type { GatePolicy } from '../../src/scan/policy.js';
import { registryPullCredentials } from '../../src/scan/pull-credential.js';
import { VerdictCache } from '../../src/scan/verdict-cache.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { createWebhookServer } from '../../src/webhook/server.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable, type Image } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';
import { ScannerAdapter } from '../helpers/scanner-adapter.js';
import { eventually } from '../helpers/wait.js';
import { admissionReview, containers, pod } from '../webhook/helpers.js';

const ORIGIN = 15510;
const CACHE = 15511;
const ADAPTER = 15513;
const NOBODY = 15514;
const USER = 'pullthrough';
const PASSWORD = 'Cache-Registry-S3cret';
const origin = `127.0.0.1:${ORIGIN}`;
const cacheUrl = `http://127.0.0.1:${CACHE}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';
const HOUR = 3_600_000;

t.test('vulnerability gate', { skip }, async (t) => {
  const lab = new Lab('scan-gate');
  t.teardown(() => lab.cleanup());
  await Promise.all([
    lab.registry('origin', ORIGIN),
    lab.registry('cache', CACHE, ['--htpasswd', `${USER}:${PASSWORD}`]),
  ]);
  const [clean, vuln, other] = await Promise.all([
    lab.image(origin, 'team/app', 'clean', ['--layers', '1']),
    lab.image(origin, 'team/app', 'vuln', ['--layers', '1']),
    lab.image(origin, 'team/other', 'v1', ['--layers', '1']),
  ]);
  const adapter = new ScannerAdapter();
  await adapter.start(ADAPTER);
  t.teardown(() => adapter.close());
  adapter.pendingPolls = 1;
  adapter.findings.set(vuln.digest, [
    { id: 'CVE-2024-1111', severity: 'Critical', package: 'openssl' },
    { id: 'CVE-2024-2222', severity: 'Medium' },
  ]);

  // The gate the proxy and the webhook ask; the test switches its policy and clock.
  const verdicts = new VerdictCache();
  let policy: GatePolicy = {
    mode: 'enforce',
    threshold: 'High',
    unscanned: 'allow-and-scan',
    scannerDown: 'fail-open',
    cveExceptions: [],
    imageExceptions: [],
  };
  let now = Date.now();
  const gate = {
    admit: (image: string) => new VulnerabilityGate(policy, verdicts, () => now).admit(image),
    serve: (r: string, repo: string, d: string) => new VulnerabilityGate(policy, verdicts, () => now).serve(r, repo, d),
  };

  const dataDir = lab.tempDir('pt-scan-gate');
  const creds = join(dataDir, 'registry-credentials.json');
  writeFileSync(
    creds,
    JSON.stringify({
      auths: { [`127.0.0.1:${CACHE}`]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } },
    }),
  );
  const proxy = await startProxy(
    [
      '--cache-registry',
      cacheUrl,
      '--data-dir',
      dataDir,
      '--insecure-registries',
      origin,
      '--allowed-registries',
      origin,
      '--registry-credentials',
      creds,
    ],
    { extraDeps: () => ({ gate }) },
  );
  t.teardown(() => proxy.stop());

  const manifest = (image: Image, tag: string) =>
    request(`${proxy.url}/v2/${origin.replace(':', '_')}/team/${image === other ? 'other' : 'app'}/manifests/${tag}`, {
      headers: { accept: MANIFEST_ACCEPT },
    }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));

  // Pull each through the proxy (manifest and blobs) so it is in the cache registry.
  for (const [img, tag] of [
    [clean, 'clean'],
    [vuln, 'vuln'],
    [other, 'v1'],
  ] as const) {
    const m = await manifest(img, tag);
    t.equal(m.status, 200, `${tag} pulled through the proxy`);
    const doc = JSON.parse(m.body) as { config: { digest: string }; layers: { digest: string }[] };
    for (const b of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
      const repo = img === other ? 'other' : 'app';
      const r = await request(`${proxy.url}/v2/${origin.replace(':', '_')}/team/${repo}/blobs/${b}`);
      await r.body.arrayBuffer();
    }
  }
  await proxy.settle();

  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const images = createCachedImageApi(client);
  const events = new EventRecorder({
    client,
    namespace: 'pullthrough',
    component: 'pullthrough-controller',
    log: silentLogger,
    repeatAfterMs: 0,
  });
  const put = (name: string, image: string, digest: string) =>
    api.put('CachedImage', {
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name },
      spec: { image },
      status: { phase: 'Cached', digest },
    });
  const object = (name: string) => api.object('CachedImage', undefined, name) as unknown as CachedImage;
  const eventList = () =>
    api.store
      .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
      .map((e) => e as unknown as { reason: string; type: string; involvedObject: { name: string }; message: string });
  put('clean', `${origin}/team/app:clean`, clean.digest);
  put('vuln', `${origin}/team/app:vuln`, vuln.digest);

  const scanner = (url: string) =>
    new DigestScanner({
      client: new ScannerClient({ url, requestTimeoutMs: 3_000, scanTimeoutMs: 30_000 }),
      credentials: registryPullCredentials({ registryUrl: cacheUrl, username: USER, password: PASSWORD }),
      registryUrl: cacheUrl,
    });
  const queue = (url: string, rescanIntervalMs = 24 * HOUR) =>
    new ScanQueue({
      api: images,
      scan: (repo, digest, signal) => scanner(url).scan(repo, digest, signal),
      rescanIntervalMs,
      policy,
      events,
      log: silentLogger,
      concurrency: 4,
    });
  const scanAll = async (q: ScanQueue) => {
    q.schedule(await images.list(), new AbortController().signal);
    await q.idle();
  };
  const feed = new VerdictFeed({ client, cache: verdicts, log: silentLogger });
  t.teardown(() => feed.stop());

  const rewrite = createRewritePolicy({ proxyHost: proxy.host, ownNamespace: 'pullthrough' });
  const webhook = createWebhookServer({ policy: rewrite, gate });
  t.teardown(() => webhook.app.close());
  const admit = async (image: string) => {
    const res = await webhook.app.inject({
      method: 'POST',
      url: '/mutate',
      payload: admissionReview(pod({ containers: containers(image) })),
    });
    return res.json<{ response: { allowed: boolean; status?: { message: string }; warnings?: string[] } }>().response;
  };

  await t.test('each cached digest is scanned once: verdict on the status and an Event', async (t) => {
    await scanAll(queue(adapter.url));
    const c = object('clean').status?.scan;
    t.equal(c?.result, 'Scanned', JSON.stringify(c?.error));
    t.equal(c?.digest, clean.digest);
    t.same(c?.counts, { unknown: 0, negligible: 0, low: 0, medium: 0, high: 0, critical: 0 });
    t.same(c?.scanner, { name: 'TestScanner', version: '1.0.0' });
    const v = object('vuln').status?.scan;
    t.equal(v?.counts?.critical, 1);
    t.equal(v?.counts?.medium, 1);
    t.same(
      v?.findings?.map((f) => f.id),
      ['CVE-2024-1111', 'CVE-2024-2222'],
    );
    t.ok(
      adapter.pulls.some((p) => p.digest === vuln.digest && p.ok && p.registryUrl === cacheUrl),
      'the adapter pulled from the cache registry',
    );
    const ev = await eventually(() => {
      const l = eventList();
      return l.some((e) => e.reason === 'ScanBlocked') && l.some((e) => e.reason === 'Scanned') ? l : undefined;
    }, 'the scan Events');
    t.match(ev.find((e) => e.involvedObject.name === 'vuln' && e.reason === 'ScanBlocked')?.message, /1 Critical/);
    t.equal(ev.find((e) => e.reason === 'ScanBlocked')?.type, 'Warning');
    const pulls = adapter.pulls.length;
    await scanAll(queue(adapter.url));
    t.equal(adapter.pulls.length, pulls, 'a digest with a verdict is not scanned again before the rescan interval');
    feed.start();
    await feed.whenSynced();
  });

  await t.test('enforce: the clean image is admitted and served', async (t) => {
    t.equal((await admit(`${origin}/team/app:clean`)).allowed, true);
    t.equal((await manifest(clean, 'clean')).status, 200);
  });

  await t.test('enforce: the vulnerable image is denied at admission and refused by the proxy', async (t) => {
    const r = await admit(`${origin}/team/app:vuln`);
    t.equal(r.allowed, false);
    t.match(r.status?.message, `${origin}/team/app:vuln`);
    t.match(r.status?.message, '1 Critical');
    t.match(r.status?.message, 'policy enforce, threshold High');
    const m = await manifest(vuln, 'vuln');
    t.equal(m.status, 403);
    t.match(JSON.parse(m.body), { errors: [{ code: 'DENIED', message: /vulnerability gate.*1 Critical/ }] });
    t.ok(
      proxy.logs().some((l) => l.msg === 'manifest refused by the vulnerability gate' && l.digest === vuln.digest),
      'a log line',
    );
  });

  await t.test('warn: the vulnerable image is admitted with a warning and served', async (t) => {
    policy = { ...policy, mode: 'warn' };
    t.teardown(() => void (policy = { ...policy, mode: 'enforce' }));
    const r = await admit(`${origin}/team/app:vuln`);
    t.equal(r.allowed, true);
    t.match(r.warnings?.join('\n'), /1 Critical.*policy warn/);
    t.equal((await manifest(vuln, 'vuln')).status, 200);
  });

  await t.test('a CVE exception admits the image until it expires', async (t) => {
    policy = { ...policy, cveExceptions: [{ id: 'CVE-2024-1111', until: Date.now() + HOUR }] };
    t.teardown(() => {
      policy = { ...policy, cveExceptions: [] };
      now = Date.now();
    });
    t.equal((await admit(`${origin}/team/app:vuln`)).allowed, true);
    t.equal((await manifest(vuln, 'vuln')).status, 200);
    now = Date.now() + 2 * HOUR;
    t.equal((await admit(`${origin}/team/app:vuln`)).allowed, false, 'expired: denied again');
    t.equal((await manifest(vuln, 'vuln')).status, 403);
  });

  await t.test(
    'scanner down: the scan records the error; fail-open admits, fail-closed denies, each says so',
    async (t) => {
      put('other', `${origin}/team/other:v1`, other.digest);
      await scanAll(queue(`http://127.0.0.1:${NOBODY}`));
      const s = object('other').status?.scan;
      t.equal(s?.result, 'Error');
      t.equal(s?.error?.code, 'SCANNER_UNREACHABLE');
      await eventually(
        () => eventList().find((e) => e.reason === 'ScanFailed' && e.involvedObject.name === 'other'),
        'ScanFailed',
      );
      await eventually(() => verdicts.byDigest(other.digest)?.state === 'failed', 'the error through the watch');
      const open = await admit(`${origin}/team/other:v1`);
      t.equal(open.allowed, true);
      t.match(open.warnings?.join('\n'), /failing open/);
      t.equal((await manifest(other, 'v1')).status, 200);
      t.ok(
        proxy
          .logs()
          .some((l) => l.msg === 'manifest served without a verdict' && String(l.reason).includes('failing open')),
        'the proxy logs that it failed open',
      );
      policy = { ...policy, scannerDown: 'fail-closed' };
      t.teardown(() => void (policy = { ...policy, scannerDown: 'fail-open' }));
      const closed = await admit(`${origin}/team/other:v1`);
      t.equal(closed.allowed, false);
      t.match(closed.status?.message, /failing closed/);
      t.equal((await manifest(other, 'v1')).status, 403);
    },
  );

  await t.test('a re-scan turns a verdict', async (t) => {
    adapter.findings.set(clean.digest, [{ id: 'CVE-2026-9999', severity: 'High' }]);
    await scanAll(queue(adapter.url, 0));
    t.equal(object('clean').status?.scan?.counts?.high, 1);
    const ev = await eventually(
      () => eventList().find((e) => e.involvedObject.name === 'clean' && e.reason === 'ScanBlocked'),
      'ScanBlocked on clean',
    );
    t.match(ev.message, /was no vulnerabilities/);
    await eventually(() => {
      const r = verdicts.byDigest(clean.digest);
      return r?.state === 'scanned' && r.verdict.counts.High === 1;
    }, 'the new verdict through the watch');
    t.equal((await admit(`${origin}/team/app:clean`)).allowed, false);
    t.equal((await manifest(clean, 'clean')).status, 403);
  });

  await t.test('no credential in a status, an Event or a log line', async (t) => {
    const all = JSON.stringify({ o: ['clean', 'vuln', 'other'].map(object), e: eventList() }) + proxy.logText();
    t.notOk(all.includes(PASSWORD));
    t.notOk(all.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')));
  });
});
