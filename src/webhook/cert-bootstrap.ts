/**
 * TLS without cert-manager: keep a CA and a serving certificate in a Secret shared by every webhook
 * replica, renew them before they expire, and keep the caBundle (and the selectors) of the
 * MutatingWebhookConfiguration in step. Safe to run from every replica at once: writes are
 * guarded by resourceVersion, and the loser of a race adopts the winner's certificates.
 */
import { certMatches, createCa, inspectCert, issueServingCert, type KeyAndCert } from './certificates.js';
import { isConflict, type JsonPatchOperation, type SecretObject, type WebhookKubeApi } from './kube-api.js';

export const CA_CERT_KEY = 'ca.crt';
export const CA_KEY_KEY = 'ca.key';
/** Every CA that may still have signed a live serving certificate (new first), for the caBundle. */
export const CA_BUNDLE_KEY = 'ca-bundle.crt';

export interface CertBootstrapOptions {
  namespace: string;
  secretName: string;
  webhookConfigurationName: string;
  /** SANs of the serving certificate: `<service>.<namespace>.svc` is the one the API server uses. */
  dnsNames: string[];
  caValidityDays: number;
  certValidityDays: number;
  /** Renew when less than this is left. */
  renewBeforeDays: number;
  /** Applied to every webhook of the configuration (see selectors.ts). */
  selectors?: { namespaceSelector: unknown; objectSelector: unknown };
  labels?: Record<string, string>;
  now?: () => Date;
  log?: { info(obj: object, msg: string): void };
}

export interface BootstrapResult {
  serving: KeyAndCert;
  /** PEM, what the caBundle holds. */
  caBundle: string;
  /** What this call did to the Secret. */
  secret: 'kept' | 'created' | 'renewed-cert' | 'renewed-ca' | 'adopted';
  webhookPatched: boolean;
}

const DAY_MS = 86_400_000;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString());

interface Material {
  ca: KeyAndCert;
  serving: KeyAndCert;
  bundle: string;
}

function readMaterial(secret: SecretObject | undefined): Partial<Material> {
  const d = secret?.data ?? {};
  const caCert = unb64(d[CA_CERT_KEY]);
  const caKey = unb64(d[CA_KEY_KEY]);
  const cert = unb64(d['tls.crt']);
  const key = unb64(d['tls.key']);
  return {
    ...(caCert && caKey ? { ca: { cert: caCert, key: caKey } } : {}),
    ...(cert && key ? { serving: { cert, key } } : {}),
    ...(d[CA_BUNDLE_KEY] ? { bundle: unb64(d[CA_BUNDLE_KEY]) } : {}),
  };
}

function splitPem(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => `${p}\n`);
}

/** What must change, judged at `now`. */
function plan(m: Partial<Material>, o: CertBootstrapOptions, now: Date): 'keep' | 'cert' | 'ca' {
  const margin = o.renewBeforeDays * DAY_MS;
  const caFacts = m.ca ? inspectCert(m.ca.cert) : undefined;
  if (!m.ca || !caFacts || !caFacts.isCa || caFacts.notAfter.getTime() - now.getTime() <= margin) return 'ca';
  const f = m.serving ? inspectCert(m.serving.cert) : undefined;
  if (!m.serving || !f) return 'cert';
  if (f.notAfter.getTime() - now.getTime() <= margin || f.notBefore.getTime() > now.getTime()) return 'cert';
  if (!o.dnsNames.every((n) => f.dnsNames.includes(n))) return 'cert';
  if (!certMatches(m.serving.cert, m.serving.key, m.ca.cert)) return 'cert';
  return 'keep';
}

function renew(m: Partial<Material>, what: 'cert' | 'ca', o: CertBootstrapOptions, now: Date): Material {
  let ca = m.ca;
  let bundle = m.bundle ?? m.ca?.cert ?? '';
  if (what === 'ca' || !ca) {
    ca = createCa(`pullthrough-webhook-ca.${o.namespace}`, { now, validityDays: o.caValidityDays });
    // Keep still-valid old CAs for a while: other replicas serve old certificates until they reload.
    const old = splitPem(bundle).filter((pem) => (inspectCert(pem)?.notAfter.getTime() ?? 0) > now.getTime());
    bundle = [ca.cert, ...old].join('');
  }
  const caLeft = (inspectCert(ca.cert)?.notAfter.getTime() ?? 0) - now.getTime();
  const days = Math.max(1, Math.min(o.certValidityDays, Math.floor(caLeft / DAY_MS)));
  const serving = issueServingCert(ca, o.dnsNames, { now, validityDays: days });
  return { ca, serving, bundle };
}

