/** The access check's HEAD at the origin, through the registry client and its auth dance. */
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import type { RegistryClient } from '../oci/registry-client.js';
import type { OriginProbe } from './access-control.js';

export function registryProbe(origin: RegistryClient): OriginProbe {
  return async (req) => {
    const res = await origin.request({
      registry: req.registry,
      repository: req.repository,
      method: 'HEAD',
      path: `/v2/${req.repository}/${req.kind === 'manifest' ? 'manifests' : 'blobs'}/${req.reference}`,
      ...(req.kind === 'manifest' ? { headers: { accept: MANIFEST_ACCEPT } } : {}),
      // Anonymous only: whether the repository is public. Otherwise the pods' credentials, then
      // --registry-credentials, then anonymous, as for any origin request.
      ...(req.anonymousOnly ? { credentials: [undefined] } : {}),
      // A request's own credential across the cluster tier: that one, as it is.
      ...(req.authorization !== undefined && !req.anonymousOnly ? { authorization: req.authorization } : {}),
    });
    await res.body.dump();
    // A blob HEAD may be answered with a redirect to the registry's storage: it serves the blob.
    const redirected = res.statusCode >= 300 && res.statusCode < 400 && res.statusCode !== 304;
    return { status: redirected ? 200 : res.statusCode, credential: res.credential };
  };
}
