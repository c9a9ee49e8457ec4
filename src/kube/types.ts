/** What src/kube hands to the rest of pullthrough: pod references and credentials tagged with them. */
import type { Credential } from '../oci/credentials.js';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
}

/**
 * A pull-secret credential and the pod it came from. When several pods on the node hold the same
 * secret, `pods` lists them all (`pod` is the first), so one accepted credential confirms access
 * for each of them and the credential is tried once, not once per pod.
 */
export type PodCredential = Credential & { readonly pod: PodRef; readonly pods: readonly PodRef[] };

/** An image a pod uses, as the origin knows it. */
export interface ImageRepository {
  readonly registry: string;
  readonly repository: string;
}

export function podKey(p: PodRef): string {
  return `${p.namespace}/${p.name}`;
}
