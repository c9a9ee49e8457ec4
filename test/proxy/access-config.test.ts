/**
 * The access flags: node name from --node-name, PULLTHROUGH_NODE_NAME or NODE_NAME (an empty flag turns it
 * off), durations, policy, and which clients may be served private images.
 */
import t from 'tap';
import { readProxyConfig } from '../../src/config/proxy.js';

t.test('node name', async (t) => {
  t.equal(readProxyConfig([], { NODE_NAME: 'n1' }).config.nodeName, 'n1', 'NODE_NAME from the downward API');
  t.equal(
    readProxyConfig(['--node-name='], { NODE_NAME: 'n1' }).config.nodeName,
    '',
    'an empty flag turns it off (cluster proxy)',
  );
  t.equal(
    readProxyConfig([], { NODE_NAME: 'n1', PULLTHROUGH_NODE_NAME: '' }).config.nodeName,
    '',
    'so does an empty PULLTHROUGH_NODE_NAME',
  );
  t.equal(readProxyConfig(['--node-name', 'n2'], { NODE_NAME: 'n1' }).config.nodeName, 'n2');
  t.equal(readProxyConfig([], {}).config.nodeName, '', 'standalone');
});

t.test('auth-ttl, origin-down policy and grace', async (t) => {
  const d = readProxyConfig([], {}).config;
  t.equal(d.authTtlMs, 300_000);
  t.equal(d.privateWhenOriginDown, 'serve-confirmed');
  t.equal(d.originDownGraceMs, 3_600_000);
  const c = readProxyConfig(
    ['--auth-ttl', '30s', '--private-when-origin-down', 'refuse', '--origin-down-grace', '10m'],
    {},
  ).config;
  t.same([c.authTtlMs, c.privateWhenOriginDown, c.originDownGraceMs], [30_000, 'refuse', 600_000]);
  t.throws(() => readProxyConfig(['--private-when-origin-down', 'serve'], {}), /expected serve-confirmed or refuse/);
  t.throws(() => readProxyConfig([], { PULLTHROUGH_AUTH_TTL: 'soon' }), /--auth-ttl: not a duration/);
});

t.test('private-images mode', async (t) => {
  t.equal(readProxyConfig([], {}).config.privateImages, 'open', 'standalone: every cached copy is served');
  t.equal(readProxyConfig([], { NODE_NAME: 'n1' }).config.privateImages, 'pods', 'a node proxy checks its pods');
  t.equal(
    readProxyConfig(['--node-name=', '--private-images=node-credentials'], { NODE_NAME: 'n1' }).config.privateImages,
    'node-credentials',
    'the cluster proxy',
  );
  t.throws(() => readProxyConfig(['--private-images', 'pods'], {}), /needs --node-name/);
  t.throws(() => readProxyConfig(['--private-images', 'everyone'], {}), /expected pods, node-credentials or open/);
});

t.test('private-to: node for a node proxy, any otherwise', async (t) => {
  t.equal(readProxyConfig([], { NODE_NAME: 'n1' }).config.privateTo, 'node', 'a node proxy: the node itself only');
  t.equal(
    readProxyConfig(['--node-name=', '--private-images=node-credentials'], { NODE_NAME: 'n1' }).config.privateTo,
    'any',
    'the cluster proxy serves nodes over the pod network',
  );
  t.equal(readProxyConfig([], {}).config.privateTo, 'any', 'standalone');
  t.equal(readProxyConfig(['--private-to', 'any'], { NODE_NAME: 'n1' }).config.privateTo, 'any');
  t.equal(readProxyConfig(['--private-images=node-credentials', '--private-to=node'], {}).config.privateTo, 'node');
  t.throws(() => readProxyConfig(['--private-to', 'node'], {}), /needs --private-images=pods or node-credentials/);
  t.throws(() => readProxyConfig(['--private-to', 'pods'], { NODE_NAME: 'n1' }), /expected node or any/);
});
