/**
 * The node proxy's HTTP face: the read side of the distribution API, health endpoints, one log
 * line per request, and the one place where errors become OCI error JSON. Every manifest and blob
 * answer names where it came from (`Pullthrough-Source`): a node proxy asking this one as its
 * cluster tier knows by it that the object is stored here (cluster-tier.ts). Everything about where
 * bytes come from lives in PullService; this file only speaks HTTP.
 */
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { parseApiPath, parseManifestReference } from '../oci/api-path.js';
import { parseDigest } from '../oci/digest.js';
import { acceptedMediaTypes } from '../oci/media-types.js';
import { SpoolError } from '../cache/spool-writer.js';
import { OciError, UpstreamError } from '../oci/errors.js';
import type { HostList } from '../oci/host-pattern.js';
import type { ProxyMetrics } from '../observability/metrics.js';
import { HOP_AUTHORIZATION_HEADER, SOURCE_HEADER } from './cluster-tier.js';
import type { PullService } from './pull-service.js';
import type { Source } from './request-context.js';
import { parseRangeHeader, type RangeRequest } from './range.js';
import { resolveTarget } from './target.js';

export interface ProxyServerDeps {
  readonly pull: PullService;
  readonly allowed: HostList;
  /** The names rewritten references give the proxy (`localhost:7439`). */
  readonly self: HostList;
  /**
   * Rejects when the proxy cannot serve; else whether it caches what it serves (and why not). A
   * node that caches nothing still serves: readiness keeps it in containerd's chain.
   */
  readonly ready: () => Promise<{ caching: boolean; reason?: string }>;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  /**
   * A cluster proxy replica that checks every request's access: it takes the origin credential a
   * node proxy passes for one request (HOP_AUTHORIZATION_HEADER). Elsewhere the header is ignored.
   */
  readonly acceptOriginAuthorization?: boolean;
}

interface Outcome {
  kind: 'manifest' | 'blob' | 'other';
  image?: string;
  source?: Source;
  code?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    outcome: Outcome;
  }
}

const NO_RANGE: RangeRequest = { kind: 'none' };

/** Writes the request's log line when its answer ends, with the bytes the connection sent for it. */
function logWhenClosed(deps: ProxyServerDeps, req: FastifyRequest, reply: FastifyReply): void {
  const started = process.hrtime.bigint();
  // The connection's count before this answer: what it gained by the end is what was sent.
  const socket = req.raw.socket;
  const before = socket.bytesWritten;
  reply.raw.once('close', () => logRequest(deps, req, reply, started, socket.bytesWritten - before));
}
const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' };

