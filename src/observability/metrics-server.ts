/**
 * The Prometheus listener (--metrics-listen) of every component: GET /metrics on plain HTTP on
 * an address of its own, apart from the distribution API and the webhook's HTTPS.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from './logger.js';
import type { Registry } from 'prom-client';

export function startMetricsServer(registry: Registry, listen: { host: string; port: number }, log: Logger): Server {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end((err as Error).message),
    );
  });
  server.on('error', (err) => log.error({ err: err.message }, 'metrics server failed'));
  server.listen(listen.port, listen.host);
  return server;
}
