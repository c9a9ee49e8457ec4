/**
 * The admission webhook's certificate bootstrap (src/webhook/cert-bootstrap.ts) speaks to the API
 * through the WebhookKubeApi interface; this is its implementation over the real client. Conflicts
 * are passed up as errors whose `code` is 409 so that a replica losing a race re-reads and adopts
 * what the winner wrote, instead of overwriting it.
 */
import * as k8s from '@kubernetes/client-node';
import type { JsonPatchOperation, WebhookConfigurationObject, WebhookKubeApi } from '../webhook/kube-api.js';
import type { KubeClient } from './client.js';
import { describeKubeError } from './errors.js';
import { getSecret } from './webhook-api.js';

class KubeApiError extends Error {
  readonly code: number | undefined;
  constructor(operation: string, err: unknown) {
    const f = describeKubeError(err);
    super(`${operation}: ${f.reason}${f.code !== undefined ? ` (HTTP ${f.code})` : ''}`);
    this.name = 'KubeApiError';
    this.code = f.code;
  }
}

export function createWebhookKubeApi(client: KubeClient): WebhookKubeApi {
  return {
    async readSecret(namespace, name) {
      return await getSecret(client, namespace, name);
    },
    async createSecret(namespace, secret) {
      try {
        await client.core.createNamespacedSecret({ namespace, body: secret });
      } catch (err) {
        throw new KubeApiError(`create secret ${namespace}/${secret.metadata?.name ?? ''}`, err);
      }
    },
    async replaceSecret(namespace, name, secret) {
      try {
        await client.core.replaceNamespacedSecret({ namespace, name, body: secret });
      } catch (err) {
        throw new KubeApiError(`replace secret ${namespace}/${name}`, err);
      }
    },
    async readMutatingWebhookConfiguration(name) {
      try {
        return (await client.admission.readMutatingWebhookConfiguration({ name })) as WebhookConfigurationObject;
      } catch (err) {
        if (describeKubeError(err).code === 404) return undefined;
        throw new KubeApiError(`read mutatingwebhookconfiguration ${name}`, err);
      }
    },
    async patchMutatingWebhookConfiguration(name, ops: JsonPatchOperation[]) {
      try {
        await client.admission.patchMutatingWebhookConfiguration(
          { name, body: ops },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
        );
      } catch (err) {
        throw new KubeApiError(`patch mutatingwebhookconfiguration ${name}`, err);
      }
    },
  };
}
