/** A RegistryClient for one registry in tests, anonymous or with Basic credentials. */
import type { Dispatcher } from 'undici';
import { RegistryClient } from '../../src/oci/registry-client.js';

export interface TestClientOptions {
  readonly dispatcher: Dispatcher;
  readonly name: string;
  readonly creds?: { username: string; password: string } | undefined;
  readonly timeoutMs: number;
}

export function testRegistryClient(base: string, o: TestClientOptions): RegistryClient {
  return new RegistryClient({
    name: o.name,
    dispatcher: o.dispatcher,
    baseUrl: () => base,
    credentials: { credentialsFor: async () => (o.creds ? [{ kind: 'basic', ...o.creds, label: 'test' }] : []) },
    userAgent: 'pullthrough-test',
    headersTimeoutMs: o.timeoutMs,
    bodyTimeoutMs: o.timeoutMs,
  });
}
