/**
 * The Pluggable Scanner API client against the test adapter, which really pulls the artifact from
 * a lab registry (token auth, no anonymous pull) with the credential it is handed: a clean and a
 * vulnerable image, a wrong credential and a wrong registry URL (the scan fails), and a scanner
 * that hangs, answers 500, or sends a malformed, oversized or wrong-digest report. No credential
 * appears in an error message. The cache registry access (through RegistryClient): a new token
 * for each hand-over, a shared client, and the codes of a refused or unreachable registry.
 * Ports 15500 (registry), 15501 (its token server), 15502 (adapter), 15503 (nothing listens).
 */
import t from 'tap';
import { getGlobalDispatcher } from 'undici';
import { digestOf } from '../../src/oci/digest.js';
import { Lab, labAvailable } from '../helpers/lab.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { ScannerAdapter } from '../helpers/scanner-adapter.js';
import { ScannerClient } from '../../src/scan/client.js';
import { ScanError } from '../../src/scan/errors.js';
import { registryPullCredentials } from '../../src/scan/pull-credential.js';

const REGISTRY = 15500;
const TOKEN = 15501;
const ADAPTER = 15502;
const NOBODY = 15503;
const USER = 'scanbot';
const PASSWORD = 'Scan-S3cret-pw';
const REPO = 'docker.io/team/app';

