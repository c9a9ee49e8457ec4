/** An in-memory WebhookKubeApi with resourceVersion checks, for the certificate bootstrap tests. */
import type {
  JsonPatchOperation,
  SecretObject,
  WebhookConfigurationObject,
  WebhookKubeApi,
} from '../../src/webhook/kube-api.js';
import { applyPatch } from './helpers.js';

class Conflict extends Error {
  readonly code = 409;
}

export class MemoryKubeApi implements WebhookKubeApi {
  secrets = new Map<string, SecretObject>();
  configs = new Map<string, WebhookConfigurationObject>();
  private rv = 1;
  calls: string[] = [];
  /** Runs before the next secret write, to simulate another replica winning a race. */
  beforeWrite?: () => void;

  putSecret(ns: string, s: SecretObject): void {
    this.secrets.set(`${ns}/${s.metadata?.name}`, {
      ...structuredClone(s),
      metadata: { ...s.metadata, resourceVersion: String(this.rv++) },
    });
  }

  async readSecret(ns: string, name: string) {
    this.calls.push('readSecret');
    const s = this.secrets.get(`${ns}/${name}`);
    return s && structuredClone(s);
  }
  async createSecret(ns: string, s: SecretObject) {
    this.calls.push('createSecret');
    this.race();
    if (this.secrets.has(`${ns}/${s.metadata?.name}`)) throw new Conflict('exists');
    this.putSecret(ns, s);
  }
  async replaceSecret(ns: string, name: string, s: SecretObject) {
    this.calls.push('replaceSecret');
    this.race();
    const cur = this.secrets.get(`${ns}/${name}`);
    if (!cur || cur.metadata?.resourceVersion !== s.metadata?.resourceVersion) throw new Conflict('stale');
    this.putSecret(ns, s);
  }
  async readMutatingWebhookConfiguration(name: string) {
    const c = this.configs.get(name);
    return c && structuredClone(c);
  }
  async patchMutatingWebhookConfiguration(name: string, ops: JsonPatchOperation[]) {
    this.calls.push('patchWebhook');
    const c = this.configs.get(name);
    if (!c) throw Object.assign(new Error('not found'), { code: 404 });
    this.configs.set(name, applyPatch(c, ops));
  }
  private race() {
    const f = this.beforeWrite;
    this.beforeWrite = undefined;
    f?.();
  }
}
