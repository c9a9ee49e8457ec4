/**
 * The webhook's HTTPS server. The only file here that knows fastify. Returned not listening, so
 * tests can `inject` and `runWebhook` decides where to listen.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Server as HttpsServer } from 'node:https';
import type { WebhookMetrics } from '../observability/metrics.js';
import { reviewText } from './admission-review.js';
import type { RewritePolicy } from './policy.js';
import type { AdmissionGate } from './vulnerability-gate.js';

export interface TlsMaterial {
  cert: string;
  key: string;
}

export interface WebhookServerOptions {
  policy: RewritePolicy;
  /** Without it the server speaks plain HTTP (only for tests and for a TLS-terminating sidecar). */
  tls?: TlsMaterial;
  /** The API server sends at most ~3 MiB; anything larger is not a real AdmissionReview. */
  maxBodyBytes?: number;
  logger?: FastifyBaseLogger | boolean;
  /** Readiness: false until certificates are in place. */
  ready?: () => boolean;
  metrics?: WebhookMetrics;
  /** The vulnerability gate (--scan-policy warn|enforce); none: every pod is admitted. */
  gate?: AdmissionGate;
}

export interface WebhookServer {
  app: FastifyInstance;
  /** Swaps the serving certificate of a running server (rotation); new connections get it. */
  updateTls(tls: TlsMaterial): void;
}

export const MUTATE_PATH = '/mutate';
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

export function createWebhookServer(opts: WebhookServerOptions): WebhookServer {
  const bodyLimit = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const logger = opts.logger ?? false;
  const app = Fastify({
    // fastify 5 takes a ready logger as loggerInstance and only booleans/options as logger.
    ...(typeof logger === 'object' ? { loggerInstance: logger } : { logger }),
    bodyLimit,
    ...(opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' as const } } : {}),
  }) as unknown as FastifyInstance;

  // The API server always sends application/json, but a review must not fail on a missing or odd
  // content type: read every body as text and judge it ourselves.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_req, body, done) => done(null, body));

  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? 400 : 500;
    const message = err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `body is larger than ${bodyLimit} bytes` : err.message;
    if (status === 500) req.log.error({ err }, 'webhook request failed');
    if (req.routeOptions.url === MUTATE_PATH)
      opts.metrics?.admissions.inc({ outcome: status === 500 ? 'error' : 'invalid' });
    void reply.code(status).send({ error: message });
  });

  app.post(MUTATE_PATH, async (req, reply) => {
    const started = process.hrtime.bigint();
    const text = typeof req.body === 'string' ? req.body : '';
    const outcome = reviewText(text, opts.policy, opts.gate);
    const metrics = opts.metrics;
    if (outcome.status === 400) {
      req.log.warn({ reason: outcome.error }, 'bad AdmissionReview');
      metrics?.admissions.inc({ outcome: 'invalid' });
      return reply.code(400).send({ error: outcome.error });
    }
    const m = outcome.mutation;
    if (metrics) {
      const rewritten = m ? Object.keys(m.rewritten).length : 0;
      metrics.admissions.inc({ outcome: rewritten > 0 ? 'rewritten' : 'unchanged' });
      metrics.rewrittenImages.inc(rewritten);
      for (const reason of Object.values(m?.skipKinds ?? {})) metrics.skippedImages.inc({ reason });
      metrics.duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
    const response = outcome.body.response;
    if (!response.allowed) req.log.warn({ uid: response.uid, reason: response.status?.message }, 'pod denied');
    if (m && (Object.keys(m.rewritten).length > 0 || Object.keys(m.skipped).length > 0)) {
      req.log.info(
        { uid: outcome.body.response.uid, rewritten: m.rewritten, skipped: m.skipped },
        'pod images reviewed',
      );
    }
    return reply.code(200).send(outcome.body);
  });

  app.get('/healthz', () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => {
    const ready = opts.ready ? opts.ready() : true;
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  return {
    app,
    updateTls(tls) {
      const server = app.server as unknown as Partial<HttpsServer>;
      if (typeof server.setSecureContext !== 'function') throw new Error('server was created without TLS');
      server.setSecureContext({ cert: tls.cert, key: tls.key });
    },
  };
}
