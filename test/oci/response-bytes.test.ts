/**
 * The interceptor that reports bytes received: it sees every body chunk, and what the request's
 * consumer gets is untouched, backpressure included.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { reportResponseBytes } from '../../src/oci/response-bytes.js';

const body = randomBytes(3 * 1024 * 1024 + 17);
const server = createServer((req, res) => {
  if (req.url === '/fail') {
    res.writeHead(200, { 'content-length': String(body.length) });
    res.write(body.subarray(0, 1024 * 1024), () => res.destroy());
    return;
  }
  res.writeHead(200, { 'content-length': String(body.length) }).end(body);
});
const agent = new Agent();
t.before(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
});
t.teardown(async () => {
  await agent.close();
  server.close();
});
const url = (path: string) => {
  const a = server.address();
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}${path}`;
};
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('every body byte is reported, and the body arrives whole', async (t) => {
  let reported = 0;
  const res = await request(url('/'), { dispatcher: agent.compose(reportResponseBytes((n) => (reported += n))) });
  const got = Buffer.from(await res.body.arrayBuffer());
  t.equal(sha(got), sha(body));
  t.equal(reported, body.length);
});

t.test('a consumer that reads slowly is not overrun: the socket pauses', async (t) => {
  let reported = 0;
  const res = await request(url('/'), {
    dispatcher: agent.compose(reportResponseBytes((n) => (reported += n))),
    highWaterMark: 64 * 1024,
  });
  await sleep(200);
  // Without backpressure the whole body would be in memory by now.
  t.ok(reported < body.length, `only ${reported} of ${body.length} bytes were taken while nobody read`);
  const got = Buffer.from(await res.body.arrayBuffer());
  t.equal(sha(got), sha(body), 'and the rest arrives once read');
});

t.test('a response cut short still errors for its consumer', async (t) => {
  let reported = 0;
  const res = await request(url('/fail'), { dispatcher: agent.compose(reportResponseBytes((n) => (reported += n))) });
  await t.rejects(res.body.arrayBuffer());
  t.ok(reported > 0 && reported < body.length, 'the bytes that came were reported');
});
