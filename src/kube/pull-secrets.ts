/**
 * Image pull secrets as the kubelet reads them: `kubernetes.io/dockerconfigjson` carries a
 * config.json under `.dockerconfigjson`, `kubernetes.io/dockercfg` a legacy map under `.dockercfg`;
 * any other type is not a pull secret even if it has those keys. Reasons for rejecting a secret
 * describe its shape, never its content.
 */
import type * as k8s from '@kubernetes/client-node';
import { DefinitiveError } from './errors.js';
import { parseDockerConfig, type DockerConfigEntry } from '../oci/credentials.js';

export const DOCKER_CONFIG_JSON = 'kubernetes.io/dockerconfigjson';
export const DOCKER_CFG = 'kubernetes.io/dockercfg';

export class PullSecretError extends DefinitiveError {}

export function parsePullSecret(secret: k8s.V1Secret, labelPrefix: string): DockerConfigEntry[] {
  const type = secret.type ?? 'Opaque';
  const key = type === DOCKER_CONFIG_JSON ? '.dockerconfigjson' : type === DOCKER_CFG ? '.dockercfg' : undefined;
  if (key === undefined) {
    // The type is free text; name it only when it is one of the well-known ones.
    const shown = /^(Opaque|kubernetes\.io\/[a-z-]{1,40}|bootstrap\.kubernetes\.io\/token)$/.test(type)
      ? type
      : 'unrecognised';
    throw new PullSecretError(`type ${shown} is not an image pull secret type`);
  }
  const data = secret.data?.[key];
  if (typeof data !== 'string' || data === '') throw new PullSecretError(`no ${key} key`);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    throw new PullSecretError(`${key} is not valid JSON`);
  }
  const entries = parseDockerConfig(json, labelPrefix);
  if (entries.length === 0) throw new PullSecretError(`${key} has no usable credentials`);
  return entries;
}
