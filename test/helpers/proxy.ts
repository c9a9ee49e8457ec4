/**
 * A node proxy in the test process, wired exactly as `pullthrough proxy` wires it, listening on
 * 127.0.0.1 with its log lines kept for assertions.
 */
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildProxy, type BuiltProxy, type ProxyDeps } from '../../src/proxy/build-proxy.js';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig, type ProxyConfig } from '../../src/config/proxy.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';

export interface TestProxy extends BuiltProxy {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly logs: () => Record<string, unknown>[];
  readonly logText: () => string;
  /** Waits until no manifest is being persisted and no blob fill is running. */
  settle(timeoutMs?: number): Promise<void>;
  /** Closes the proxy; `graceMs` as its close() takes it (default 500). */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  readonly port?: number;
  /** More dependencies (the pods of a node), built with the proxy's own config and log. */
  readonly extraDeps?: (config: ProxyConfig, log: Logger) => Partial<ProxyDeps>;
  /** Runs after the proxy stopped. */
  readonly onStop?: () => Promise<void>;
}

export async function startProxy(flags: string[], opts: StartOptions = {}): Promise<TestProxy> {
  const { config } = readProxyConfig(['--metrics-listen', '', '--log-level', 'debug', ...flags], {});
  // As runProxy does before building: the spool directory for blob fills.
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (c: Buffer) => (text += c.toString('utf8')));
  const log = createLogger(config.logLevel, sink);
  const proxy = buildProxy(config, {
    log,
    ...opts.extraDeps?.(config, log),
  });
  await proxy.app.listen({ host: '127.0.0.1', port: opts.port ?? 0 });
  const address = proxy.app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  let stopped = false;
  return {
    ...proxy,
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    logText: () => text,
    logs: () =>
      text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    async settle(timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      while (proxy.pull.persister.pending > 0 || proxy.fills.size > 0) {
        if (Date.now() > until) throw new Error('proxy did not settle');
        await sleep(50);
      }
    },
    async stop(graceMs = 500) {
      if (stopped) return;
      stopped = true;
      await proxy.close(graceMs);
      await opts.onStop?.();
    },
  };
}
