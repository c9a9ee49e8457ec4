/**
 * The pods' pull secrets as a CredentialSource for the registry client: for a (registry,
 * repository), the credentials of every pod on this node that uses it. A secret shared by several
 * pods is one candidate listing all of them, so it is tried once and, if the origin accepts it,
 * confirms access for each.
 */
import { credentialIdentity, type CredentialRequest, type CredentialSource } from '../oci/credentials.js';
import type { PodCredentials } from './pod-credentials.js';
import type { PodCredential, PodRef } from './types.js';

export class PodCredentialSource implements CredentialSource {
  constructor(private readonly pods: PodCredentials) {}

  async credentialsFor(req: CredentialRequest): Promise<readonly PodCredential[]> {
    const refs = this.pods.podsUsing(req.registry, req.repository);
    if (refs.length === 0) return [];
    const perPod = await Promise.all(refs.map((r) => this.pods.credentialsFor(r, req.registry, req.repository)));
    const merged = new Map<string, { first: PodCredential; pods: PodRef[] }>();
    for (const list of perPod) {
      for (const c of list) {
        const id = credentialIdentity(c);
        const m = merged.get(id);
        if (m) m.pods.push(c.pod);
        else merged.set(id, { first: c, pods: [c.pod] });
      }
    }
    return [...merged.values()].map(({ first, pods }) => ({ ...first, pod: pods[0] as PodRef, pods }));
  }
}
