/**
 * The latency half of the "slow link" (bench/slow-link.ts): nginx asks this server first about
 * every request; it answers after DELAY_MS with an empty response that sends nginx on to the
 * origin (X-Accel-Redirect), so the round trip to a remote registry costs time, and no byte of a
 * blob passes through Node: a real network link spends none of the node's CPU.
 *
 *   node --import tsx bench/delay-responder.ts PORT DELAY_MS
 */
import http from 'node:http';

const [portArg, delayArg] = process.argv.slice(2);
if (!portArg) {
  process.stderr.write('usage: delay-responder.ts PORT DELAY_MS\n');
  process.exit(2);
}
const port = Number(portArg);
const delayMs = Number(delayArg ?? 30);

const server = http.createServer((req, res) => {
  req.resume();
  setTimeout(() => {
    res.writeHead(200, { 'X-Accel-Redirect': `/__origin${req.url ?? '/'}`, 'Content-Length': '0' });
    res.end();
  }, delayMs);
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening ${port}\n`));
for (const s of ['SIGTERM', 'SIGINT'] as const) process.on(s, () => process.exit(0));
