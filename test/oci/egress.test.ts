/**
 * The egress guard: link-local and metadata addresses never, loopback only for the host:port
 * pairs named, private ranges where the rules allow them. The
 * connector is exercised through an undici Agent against a local server on 127.0.0.1:15056.
 */
import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import {
  createEgressPolicy,
  egressTarget,
  guardedConnector,
  InternalTargets,
  type EgressPolicy,
  type EgressTarget,
} from '../../src/oci/egress.js';
import { parseHostList } from '../../src/oci/host-pattern.js';

const PORT = 15056;

/** `host[:port]` over http (port 80 unless given), as a URL would name it. */
function at(hostPort: string, protocol = 'http:'): EgressTarget {
  const u = new URL(`${protocol}//${hostPort}/`);
  return egressTarget(u);
}

function refused(t: Test, policy: EgressPolicy, target: string, address: string, why: RegExp): void {
  t.throws(() => policy.check(at(target), address), why, `${target} -> ${address} refused`);
}

function allowed(t: Test, policy: EgressPolicy, target: string, address: string, protocol = 'http:'): void {
  t.doesNotThrow(() => policy.check(at(target, protocol), address), `${protocol}//${target} -> ${address} allowed`);
}

t.test('policy: link-local and metadata addresses are never reached', async (t) => {
  for (const privateRanges of ['any', 'named'] as const) {
    const p = createEgressPolicy({
      named: ['169.254.169.254', 'metadata.google.internal:*', 'fe80::1', '[fe80::1]'],
      privateRanges,
    });
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
      t.throws(() => p.check({ host: a.toLowerCase(), port: 80, defaultPort: 80 }, a), /link-local or metadata/);
    }
  }
});

