/**
 * The egress guard: link-local and metadata addresses never, loopback only when named. The
 * connector is exercised through an undici Agent against a local server on 127.0.0.1:15056.
 */
import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { createEgressPolicy, guardedConnector } from '../../src/oci/egress.js';
import { parseHostList } from '../../src/oci/host-pattern.js';

const PORT = 15056;

function refused(
  t: Test,
  policy: ReturnType<typeof createEgressPolicy>,
  host: string,
  address: string,
  why: RegExp,
): void {
  t.throws(() => policy.check(host, address), why, `${host} -> ${address} refused`);
}

t.test('policy: link-local and metadata addresses are never reached', async (t) => {
  const p = createEgressPolicy(['169.254.169.254', 'metadata.google.internal', 'fe80::1', '[fe80::1]']);
  for (const a of [
    '169.254.169.254',
    '169.254.0.1',
    '169.254.255.255',
    '::ffff:169.254.169.254',
    '::ffff:a9fe:a9fe',
    '0:0:0:0:0:ffff:a9fe:a9fe',
    'fe80::1',
    'FE80::abcd',
    'febf:ffff::1',
    'fd00:ec2::254',
    '0.0.0.0',
    '0.1.2.3',
    '::',
  ]) {
    refused(t, p, 'metadata.google.internal', a, /link-local or metadata/);
    refused(t, p, a, a, /link-local or metadata/);
  }
});

t.test('policy: loopback only for hosts named explicitly', async (t) => {
  const p = createEgressPolicy(['localhost', 'MyLoop', '127.0.0.1', '[::1]']);
  for (const a of ['127.0.0.1', '127.255.255.254', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:0:0:1']) {
    refused(t, p, 'evil.example.com', a, /loopback/);
    t.doesNotThrow(() => p.check('localhost', a), `localhost -> ${a}`);
    t.doesNotThrow(() => p.check('LOCALHOST', a), `LOCALHOST -> ${a}`);
    t.doesNotThrow(() => p.check('myloop', a), `myloop -> ${a}`);
  }
  t.doesNotThrow(() => p.check('127.0.0.1', '127.0.0.1'));
  t.doesNotThrow(() => p.check('::1', '::1'), 'a bracketed [::1] in the list allows ::1');
  t.doesNotThrow(() => p.check('[::1]', '::1'));
  refused(t, p, '127.0.0.2', '127.0.0.2', /loopback/);
  // Ordinary addresses pass.
  for (const a of ['10.0.0.5', '192.168.1.1', '8.8.8.8', '2001:db8::1', 'fec0::1'])
    t.doesNotThrow(() => p.check('x', a), a);
  // What main.ts passes: the literal hosts of --allowed-registries and --insecure-registries.
  const hosts = [...parseHostList(['*', '*.example.com', 'quay.io', '127.0.0.1:15059', '[::1]:5000']).literalHosts()];
  const q = createEgressPolicy(hosts);
  t.doesNotThrow(() => q.check('127.0.0.1', '127.0.0.1'));
  t.doesNotThrow(() => q.check('::1', '::1'), 'an explicitly allowed [::1]:5000 may be reached');
  refused(t, q, 'localhost', '127.0.0.1', /loopback/);
  refused(t, createEgressPolicy(parseHostList(['*']).literalHosts()), '127.0.0.1', '127.0.0.1', /loopback/);
});

t.test('guardedConnector with an undici Agent', async (t) => {
  let connections = 0;
  const server: Server = createServer((_req, res) => res.end('hello'));
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  t.equal((server.address() as AddressInfo).port, PORT);
  const agents: Agent[] = [];
  const agent = (named: string[]) => {
    const a = new Agent({ connect: guardedConnector(createEgressPolicy(named), { timeoutMs: 2000 }) });
    agents.push(a);
    return a;
  };
  t.teardown(async () => {
    await Promise.all(agents.map((a) => a.close()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const get = async (url: string, dispatcher: Agent): Promise<string> => {
    const res = await request(url, { dispatcher });
    return res.body.text();
  };

  // Not named: refused before any connection is made.
  await t.rejects(
    get(`http://127.0.0.1:${PORT}/`, agent([])),
    /loopback 127\.0\.0\.1 for 127\.0\.0\.1 are not allowed/,
  );
  await t.rejects(
    get(`http://localhost:${PORT}/`, agent(['127.0.0.1'])),
    /loopback .* for localhost are not allowed/,
    'the DNS answer is checked',
  );
  await t.rejects(
    get(`http://127.0.0.1:${PORT}/`, agent(['localhost'])),
    /not allowed/,
    'naming localhost does not allow 127.0.0.1',
  );
  await t.rejects(get(`http://[::ffff:127.0.0.1]:${PORT}/`, agent([])), /loopback/);
  await t.rejects(get(`http://0x7f000001:${PORT}/`, agent([])), /loopback/, 'hex spelling of 127.0.0.1');
  t.equal(connections, 0, 'the server saw no connection');

  // Named: allowed.
  t.equal(await get(`http://127.0.0.1:${PORT}/`, agent(['127.0.0.1'])), 'hello');
  t.equal(await get(`http://localhost:${PORT}/`, agent(['localhost'])), 'hello', 'a named host resolving to loopback');
  t.equal(connections, 2);

  // Link-local and metadata: refused at once, whatever is named (the point: no connect attempt, no hang).
  const started = Date.now();
  await t.rejects(
    get('http://169.254.169.254/latest/meta-data/', agent(['169.254.169.254'])),
    /link-local or metadata/,
  );
  await t.rejects(get('http://[fe80::1]/', agent(['fe80::1'])), /link-local or metadata/);
  await t.rejects(get('http://[::ffff:169.254.169.254]/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://0xa9fea9fe/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://2852039166/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://0.0.0.0:15056/', agent(['0.0.0.0'])), /link-local or metadata/);
  t.ok(Date.now() - started < 5000, 'refusals are immediate');
});
