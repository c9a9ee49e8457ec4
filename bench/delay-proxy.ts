/**
 * A small HTTP proxy that adds a fixed latency to every response (the round trip to a remote
 * registry): it waits DELAY_MS, then forwards the request unchanged to UPSTREAM and streams the
 * answer back. Put in front of logproxy-up.sh --rate for the "slow link" regime.
 *
 *   node --import tsx bench/delay-proxy.ts PORT UPSTREAM_URL DELAY_MS
 */
import http from 'node:http';

const [portArg, upstreamArg, delayArg] = process.argv.slice(2);
if (!portArg || !upstreamArg) {
  process.stderr.write('usage: delay-proxy.ts PORT UPSTREAM_URL DELAY_MS\n');
  process.exit(2);
}
const port = Number(portArg);
const upstream = new URL(upstreamArg);
const delayMs = Number(delayArg ?? 30);
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });

const server = http.createServer((req, res) => {
  setTimeout(() => {
    const up = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent },
      (ures) => {
        res.writeHead(ures.statusCode ?? 502, ures.headers);
        ures.pipe(res);
        res.once('close', () => ures.destroy());
      },
    );
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(up);
  }, delayMs);
});
server.keepAliveTimeout = 30_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
for (const s of ['SIGTERM', 'SIGINT'] as const) process.on(s, () => process.exit(0));
