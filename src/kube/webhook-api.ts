/**
 * The few API calls the admission webhook's certificate bootstrap makes: read its TLS Secret,
 * write it, and put the CA into its MutatingWebhookConfiguration. Failures are thrown as
 * KubeRequestError, whose message names the object and the status, never the request or response
 * body (the Secret holds a private key).
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import { describeKubeError, type KubeFailure } from './errors.js';

export class KubeRequestError extends Error {
  constructor(
    readonly operation: string,
    readonly failure: KubeFailure,
  ) {
    super(`${operation}: ${failure.reason}${failure.code !== undefined ? ` (HTTP ${failure.code})` : ''}`);
    this.name = 'KubeRequestError';
  }
}

const failed = (operation: string, err: unknown): KubeRequestError =>
  new KubeRequestError(operation, describeKubeError(err));

/** The Secret, or undefined when it does not exist. */
export async function getSecret(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<k8s.V1Secret | undefined> {
  try {
    return await client.core.readNamespacedSecret({ namespace, name });
  } catch (err) {
    if (describeKubeError(err).code === 404) return undefined;
    throw failed(`get secret ${namespace}/${name}`, err);
  }
}

/**
 * Creates the Secret, or replaces the one there. The replace carries the current
 * resourceVersion, so two webhook replicas racing get a conflict and retry instead of silently
 * overwriting each other; after `attempts` the conflict is thrown.
 */
export async function createOrReplaceSecret(
  client: KubeClient,
  secret: k8s.V1Secret,
  attempts = 3,
): Promise<k8s.V1Secret> {
  const { metadata } = secret;
  const namespace = metadata?.namespace;
  const name = metadata?.name;
  if (!metadata || !namespace || !name)
    throw new TypeError('createOrReplaceSecret: metadata.namespace and metadata.name are required');
  const op = `write secret ${namespace}/${name}`;
  for (let i = 1; ; i++) {
    try {
      return await client.core.createNamespacedSecret({ namespace, body: secret });
    } catch (err) {
      if (describeKubeError(err).code !== 409) throw failed(op, err);
    }
    const current = await getSecret(client, namespace, name);
    if (!current) continue; // deleted between our create and get: create again
    const body: k8s.V1Secret = {
      ...secret,
      metadata: { ...metadata, resourceVersion: current.metadata?.resourceVersion },
    };
    try {
      return await client.core.replaceNamespacedSecret({ namespace, name, body });
    } catch (err) {
      if (describeKubeError(err).code !== 409 || i >= attempts) throw failed(op, err);
    }
  }
}

/**
 * Sets `webhooks[*].clientConfig.caBundle` of a MutatingWebhookConfiguration to the PEM given
 * (base64-encoded here, as the API wants). A JSON patch guarded by `test` ops on each webhook's
 * name, so a configuration changed between read and patch fails (and is retried) rather than
 * being patched at the wrong index. Returns how many webhooks were changed (0: already current).
 */
export async function patchWebhookCABundle(
  client: KubeClient,
  name: string,
  caPem: string,
  attempts = 3,
): Promise<number> {
  const op = `patch caBundle of mutatingwebhookconfiguration ${name}`;
  const caBundle = Buffer.from(caPem, 'utf8').toString('base64');
  for (let i = 1; ; i++) {
    let current: k8s.V1MutatingWebhookConfiguration;
    try {
      current = await client.admission.readMutatingWebhookConfiguration({ name });
    } catch (err) {
      throw failed(op, err);
    }
    const patch: object[] = [];
    (current.webhooks ?? []).forEach((w, idx) => {
      if (w.clientConfig.caBundle === caBundle) return;
      patch.push({ op: 'test', path: `/webhooks/${idx}/name`, value: w.name });
      patch.push({ op: 'add', path: `/webhooks/${idx}/clientConfig/caBundle`, value: caBundle });
    });
    if (patch.length === 0) return 0;
    try {
      await client.admission.patchMutatingWebhookConfiguration(
        { name, body: patch },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
      );
      return patch.length / 2;
    } catch (err) {
      const code = describeKubeError(err).code;
      // 422: a test op failed because the list changed under us; 409: a concurrent write.
      if ((code !== 422 && code !== 409) || i >= attempts) throw failed(op, err);
    }
  }
}
