/**
 * The credential a node proxy hands its cluster tier for one private object (docs/credentials.md,
 * "Across the cluster tier"): the node checks its pods' credentials at the origin as for any
 * request (a HEAD of the object, through the registry client's auth dance), and what the origin
 * accepted goes across the hop for that one request: the realm's bearer token, scoped to
 * `repository:<name>:pull` and short-lived, or, from an origin that only speaks Basic, the Basic
 * credential itself. The origin's acceptance is reported to the access gate as any origin answer
 * is: it confirms this node's pods' access, as it would have without a tier.
 */
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import type { RegistryClient } from '../oci/registry-client.js';
import type { AccessGate, AccessTarget, ObjectKind } from './access-control.js';

/** An Authorization header value the origin accepted for the object; undefined: none. */
export type HopAuthorizer = (
  t: AccessTarget,
  kind: ObjectKind,
  reference: string,
  signal?: AbortSignal,
) => Promise<string | undefined>;

export function originHopAuthorizer(origin: RegistryClient, access: AccessGate | undefined): HopAuthorizer {
  return async (t, kind, reference, signal) => {
    const { res, authorization } = await origin.requestWithAuthorization({
      registry: t.registry,
      repository: t.repository,
      method: 'HEAD',
      path: `/v2/${t.repository}/${kind === 'manifest' ? 'manifests' : 'blobs'}/${reference}`,
      ...(kind === 'manifest' ? { headers: { accept: MANIFEST_ACCEPT } } : {}),
      ...(signal ? { signal } : {}),
    });
    await res.body.dump();
    // A blob HEAD may be answered with a redirect to the registry's storage: it serves the blob.
    const served = res.statusCode === 200 || (res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304);
    // Anonymous access needs no credential across the hop: the tier fetches those itself.
    if (!served || res.credential === undefined) return undefined;
    access?.observe({ registry: t.registry, repository: t.repository }, kind, reference, res.credential);
    return authorization;
  };
}
