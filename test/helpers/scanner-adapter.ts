/**
 * A scanner adapter for the tests that speaks the Harbor Pluggable Scanner API v1.1 (metadata,
 * scan request, report polled through 302s) and really pulls the artifact it is asked about from
 * the registry URL in the request, with the Authorization it was given (a Basic one is exchanged
 * at the registry's token realm, as real adapters do): the manifest and every blob, each checked
 * against its digest. A pull that fails makes the scan fail (report 500). Its findings come from a
 * table the test sets (digest -> vulnerabilities); faults make it hang, answer 500, or send a
 * malformed, oversized or wrong-digest report.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { request } from 'undici';

export interface AdapterFinding {
  readonly id: string;
  readonly severity: 'Unknown' | 'Negligible' | 'Low' | 'Medium' | 'High' | 'Critical';
  readonly package?: string;
}

export type AdapterFault = 'none' | 'hang' | '500' | 'malformed' | 'oversized' | 'wrong-digest';

interface Job {
  readonly digest: string;
  readonly repository: string;
  polls: number;
  result?: { ok: true } | { ok: false; error: string };
}

export interface PullRecord {
  readonly registryUrl: string;
  readonly repository: string;
  readonly digest: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly blobs: number;
}

const REPORT_V11 = 'application/vnd.security.vulnerability.report; version=1.1';
const REPORT_V10 = 'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0';
const SCAN_REQUEST = 'application/vnd.scanner.adapter.scan.request+json';
const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

export class ScannerAdapter {
  /** digest -> findings; a digest not here is clean. */
  readonly findings = new Map<string, AdapterFinding[]>();
  fault: AdapterFault = 'none';
  /** 302s answered to each report before it is ready. */
  pendingPolls = 1;
  version = '1.0.0';
  readonly pulls: PullRecord[] = [];
  /** Every request received, method and path. */
  readonly requests: string[] = [];
  private readonly jobs = new Map<string, Job>();
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  url = '';

  async start(port: number): Promise<string> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    this.server = server;
    this.url = `http://127.0.0.1:${port}`;
    return this.url;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '';
    this.requests.push(`${req.method ?? ''} ${path}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (this.fault === 'hang') return; // never answered: close() destroys the socket
    if (this.fault === '500') {
      error(res, 500, 'scanner is broken');
      return;
    }
    if (req.method === 'GET' && path === '/api/v1/metadata') {
      json(res, 200, 'application/vnd.scanner.adapter.metadata+json; version=1.0', {
        scanner: { name: 'TestScanner', vendor: 'pullthrough tests', version: this.version },
        capabilities: [{ consumes_mime_types: MANIFEST_TYPES, produces_mime_types: [REPORT_V10, REPORT_V11] }],
        properties: { 'harbor.scanner-adapter/scanner-type': 'os-package-vulnerability' },
      });
      return;
    }
    if (req.method === 'POST' && path === '/api/v1/scan') {
      this.accept(req, Buffer.concat(chunks), res);
      return;
    }
    const m = /^\/api\/v1\/scan\/([^/]+)\/report$/.exec(path);
    if (req.method === 'GET' && m) {
      this.report(decodeURIComponent(m[1] as string), req, res);
      return;
    }
    error(res, 404, 'not found');
  }

  private accept(req: IncomingMessage, body: Buffer, res: ServerResponse): void {
    if (!(req.headers['content-type'] ?? '').startsWith(SCAN_REQUEST)) return error(res, 400, 'wrong content type');
    let r: { registry?: { url?: unknown; authorization?: unknown }; artifact?: Record<string, unknown> };
    try {
      r = JSON.parse(body.toString('utf8')) as typeof r;
    } catch {
      return error(res, 400, 'not JSON');
    }
    const url = r.registry?.url;
    const auth = r.registry?.authorization;
    const a = r.artifact ?? {};
    if (typeof url !== 'string' || typeof a.repository !== 'string' || typeof a.digest !== 'string')
      return error(res, 422, 'registry.url, artifact.repository and artifact.digest are required');
    if (typeof a.mime_type !== 'string' || !MANIFEST_TYPES.includes(a.mime_type))
      return error(res, 422, `unsupported mime_type ${String(a.mime_type)}`);
    const id = randomUUID();
    const job: Job = { digest: a.digest, repository: a.repository, polls: 0 };
    this.jobs.set(id, job);
    void this.pull(url, typeof auth === 'string' ? auth : undefined, a.repository, a.digest, a.mime_type).then(
      (blobs) => {
        job.result = { ok: true };
        this.pulls.push({ registryUrl: url, repository: job.repository, digest: job.digest, ok: true, blobs });
      },
      (err: unknown) => {
        const msg = (err as Error).message;
        job.result = { ok: false, error: msg };
        this.pulls.push({
          registryUrl: url,
          repository: job.repository,
          digest: job.digest,
          ok: false,
          error: msg,
          blobs: 0,
        });
      },
    );
    json(res, 202, 'application/vnd.scanner.adapter.scan.response+json; version=1.0', { id });
  }

  private report(id: string, req: IncomingMessage, res: ServerResponse): void {
    const job = this.jobs.get(id);
    if (!job) return error(res, 404, 'unknown scan request');
    const accept = req.headers.accept ?? '';
    const type = accept.includes(REPORT_V11) ? REPORT_V11 : accept.includes(REPORT_V10) ? REPORT_V10 : undefined;
    if (!type) return error(res, 400, `unsupported report type ${accept}`);
    if (!job.result || job.polls < this.pendingPolls) {
      job.polls++;
      res.writeHead(302, { 'refresh-after': '0' }).end();
      return;
    }
    if (!job.result.ok) return error(res, 500, `scan failed: ${job.result.error}`);
    if (this.fault === 'malformed') {
      res.writeHead(200, { 'content-type': type }).end('{"artifact": {"digest": ');
      return;
    }
    if (this.fault === 'oversized') {
      const big = Array.from({ length: 20_000 }, (_, i) => ({
        id: `CVE-2099-${i}`,
        severity: 'Low',
        package: 'x'.repeat(60),
      }));
      return json(res, 200, type, {
        artifact: { digest: job.digest },
        scanner: { name: 'TestScanner' },
        vulnerabilities: big,
      });
    }
    const digest = this.fault === 'wrong-digest' ? `sha256:${'0'.repeat(64)}` : job.digest;
    const vulns = this.findings.get(job.digest) ?? [];
    json(res, 200, type, {
      generated_at: new Date().toISOString(),
      artifact: { repository: job.repository, digest, mime_type: MANIFEST_TYPES[0] },
      scanner: { name: 'TestScanner', vendor: 'pullthrough tests', version: this.version },
      severity: vulns.length === 0 ? 'Unknown' : 'High',
      vulnerabilities: vulns.map((v) => ({ ...v, version: '1.0', fix_version: '1.1', links: [] })),
    });
  }

  /** Pulls the manifest and every blob it names, each checked against its digest. */
  private async pull(
    url: string,
    auth: string | undefined,
    repo: string,
    digest: string,
    type: string,
  ): Promise<number> {
    const base = url.replace(/\/+$/, '');
    let authorization = auth;
    const get = async (path: string, accept?: string): Promise<Buffer> => {
      for (let attempt = 0; attempt < 2; attempt++) {
        const res = await request(`${base}${path}`, {
          headers: { ...(accept ? { accept } : {}), ...(authorization ? { authorization } : {}) },
        });
        const body = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode === 200) return body;
        const challenge = String(res.headers['www-authenticate'] ?? '');
        if (
          res.statusCode === 401 &&
          attempt === 0 &&
          challenge.startsWith('Bearer') &&
          authorization?.startsWith('Basic ')
        ) {
          authorization = await exchange(challenge, repo, authorization);
          continue;
        }
        throw new Error(`GET ${path}: ${res.statusCode}`);
      }
      throw new Error(`GET ${path}: unauthorized`);
    };
    const manifest = await get(`/v2/${repo}/manifests/${digest}`, type);
    if (sha256(manifest) !== digest) throw new Error('manifest digest mismatch');
    const m = JSON.parse(manifest.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    const blobs = [m.config.digest, ...m.layers.map((l) => l.digest)];
    for (const b of blobs) {
      if (sha256(await get(`/v2/${repo}/blobs/${b}`)) !== b) throw new Error(`blob ${b} digest mismatch`);
    }
    return blobs.length;
  }
}

async function exchange(challenge: string, repo: string, basic: string): Promise<string> {
  const params: Record<string, string> = Object.fromEntries(
    [...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? '', m[2] ?? '']),
  );
  const url = new URL(String(params.realm));
  if (params.service) url.searchParams.set('service', params.service);
  url.searchParams.set('scope', `repository:${repo}:pull`);
  const res = await request(url, { headers: { authorization: basic } });
  const j = (await res.body.json()) as { token?: string };
  if (res.statusCode !== 200 || !j.token) throw new Error(`token realm answered ${res.statusCode}`);
  return `Bearer ${j.token}`;
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function json(res: ServerResponse, status: number, type: string, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) }).end(text);
}

function error(res: ServerResponse, status: number, message: string): void {
  json(res, status, 'application/vnd.scanner.adapter.error+json; version=1.0', { error: { message } });
}