if (!labAvailable()) {
  t.plan(0, 'the oci-lab is not installed');
} else {
  const lab = new Lab('scan-client');
  const adapter = new ScannerAdapter();
  const registryUrl = `http://127.0.0.1:${REGISTRY}`;
  let clean = { digest: '', mediaType: '' };
  let vulnerable = { digest: '', mediaType: '' };

  t.teardown(async () => {
    await adapter.close();
    await lab.cleanup();
  });

  t.before(async () => {
    await lab.registry('cache', REGISTRY, [
      '--token',
      '--htpasswd',
      `${USER}:${PASSWORD}`,
      '--no-anon',
      '--token-port',
      String(TOKEN),
    ]);
    clean = await lab.image(`127.0.0.1:${REGISTRY}`, REPO, 'clean', [
      '--layers',
      '2',
      '--creds',
      `${USER}:${PASSWORD}`,
    ]);
    vulnerable = await lab.image(`127.0.0.1:${REGISTRY}`, REPO, 'vuln', [
      '--layers',
      '1',
      '--docker',
      '--creds',
      `${USER}:${PASSWORD}`,
    ]);
    await adapter.start(ADAPTER);
  });

  const issuer = registryPullCredentials({ registryUrl, username: USER, password: PASSWORD });
  const client = (over: Partial<ConstructorParameters<typeof ScannerClient>[0]> = {}) =>
    new ScannerClient({
      url: adapter.url,
      requestTimeoutMs: 2_000,
      scanTimeoutMs: 20_000,
      maxBodyBytes: 256 * 1024,
      ...over,
    });
  const artifact = async (img: { digest: string; mediaType: string }, auth?: string) => ({
    registryUrl,
    registryAuthorization: auth ?? (await issuer.issue(REPO)),
    repository: REPO,
    digest: img.digest,
    mediaType: img.mediaType,
  });
  const code = async (p: Promise<unknown>): Promise<string> => {
    try {
      await p;
      return 'resolved';
    } catch (err) {
      return err instanceof ScanError ? err.code : `not a ScanError: ${String(err)}`;
    }
  };

  t.test('the pull credential is a short-lived Bearer token, not the account', async (t) => {
    const auth = await issuer.issue(REPO);
    t.match(auth, /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    t.notMatch(auth ?? '', PASSWORD);
  });

  t.test('each hand-over is a new token; a shared RegistryClient reads manifests with the scan account', async (t) => {
    const first = await issuer.issue(REPO);
    t.not(await issuer.issue(REPO), first, 'not the cached token: the scanner gets its whole lifetime');
    const shared = testRegistryClient(registryUrl, {
      dispatcher: getGlobalDispatcher(),
      name: 'cache',
      timeoutMs: 5_000,
    });
    const access = registryPullCredentials({ registryUrl, username: USER, password: PASSWORD, registry: shared });
    const bytes = await access.read(REPO, `manifests/${clean.digest}`);
    t.equal(bytes && digestOf(bytes), clean.digest);
    t.equal(await access.read(REPO, `manifests/sha256:${'0'.repeat(64)}`), undefined, 'absent: undefined');
    t.match(await access.issue(REPO), /^Bearer /);
  });

  t.test(
    'a refused login is PULL_CREDENTIAL_FAILED; an unreachable registry too, then CACHE_REGISTRY_UNREACHABLE',
    async (t) => {
      const wrong = registryPullCredentials({ registryUrl, username: USER, password: 'not-the-password' });
      t.equal(await code(wrong.issue(REPO)), 'PULL_CREDENTIAL_FAILED');
      const away = registryPullCredentials({
        registryUrl: `http://127.0.0.1:${NOBODY}`,
        username: USER,
        password: PASSWORD,
      });
      t.equal(await code(away.issue(REPO)), 'PULL_CREDENTIAL_FAILED');
      t.equal(await code(away.read(REPO, `manifests/${clean.digest}`)), 'CACHE_REGISTRY_UNREACHABLE');
    },
  );

  t.test('clean image: metadata, scan, 302s, report with no findings; the adapter pulled every blob', async (t) => {
    adapter.fault = 'none';
    adapter.pendingPolls = 2;
    const r = await client().scan(await artifact(clean));
    t.equal(r.report.digest, clean.digest);
    t.same(r.report.vulnerabilities, []);
    t.equal(r.metadata.scanner.name, 'TestScanner');
    t.equal(r.metadata.scanner.version, '1.0.0');
    const pull = adapter.pulls.find((p) => p.digest === clean.digest);
    t.ok(pull?.ok, 'the adapter pulled the artifact from the cache registry');
    t.equal(pull?.blobs, 3, 'config and both layers');
    t.ok(adapter.requests.filter((r) => r.endsWith('/report')).length >= 3, 'the report was polled past two 302s');
  });

  t.test('vulnerable image (Docker media type): the findings of the table', async (t) => {
    adapter.pendingPolls = 0;
    adapter.findings.set(vulnerable.digest, [
      { id: 'CVE-2024-0001', severity: 'Critical', package: 'openssl' },
      { id: 'CVE-2024-0002', severity: 'Low' },
    ]);
    const r = await client().scan(await artifact(vulnerable));
    t.same(
      r.report.vulnerabilities.map((v) => [v.id, v.severity]),
      [
        ['CVE-2024-0001', 'Critical'],
        ['CVE-2024-0002', 'Low'],
      ],
    );
  });

  t.test('a wrong credential fails the scan (the adapter could not pull), and is not in the message', async (t) => {
    const wrong = `Basic ${Buffer.from(`${USER}:not-the-password`).toString('base64')}`;
    try {
      await client().scan(await artifact(clean, wrong));
      t.fail('the scan succeeded');
    } catch (err) {
      t.equal((err as ScanError).code, 'SCANNER_FAILED');
      t.notMatch((err as Error).message, wrong.slice(6));
    }
    t.equal(
      await code(client().scan({ ...(await artifact(clean)), registryAuthorization: undefined })),
      'SCANNER_FAILED',
      'no credential: anonymous pull refused',
    );
  });

  t.test('a wrong registry URL fails the scan', async (t) => {
    t.equal(
      await code(client().scan({ ...(await artifact(clean)), registryUrl: `http://127.0.0.1:${NOBODY}` })),
      'SCANNER_FAILED',
    );
  });

  t.test('a scanner that hangs: SCANNER_TIMEOUT within the request deadline', async (t) => {
    adapter.fault = 'hang';
    t.teardown(() => void (adapter.fault = 'none'));
    t.equal(await code(client({ requestTimeoutMs: 300 }).scan(await artifact(clean))), 'SCANNER_TIMEOUT');
  });

  t.test('a scanner that answers 500: SCANNER_FAILED with its message', async (t) => {
    adapter.fault = '500';
    t.teardown(() => void (adapter.fault = 'none'));
    await t.rejects(client().scan(await artifact(clean)), { code: 'SCANNER_FAILED', message: /scanner is broken/ });
  });

  t.test('a malformed report: REPORT_MALFORMED', async (t) => {
    adapter.fault = 'malformed';
    t.teardown(() => void (adapter.fault = 'none'));
    t.equal(await code(client().scan(await artifact(clean))), 'REPORT_MALFORMED');
  });

  t.test('an oversized report: REPORT_TOO_LARGE', async (t) => {
    adapter.fault = 'oversized';
    t.teardown(() => void (adapter.fault = 'none'));
    t.equal(await code(client().scan(await artifact(clean))), 'REPORT_TOO_LARGE');
  });

  t.test('a report for another digest: REPORT_WRONG_DIGEST', async (t) => {
    adapter.fault = 'wrong-digest';
    t.teardown(() => void (adapter.fault = 'none'));
    t.equal(await code(client().scan(await artifact(vulnerable))), 'REPORT_WRONG_DIGEST');
  });

  t.test('nothing listening: SCANNER_UNREACHABLE', async (t) => {
    t.equal(
      await code(new ScannerClient({ url: `http://127.0.0.1:${NOBODY}` }).scan(await artifact(clean))),
      'SCANNER_UNREACHABLE',
    );
  });

  t.test('an artifact type the scanner does not consume: SCANNER_UNSUPPORTED', async (t) => {
    const a = { ...(await artifact(clean)), mediaType: 'application/vnd.oci.image.index.v1+json' };
    t.equal(await code(client().scan(a)), 'SCANNER_UNSUPPORTED');
  });
}
