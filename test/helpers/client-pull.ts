/**
 * A client's pull through a proxy, as tests that only need "it pulls, byte for byte" do it: the
 * manifest by tag, then its config and layers, each blob's bytes hashed against its digest.
 */
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** `repo` as the proxy serves it (e.g. `127.0.0.1_5000/team/app`). Returns the manifest's digest and its blobs. */
export async function clientPull(
  proxyUrl: string,
  repo: string,
  tag: string,
): Promise<{ digest: string; blobs: string[] }> {
  const m = await request(`${proxyUrl}/v2/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  const bytes = Buffer.from(await m.body.arrayBuffer());
  if (m.statusCode !== 200) throw new Error(`manifest ${repo}:${tag}: ${m.statusCode}`);
  const doc = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const blobs = [doc.config.digest, ...doc.layers.map((l) => l.digest)];
  for (const d of blobs) {
    const b = await request(`${proxyUrl}/v2/${repo}/blobs/${d}`);
    const body = Buffer.from(await b.body.arrayBuffer());
    if (b.statusCode !== 200 || sha(body) !== d) throw new Error(`blob ${d} of ${repo}: ${b.statusCode}`);
  }
  return { digest: sha(bytes), blobs };
}