t.test('policy: loopback only for host:port pairs named explicitly', async (t) => {
  const p = createEgressPolicy({
    named: ['localhost:5000', 'MyLoop', '127.0.0.1:15100', '[::1]:5000', 'any.local:*'],
    privateRanges: 'any',
  });
  for (const a of ['127.0.0.1', '127.255.255.254', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:0:0:1']) {
    refused(t, p, 'evil.example.com', a, /loopback/);
    allowed(t, p, 'localhost:5000', a);
    allowed(t, p, 'LOCALHOST:5000', a);
    refused(t, p, 'localhost:5001', a, /loopback .* for localhost:5001 .* host:port/);
    refused(t, p, 'localhost', a, /loopback/);
    // A host named without a port stands for its scheme's port.
    allowed(t, p, 'myloop', a);
    allowed(t, p, 'myloop', a, 'https:');
    allowed(t, p, 'myloop:80', a);
    refused(t, p, 'myloop:8080', a, /loopback/);
    refused(t, p, 'myloop:443', a, /loopback/);
    // `host:*` is every port of that host, said so.
    allowed(t, p, 'any.local:1', a);
    allowed(t, p, 'any.local:65535', a);
  }
  allowed(t, p, '127.0.0.1:15100', '127.0.0.1');
  refused(t, p, '127.0.0.1:15101', '127.0.0.1', /loopback 127\.0\.0\.1 for 127\.0\.0\.1:15101/);
  refused(t, p, '127.0.0.1', '127.0.0.1', /loopback/);
  allowed(t, p, '[::1]:5000', '::1');
  allowed(t, p, '[0:0:0:0:0:0:0:1]:5000', '::1');
  refused(t, p, '[::1]:5001', '::1', /loopback/);
  refused(t, p, '127.0.0.2:15100', '127.0.0.2', /loopback/);
  // Ordinary and private-range addresses pass for origins.
  for (const a of [
    '10.0.0.5',
    '192.168.1.1',
    '172.16.0.1',
    '100.64.0.1',
    'fd12::1',
    '8.8.8.8',
    '2001:db8::1',
    'fec0::1',
  ])
    allowed(t, p, 'x', a);
  // What build-proxy passes: the entries of --allowed-registries and --insecure-registries.
  const hosts = [...parseHostList(['*', '*.example.com', 'quay.io', '127.0.0.1:15059', '[::1]:5000']).patterns];
  const q = createEgressPolicy({ named: hosts, privateRanges: 'any' });
  allowed(t, q, '127.0.0.1:15059', '127.0.0.1');
  refused(t, q, '127.0.0.1:15058', '127.0.0.1', /loopback/);
  allowed(t, q, '[::1]:5000', '::1');
  refused(t, q, 'localhost:15059', '127.0.0.1', /loopback/);
  refused(t, q, 'a.example.com', '127.0.0.1', /loopback/);
  refused(t, createEgressPolicy({ named: ['*'], privateRanges: 'any' }), '127.0.0.1', '127.0.0.1', /loopback/);
});

t.test('policy: private ranges only for named targets where the rules say so', async (t) => {
  const p = createEgressPolicy({ named: ['registry.corp:5000', '10.1.2.3', '*.svc'], privateRanges: 'named' });
  for (const a of [
    '10.0.0.1',
    '10.255.255.255',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.0.1',
    '100.64.0.1',
    '100.127.255.255',
    'fc00::1',
    'fd12:3456::1',
    '::ffff:10.0.0.1',
  ]) {
    refused(t, p, 'cdn.example.com', a, /private-range .* for cdn\.example\.com:80/);
    refused(t, p, 'gitlab.svc', a, /private-range/);
    allowed(t, p, 'registry.corp:5000', a);
    refused(t, p, 'registry.corp:5001', a, /private-range/);
  }
  allowed(t, p, '10.1.2.3', '10.1.2.3', 'https:');
  refused(t, p, '10.1.2.3:8443', '10.1.2.3', /private-range/);
  for (const a of ['8.8.8.8', '172.32.0.1', '172.15.255.255', '192.169.0.1', '100.128.0.1', '11.0.0.1', '2001:db8::1'])
    allowed(t, p, 'cdn.example.com', a);
  refused(t, p, 'cdn.example.com', '127.0.0.1', /loopback/);
});

t.test('InternalTargets remembers which targets answered from internal addresses', async (t) => {
  const seen = new InternalTargets(2);
  seen.note(at('reg.svc:5000'), ['10.0.0.1']);
  seen.note(at('hub.example'), ['8.8.8.8', '2001:db8::1']);
  t.ok(seen.has(at('reg.svc:5000')), 'private-range');
  t.notOk(seen.has(at('reg.svc:5001')), 'another port is another target');
  t.notOk(seen.has(at('hub.example')), 'public');
  t.notOk(seen.has(at('never.seen')), 'unknown');
  seen.note(at('127.0.0.1:15100'), ['127.0.0.1']);
  t.ok(seen.has(at('127.0.0.1:15100')), 'loopback');
  t.notOk(seen.has(at('reg.svc:5000')), 'the oldest is forgotten past the bound');
  seen.note(at('hub.example'), ['8.8.8.8', '192.168.1.1']);
  t.ok(seen.has(at('hub.example')), 'any internal address makes it internal');
});

t.test('guardedConnector with an undici Agent', async (t) => {
  let connections = 0;
  const server: Server = createServer((_req, res) => res.end('hello'));
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  t.equal((server.address() as AddressInfo).port, PORT);
  const agents: Agent[] = [];
  const connected: string[] = [];
  const agent = (named: string[]) => {
    const a = new Agent({
      connect: guardedConnector(createEgressPolicy({ named, privateRanges: 'any' }), {
        timeoutMs: 2000,
        onConnect: (target, addresses) => connected.push(`${target.host}:${target.port}=${addresses.join(',')}`),
      }),
    });
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
    /loopback 127\.0\.0\.1 for 127\.0\.0\.1:15056 are not allowed/,
  );
  await t.rejects(
    get(`http://localhost:${PORT}/`, agent([`127.0.0.1:${PORT}`])),
    /loopback .* for localhost:15056 are not allowed/,
    'the DNS answer is checked',
  );
  await t.rejects(
    get(`http://127.0.0.1:${PORT}/`, agent([`localhost:${PORT}`])),
    /not allowed/,
    'naming localhost does not allow 127.0.0.1',
  );
  await t.rejects(
    get(`http://127.0.0.1:${PORT}/`, agent(['127.0.0.1', '127.0.0.1:5000'])),
    /loopback 127\.0\.0\.1 for 127\.0\.0\.1:15056/,
    'naming 127.0.0.1 and 127.0.0.1:5000 does not open another port',
  );
  await t.rejects(get(`http://[::ffff:127.0.0.1]:${PORT}/`, agent([])), /loopback/);
  await t.rejects(get(`http://0x7f000001:${PORT}/`, agent([])), /loopback/, 'hex spelling of 127.0.0.1');
  t.equal(connections, 0, 'the server saw no connection');
  t.same(connected, [], 'and no connection was reported');

  // Named with its port: allowed.
  t.equal(await get(`http://127.0.0.1:${PORT}/`, agent([`127.0.0.1:${PORT}`])), 'hello');
  const byName = agent([`localhost:${PORT}`]);
  t.equal(await get(`http://localhost:${PORT}/`, byName), 'hello', 'a named host resolving to loopback');
  t.equal(connections, 2);
  t.ok(connected.includes(`127.0.0.1:${PORT}=127.0.0.1`), `the literal address is reported: ${connected.join(' ')}`);
  t.ok(
    connected.some((c) => c.startsWith(`localhost:${PORT}=`) && /127\.0\.0\.1|::1/.test(c)),
    'the DNS answer is reported',
  );
  // The same agent, the same name, another port: the DNS answer is checked for that port.
  await t.rejects(get(`http://localhost:${PORT + 1}/`, byName), /loopback .* for localhost:15057/);
  await t.rejects(get(`http://127.0.0.1:${PORT + 1}/`, agent([`127.0.0.1:${PORT}`])), /for 127\.0\.0\.1:15057/);
  t.equal(connections, 2, 'no connection to another port');

  // Link-local and metadata: refused at once, whatever is named (the point: no connect attempt, no hang).
  const started = Date.now();
  await t.rejects(
    get('http://169.254.169.254/latest/meta-data/', agent(['169.254.169.254', '169.254.169.254:*'])),
    /link-local or metadata/,
  );
  await t.rejects(get('http://[fe80::1]/', agent(['fe80::1'])), /link-local or metadata/);
  await t.rejects(get('http://[::ffff:169.254.169.254]/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://0xa9fea9fe/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://2852039166/', agent([])), /link-local or metadata/);
  await t.rejects(get('http://0.0.0.0:15056/', agent(['0.0.0.0:15056'])), /link-local or metadata/);
  t.ok(Date.now() - started < 5000, 'refusals are immediate');
});