function toSecret(m: Material, o: CertBootstrapOptions, resourceVersion?: string): SecretObject {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: o.secretName,
      namespace: o.namespace,
      labels: o.labels ?? {},
      ...(resourceVersion ? { resourceVersion } : {}),
    },
    type: 'kubernetes.io/tls',
    data: {
      'tls.crt': b64(m.serving.cert),
      'tls.key': b64(m.serving.key),
      [CA_CERT_KEY]: b64(m.ca.cert),
      [CA_KEY_KEY]: b64(m.ca.key),
      [CA_BUNDLE_KEY]: b64(m.bundle),
    },
  };
}

async function ensureSecret(
  api: WebhookKubeApi,
  o: CertBootstrapOptions,
  now: Date,
): Promise<{ m: Material; outcome: BootstrapResult['secret'] }> {
  let raced = false;
  for (let attempt = 0; attempt < 5; attempt++) {
    const secret = await api.readSecret(o.namespace, o.secretName);
    const current = readMaterial(secret);
    const what = plan(current, o, now);
    if (what === 'keep') {
      // plan() keeps only a material with its CA and serving pair, the bundle alone may be missing.
      const kept = current as Material;
      const m = { ...kept, bundle: current.bundle ?? kept.ca.cert };
      return { m, outcome: raced ? 'adopted' : 'kept' };
    }
    const next = renew(current, what, o, now);
    try {
      if (!secret) await api.createSecret(o.namespace, toSecret(next, o));
      else await api.replaceSecret(o.namespace, o.secretName, toSecret(next, o, secret.metadata?.resourceVersion));
      const outcome = !secret ? 'created' : what === 'ca' ? 'renewed-ca' : 'renewed-cert';
      o.log?.info({ secret: `${o.namespace}/${o.secretName}`, outcome }, 'webhook certificates written');
      return { m: next, outcome };
    } catch (err) {
      if (!isConflict(err)) throw err;
      raced = true; // another replica wrote first: read again and, normally, adopt its certificates
    }
  }
  throw new Error(`Secret ${o.namespace}/${o.secretName} keeps changing under us; giving up for now`);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function ensureWebhookConfiguration(
  api: WebhookKubeApi,
  o: CertBootstrapOptions,
  bundle: string,
): Promise<boolean> {
  const cfg = await api.readMutatingWebhookConfiguration(o.webhookConfigurationName);
  if (!cfg) throw new Error(`MutatingWebhookConfiguration ${o.webhookConfigurationName} not found`);
  const want = b64(bundle);
  const ops: JsonPatchOperation[] = [];
  (cfg.webhooks ?? []).forEach((w, i) => {
    const changes: JsonPatchOperation[] = [];
    if (w.clientConfig?.caBundle !== want) {
      changes.push(
        w.clientConfig
          ? { op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: want }
          : { op: 'add', path: `/webhooks/${i}/clientConfig`, value: { caBundle: want } },
      );
    }
    if (o.selectors) {
      if (!sameJson(w.namespaceSelector, o.selectors.namespaceSelector))
        changes.push({ op: 'add', path: `/webhooks/${i}/namespaceSelector`, value: o.selectors.namespaceSelector });
      if (!sameJson(w.objectSelector, o.selectors.objectSelector))
        changes.push({ op: 'add', path: `/webhooks/${i}/objectSelector`, value: o.selectors.objectSelector });
    }
    // Guard the index: if the list changed since we read it, the patch fails instead of hitting the wrong entry.
    if (changes.length > 0) ops.push({ op: 'test', path: `/webhooks/${i}/name`, value: w.name }, ...changes);
  });
  if (ops.length === 0) return false;
  await api.patchMutatingWebhookConfiguration(o.webhookConfigurationName, ops);
  o.log?.info({ configuration: o.webhookConfigurationName, operations: ops.length }, 'webhook configuration patched');
  return true;
}

export async function ensureCertificates(api: WebhookKubeApi, o: CertBootstrapOptions): Promise<BootstrapResult> {
  const now = (o.now ?? (() => new Date()))();
  const { m, outcome } = await ensureSecret(api, o, now);
  const webhookPatched = await ensureWebhookConfiguration(api, o, m.bundle);
  return { serving: m.serving, caBundle: m.bundle, secret: outcome, webhookPatched };
}

/** The SANs the API server may use for `<service>` in `<namespace>`. */
export function serviceDnsNames(service: string, namespace: string): string[] {
  return [
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
    `${service}.${namespace}`,
    service,
  ];
}