export function createProxyServer(deps: ProxyServerDeps) {
  const app = Fastify({
    loggerInstance: deps.log,
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    return503OnClosing: true,
    routerOptions: { maxParamLength: 8192, ignoreDuplicateSlashes: false },
    // Node would answer a request without Host with a bare 400 of its own; the path is all we need.
    // A client that connects and sends nothing is dropped after 15 s (Node's default is 60 s).
    http: { requireHostHeader: false, headersTimeout: 15_000 },
    // Requests Node's parser refuses never reach a route: answer them in the same OCI shape.
    clientErrorHandler: (err, socket) => parserError(deps, err as NodeJS.ErrnoException, socket),
    // A path the router cannot decode (`/%ff`) or an over-long parameter is answered here, before
    // any hook: in the same OCI shape, with its log line.
    frameworkErrors: (err, req: FastifyRequest, reply: FastifyReply) => {
      const oci = toOciError(err);
      req.outcome = { kind: 'other', code: oci.code };
      logWhenClosed(deps, req, reply);
      void reply.code(oci.status).headers(API_VERSION).type('application/json').send(JSON.stringify(oci.toJSON()));
    },
  });
  app.decorateRequest('outcome', null as unknown as Outcome);

  app.addHook('onRequest', async (req, reply) => {
    req.outcome = { kind: 'other' };
    logWhenClosed(deps, req, reply);
  });

  app.setErrorHandler((err: unknown, req, reply) => {
    const oci = toOciError(err);
    req.outcome.code = oci.code;
    if (oci.status === 500) req.log.error({ err }, 'unexpected error');
    if (reply.sent || reply.raw.headersSent) {
      reply.raw.destroy();
      return;
    }
    void reply
      .code(oci.status)
      .headers({ ...API_VERSION, ...oci.headers })
      .type('application/json')
      .send(JSON.stringify(oci.toJSON()));
  });

  app.setNotFoundHandler((req, reply) => {
    const err = new OciError('NAME_UNKNOWN', `no such endpoint ${req.method} ${req.url.split('?')[0]?.slice(0, 200)}`);
    req.outcome.code = err.code;
    void reply.code(404).headers(API_VERSION).type('application/json').send(JSON.stringify(err.toJSON()));
  });

  app.get('/healthz', () => Promise.resolve({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    try {
      const { caching, reason } = await deps.ready();
      return caching ? { status: 'ready', caching } : { status: 'ready', caching, reason };
    } catch (err) {
      return reply.code(503).send({ status: 'not ready', reason: (err as Error).message });
    }
  });

  for (const url of ['/v2', '/v2/*']) {
    app.route({
      method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
      url,
      // Writes are refused before any body is read or parsed.
      // An async hook: fastify sends what it throws as the error.
      // eslint-disable-next-line @typescript-eslint/require-await
      onRequest: async (req) => {
        if (req.method !== 'GET' && req.method !== 'HEAD') throw writeRefusal(req.raw.url ?? '/');
      },
      handler: (req, reply) => distribution(deps, req, reply),
    });
  }
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  return app;
}

async function distribution(deps: ProxyServerDeps, req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const method = req.method as 'GET' | 'HEAD';
  const raw = req.raw.url ?? '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = q < 0 ? undefined : new URLSearchParams(raw.slice(q + 1));
  const api = parseApiPath(path);
  if (api.kind === 'base') {
    return reply.code(200).headers(API_VERSION).type('application/json').send('{}');
  }
  if (api.kind === 'push')
    throw new OciError('UNSUPPORTED', 'pullthrough is a read-only cache: pushes are not supported', { status: 405 });
  if (api.kind === 'unsupported')
    throw new OciError('UNSUPPORTED', `${api.what} is not served by pullthrough`, { status: 404 });
  const nsValues = query?.getAll('ns') ?? [];
  if (nsValues.length > 1) throw new OciError('NAME_INVALID', 'more than one ns query parameter');
  const target = resolveTarget(api.name, nsValues[0], deps.allowed, deps.self);
  const abort = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) abort.abort(new Error('client went away'));
  });
  const hop = deps.acceptOriginAuthorization ? headerValue(req.headers[HOP_AUTHORIZATION_HEADER]) : undefined;
  const ctx = {
    signal: abort.signal,
    log: req.log,
    peer: req.socket.remoteAddress,
    ...(hop ? { originAuthorization: hop } : {}),
  };
  if (api.kind === 'manifest') {
    req.outcome.kind = 'manifest';
    const at = api.reference.includes(':') ? '@' : ':';
    req.outcome.image = `${target.registry}/${target.repository}${at}${api.reference}`;
    const accept = acceptedMediaTypes(headerValue(req.headers.accept));
    const { manifest, source } = await deps.pull.manifest(target, api.reference, ctx, accept);
    req.outcome.source = source;
    return reply
      .code(200)
      .headers({
        ...API_VERSION,
        'content-type': manifest.mediaType,
        'content-length': String(manifest.bytes.byteLength),
        'docker-content-digest': manifest.digest,
        etag: `"${manifest.digest}"`,
        [SOURCE_HEADER]: source,
      })
      .send(method === 'GET' ? manifest.bytes : undefined);
  }
  req.outcome.kind = 'blob';
  req.outcome.image = `${target.registry}/${target.repository}@${api.digest}`;
  // RFC 9110: a server ignores Range on anything but GET; a HEAD describes the whole blob.
  const range = method === 'GET' ? parseRangeHeader(headerValue(req.headers.range)) : NO_RANGE;
  const answer = await deps.pull.blob(target, api.digest, method, range, ctx);
  req.outcome.source = answer.source;
  if (answer.redirect !== undefined) {
    // The cache registry's own answer, passed on: the client follows it as it would the registry's.
    return reply
      .code(307)
      .headers({
        ...API_VERSION,
        location: answer.redirect,
        'docker-content-digest': api.digest,
        [SOURCE_HEADER]: answer.source,
      })
      .send();
  }
  const headers: Record<string, string> = {
    ...API_VERSION,
    'content-type': 'application/octet-stream',
    'docker-content-digest': api.digest,
    'accept-ranges': 'bytes',
    etag: `"${api.digest}"`,
    [SOURCE_HEADER]: answer.source,
  };
  if (answer.range && answer.size !== undefined) {
    headers['content-range'] = `bytes ${answer.range.start}-${answer.range.end}/${answer.size}`;
    headers['content-length'] = String(answer.range.end - answer.range.start + 1);
  } else if (answer.size !== undefined) {
    headers['content-length'] = String(answer.size);
  }
  return reply
    .code(answer.range ? 206 : 200)
    .headers(headers)
    .send(answer.stream);
}

