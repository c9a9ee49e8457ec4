/** AdmissionReview builders, an RFC 6902 applier and an HTTPS client for the webhook tests. */
import { request } from 'node:https';
import { randomUUID } from 'node:crypto';

type Json = Record<string, unknown>;

export function pod(spec: Json, metadata: Json = {}): Json {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'default', ...metadata }, spec };
}

export function containers(...images: string[]): Json[] {
  return images.map((image, i) => ({ name: `c${i}`, image }));
}

export function admissionReview(
  object: unknown,
  opts: { namespace?: string; operation?: string; subResource?: string; oldObject?: unknown } = {},
): Json {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: randomUUID(),
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      ...(opts.subResource ? { subResource: opts.subResource } : {}),
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      namespace: opts.namespace ?? 'default',
      operation: opts.operation ?? 'CREATE',
      userInfo: { username: 'tester' },
      object,
      oldObject: opts.oldObject ?? null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
    },
  };
}

function unescape(seg: string): string {
  return seg.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Applies a JSONPatch the way the API server does (add, replace, remove, test), on a copy. */
export function applyPatch<T>(doc: T, ops: { op: string; path: string; value?: unknown }[]): T {
  const root = { v: structuredClone(doc) as unknown };
  for (const o of ops) {
    const segs = o.path.split('/').slice(1).map(unescape);
    let parent: unknown = root;
    let key = 'v';
    for (const s of segs) {
      parent = (parent as Record<string, unknown>)[key];
      key = s;
      if (parent === undefined || parent === null) throw new Error(`path ${o.path} does not exist`);
    }
    const p = parent as Record<string, unknown> & unknown[];
    if (o.op === 'test') {
      if (JSON.stringify(p[key as never]) !== JSON.stringify(o.value)) throw new Error(`test failed at ${o.path}`);
    } else if (o.op === 'remove') {
      if (!(key in p)) throw new Error(`remove: ${o.path} missing`);
      if (Array.isArray(p)) p.splice(Number(key), 1);
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- a JSON patch remove names its key
      else delete p[key];
    } else if (o.op === 'replace') {
      if (!(key in p)) throw new Error(`replace: ${o.path} missing`);
      p[key as never] = structuredClone(o.value as never);
    } else if (o.op === 'add') {
      if (Array.isArray(p)) p.splice(key === '-' ? p.length : Number(key), 0, structuredClone(o.value));
      else (p as Record<string, unknown>)[key] = structuredClone(o.value);
    } else throw new Error(`unsupported op ${o.op}`);
  }
  return root.v as T;
}

export function decodePatch(response: { patch?: string }): { op: string; path: string; value?: unknown }[] {
  if (!response.patch) return [];
  return JSON.parse(Buffer.from(response.patch, 'base64').toString()) as {
    op: string;
    path: string;
    value?: unknown;
  }[];
}

/** POSTs over real HTTPS, trusting only `ca`. */
export function httpsPost(
  url: string,
  body: string | Buffer,
  ca: string,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
