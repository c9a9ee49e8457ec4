/**
 * The credentials a named pull secret holds for one image, read when a pre-warm needs them (by
 * name, never listed). A missing or malformed secret is a DefinitiveError whose message names the
 * secret and what is wrong with its shape, never its content.
 */
import { matchDockerConfig, type Credential } from '../oci/credentials.js';
import type { KubeClient } from './client.js';
import { DefinitiveError } from './errors.js';
import { parsePullSecret } from './pull-secrets.js';
import { getSecret } from './webhook-api.js';

export interface SecretRef {
  readonly namespace: string;
  readonly name: string;
}

/** Reads a pull secret's credentials for registry/repository. */
export type SecretCredentials = (ref: SecretRef, registry: string, repository: string) => Promise<Credential[]>;

export function secretCredentials(client: KubeClient): SecretCredentials {
  return async (ref, registry, repository) => {
    const secret = await getSecret(client, ref.namespace, ref.name);
    if (secret === undefined) throw new DefinitiveError(`pull secret ${ref.namespace}/${ref.name} not found`);
    const entries = parsePullSecret(secret, `secret ${ref.namespace}/${ref.name}`);
    const credentials = matchDockerConfig(entries, registry, repository);
    if (credentials.length === 0) {
      throw new DefinitiveError(`pull secret ${ref.namespace}/${ref.name} has no credential for ${registry}`);
    }
    return credentials;
  };
}
