import t from 'tap';
import { Agent } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { RegistryClient } from '../../src/oci/registry-client.js';
import { Lab } from '../helpers/lab.js';
import { storeConformance } from './store-conformance.js';

const lab = new Lab('registry-store');
const agent = new Agent({ connect: { timeout: 2000 } });
t.teardown(async () => {
  await agent.close();
  await lab.cleanup();
});

function storeFor(url: string, creds?: { username: string; password: string }): RegistryStore {
  const client = new RegistryClient({
    name: 'cache',
    dispatcher: agent,
    baseUrl: () => url,
    credentials: { credentialsFor: async () => (creds ? [{ kind: 'basic', ...creds, label: 'test' }] : []) },
    userAgent: 'pullthrough-test',
    headersTimeoutMs: 5000,
    bodyTimeoutMs: 5000,
  });
  return new RegistryStore(client, 'cache');
}

storeConformance(t, 'registry store (distribution, anonymous)', async () => storeFor((await lab.registry('cache', 15010)).url));
storeConformance(t, 'registry store (distribution, token auth)', async () =>
  storeFor((await lab.registry('cache-token', 15011, ['--token', '--htpasswd', 'pt:secret', '--token-port', '15012'])).url, { username: 'pt', password: 'secret' }),
);
