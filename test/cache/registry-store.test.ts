import t from 'tap';
import { Agent } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { Lab } from '../helpers/lab.js';
import { storeConformance } from './store-conformance.js';

const lab = new Lab('registry-store');
const agent = new Agent({ connect: { timeout: 2000 } });
t.teardown(async () => {
  await agent.close();
  await lab.cleanup();
});

function storeFor(url: string, creds?: { username: string; password: string }): RegistryStore {
  const client = testRegistryClient(url, { name: 'cache', dispatcher: agent, creds, timeoutMs: 5000 });
  return new RegistryStore(client, 'cache');
}

storeConformance(t, 'registry store (distribution, anonymous)', async () =>
  storeFor((await lab.registry('cache', 15010)).url),
);
storeConformance(t, 'registry store (distribution, token auth)', async () =>
  storeFor(
    (await lab.registry('cache-token', 15011, ['--token', '--htpasswd', 'pt:secret', '--token-port', '15012'])).url,
    { username: 'pt', password: 'secret' },
  ),
);
