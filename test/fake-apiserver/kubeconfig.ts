/** Writes a kubeconfig file that points a real client at a FakeApiServer. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { testTempDir } from '../helpers/temp.js';

export interface KubeconfigOptions {
  /** Directory to write into; by default a fresh one, removed when the test process exits. */
  readonly dir?: string;
  /** Bearer token for the user entry. */
  readonly token?: string;
  readonly namespace?: string;
}

export function kubeconfigText(server: string, options: KubeconfigOptions = {}): string {
  // JSON is YAML, and the client loads kubeconfig files with a YAML parser.
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      // client-node refuses http:// servers unless TLS verification is skipped.
      clusters: [{ name: 'fake', cluster: { server, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake', user: options.token !== undefined ? { token: options.token } : {} }],
      contexts: [
        { name: 'fake', context: { cluster: 'fake', user: 'fake', namespace: options.namespace ?? 'default' } },
      ],
      'current-context': 'fake',
    },
    null,
    2,
  );
}

/** Returns the path of the written file. */
export async function writeKubeconfig(
  server: { url: string } | string,
  options: KubeconfigOptions = {},
): Promise<string> {
  const dir = options.dir ?? testTempDir('kubeconfig-');
  const path = join(dir, 'kubeconfig');
  await writeFile(path, kubeconfigText(typeof server === 'string' ? server : server.url, options), { mode: 0o600 });
  return path;
}