/**
 * The answer to a write. pullthrough is a read-only cache, yet the spec's error table comes
 * first, as for a read: a malformed path is NAME_INVALID, a manifest reference that is neither
 * a tag nor a digest names no manifest (404 MANIFEST_UNKNOWN), a malformed digest is
 * DIGEST_INVALID; only a well-formed write is 405 UNSUPPORTED.
 */
function writeRefusal(url: string): OciError {
  const q = url.indexOf('?');
  const api = parseApiPath(q < 0 ? url : url.slice(0, q));
  if (api.kind === 'manifest') parseManifestReference(api.reference);
  if (api.kind === 'blob') parseDigest(api.digest);
  return new OciError('UNSUPPORTED', 'pullthrough is a read-only cache: pushes and deletes are not supported', {
    status: 405,
  });
}

function parserError(deps: ProxyServerDeps, err: NodeJS.ErrnoException, socket: import('node:net').Socket): void {
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? 431 : 400;
  const oci = new OciError(
    'UNSUPPORTED',
    tooLarge ? 'request headers too large' : `malformed HTTP request (${err.code ?? 'parse error'})`,
    { status },
  );
  deps.log.warn({ status, code: oci.code, parser: err.code, remote: socket.remoteAddress }, 'request');
  deps.metrics.requests.inc({ kind: 'other', source: 'none', status: String(status) });
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(oci.toJSON());
  socket.end(
    `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Docker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n\r\n${body}`,
  );
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function toOciError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  const e = (err ?? {}) as { statusCode?: number; code?: string; message?: string };
  // A blob stream that failed before its first byte: the origin (or the spool) broke, not us.
  if (
    err instanceof UpstreamError ||
    err instanceof SpoolError ||
    e.code?.startsWith('UND_ERR') ||
    e.code === 'ECONNRESET'
  ) {
    return new OciError(
      'UNAVAILABLE',
      `the transfer failed before it started: ${e.message ?? 'upstream error'}`.slice(0, 300),
      { status: 502 },
    );
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new OciError('UNSUPPORTED', `bad request: ${e.message ?? 'malformed'}`.slice(0, 300), {
      status: e.statusCode,
    });
  }
  return new OciError('UNAVAILABLE', 'internal error', { status: 500 });
}

/**
 * The body bytes of an answer that reached the connection: what the socket took (the kernel's
 * and the client's buffers may still lose some of it when the client aborts), less the status
 * line and headers, at most the announced length. A chunked body counts its chunk framing.
 * Counted on the socket, not on the body stream: a listener there would stop the stream reusing
 * its buffers (src/cache/recycling-readable.ts).
 */
function bodyBytesSent(req: FastifyRequest, reply: FastifyReply, socketBytes: number): number {
  if (req.method === 'HEAD') return 0;
  // Node's own copy of the head it wrote (set once the head is sent; no public accessor).
  const head = (reply.raw as unknown as { _header?: string | null })._header;
  const body = socketBytes - (head ? Buffer.byteLength(head, 'latin1') : 0);
  const announced = Number(reply.raw.getHeader('content-length') ?? NaN);
  return Math.max(0, Number.isFinite(announced) ? Math.min(body, announced) : body);
}

function logRequest(
  deps: ProxyServerDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  started: bigint,
  socketBytes: number,
): void {
  // Null until the request's first hook ran (a request the parser refused never gets one).
  const o = (req.outcome as Outcome | null) ?? { kind: 'other' };
  if (o.kind === 'other' && (req.url === '/healthz' || req.url === '/readyz')) return;
  const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
  const complete = reply.raw.writableFinished;
  const status = reply.raw.statusCode;
  const source = o.source ?? 'none';
  deps.metrics.requests.inc({ kind: o.kind, source, status: String(status) });
  deps.metrics.duration.observe({ kind: o.kind, source }, durationMs / 1000);
  const bytes = bodyBytesSent(req, reply, socketBytes);
  if (o.source && bytes > 0) deps.metrics.bytesServed.inc({ source }, bytes);
  const line = {
    method: req.method,
    path: req.url.slice(0, 512),
    image: o.image,
    source: o.source,
    status,
    bytes,
    durationMs: Math.round(durationMs * 10) / 10,
    ...(o.code ? { code: o.code } : {}),
    ...(complete ? {} : { aborted: true }),
  };
  if (status >= 500 || !complete) req.log.warn(line, 'request');
  else req.log.info(line, 'request');
}
