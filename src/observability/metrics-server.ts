/**
 * The Prometheus listener (--metrics-listen): GET /metrics on an address of its own, apart from
 * the distribution API.
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from './logger.js';
import type { ProxyMetrics } from './metrics.js';

export function startMetricsServer(metrics: ProxyMetrics, listen: { host: string; port: number }, log: Logger): Server {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end((err as Error).message),
    );
  });
  server.on('error', (err) => log.error({ err: err.message }, 'metrics server failed'));
  server.listen(listen.port, listen.host);
  return server;
}
