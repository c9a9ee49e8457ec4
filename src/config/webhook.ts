/**
 * `pullthrough webhook` settings: every flag has a PULLTHROUGH_* environment variable (flags win),
 * so the Deployment can set them either way. The configuration owns the values it validates (the
 * pull policy names); the webhook imports them from here.
 */
import type { GatePolicy } from '../scan/policy.js';
import { parseScanPolicy, scanPolicyFlags } from './scan.js';
import { ConfigError, helpText, parseFlags, parseHostPort, parseList, valueOf, type FlagSpec } from './flags.js';

/** A container's imagePullPolicy values, as --skip-pull-policies accepts them. */
export const PULL_POLICIES = ['Always', 'IfNotPresent', 'Never'] as const;
export type PullPolicy = (typeof PULL_POLICIES)[number];

/** --namespaces: every namespace not excluded, or only those labelled pullthrough.dev/enabled=true. */
export const NAMESPACE_MODES = ['all', 'labelled'] as const;
export type NamespaceMode = (typeof NAMESPACE_MODES)[number];

/**
 * Registries the kubelet authenticates with the node's identity through its credential provider
 * plugins (ECR, Artifact Registry and Container Registry, ACR): the webhook leaves their images
 * alone unless --node-identity-registries says otherwise.
 */
export const DEFAULT_NODE_IDENTITY_REGISTRIES: readonly string[] = [
  '*.dkr.ecr.*.amazonaws.com',
  '*.dkr.ecr-fips.*.amazonaws.com',
  '*.dkr.ecr.*.amazonaws.com.cn',
  '*.dkr.ecr.*.sc2s.sgov.gov',
  '*.dkr.ecr.*.c2s.ic.gov',
  '*-docker.pkg.dev',
  'gcr.io',
  '*.gcr.io',
  'container.cloud.google.com',
  '*.azurecr.io',
  '*.azurecr.cn',
  '*.azurecr.de',
  '*.azurecr.us',
];

export interface WebhookConfig {
  listenHost: string;
  listenPort: number;
  /** Both set: serve these files (reloaded when they change) and never talk to the API server. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  proxyHost: string;
  namespace: string;
  excludeNamespaces: string[];
  /** `labelled`: the webhook watches namespaces and rewrites only pods of opted-in ones. */
  namespaces: NamespaceMode;
  ignoreImages: string[];
  acceptImages: string[];
  skipPullPolicies: PullPolicy[];
  /** Registry host patterns whose images are left alone (node identity); empty: none. */
  nodeIdentityRegistries: string[];
  serviceName: string;
  tlsSecretName: string;
  webhookConfigurationName: string;
  caValidityDays: number;
  certValidityDays: number;
  renewBeforeDays: number;
  certCheckIntervalSeconds: number;
  maxBodyBytes: number;
  logLevel: string;
  /** Plain-HTTP /metrics; undefined: off. */
  metricsListen?: { host: string; port: number };
  /** A kubeconfig file; unset: the in-cluster ServiceAccount. */
  kubeconfig?: string;
  /** The vulnerability gate (--scan-policy): denies or warns at admission. */
  scanPolicy?: GatePolicy;
}

export const webhookFlags: readonly FlagSpec[] = [
  {
    name: 'listen',
    kind: 'string',
    arg: 'HOST:PORT',
    default: '0.0.0.0:8443',
    help: 'Where the webhook serves HTTPS.',
  },
  {
    name: 'tls-cert',
    kind: 'string',
    arg: 'FILE',
    help:
      'Serve this certificate (PEM) with --tls-key; both are reloaded when they change. With both, no API ' +
      'server is needed (outside a cluster, cert-manager). Without, the webhook keeps a CA and certificate ' +
      'in a Secret and patches the caBundle of its MutatingWebhookConfiguration.',
  },
  { name: 'tls-key', kind: 'string', arg: 'FILE', help: 'The key of --tls-cert (PEM).' },
  {
    name: 'proxy-host',
    kind: 'string',
    arg: 'HOST:PORT',
    default: 'localhost:7439',
    help: 'The host rewritten images point at (localhost:7439/<registry>/<repo>).',
  },
  {
    name: 'namespace',
    kind: 'string',
    arg: 'NS',
    help: 'Own namespace (always excluded); unset: $POD_NAMESPACE, else pullthrough.',
  },
  {
    name: 'exclude-namespaces',
    kind: 'list',
    help: 'More namespaces to leave alone (kube-system always is).',
  },
  {
    name: 'namespaces',
    kind: 'string',
    arg: 'all|labelled',
    default: 'all',
    help:
      'Which namespaces are rewritten: all (but the excluded), or only those labelled ' +
      'pullthrough.dev/enabled=true (gradual rollout; the webhook watches namespaces, and leaves a namespace ' +
      'it has not seen alone); labelled talks to the API server even with --tls-cert.',
  },
  {
    name: 'ignore-images',
    kind: 'repeatable',
    arg: 'REGEX',
    help:
      'Leave matching images alone; repeatable; the variable takes several, one per line. Regexes see the ' +
      'image as written and normalised, e.g. nginx and docker.io/library/nginx:latest.',
  },
  {
    name: 'accept-images',
    kind: 'repeatable',
    arg: 'REGEX',
    help: 'When given, rewrite only matching images; repeatable like --ignore-images.',
  },
  {
    name: 'skip-pull-policies',
    kind: 'list',
    arg: 'P,Q',
    help: `Leave containers with these imagePullPolicy values alone (${PULL_POLICIES.join(', ')}).`,
  },
  {
    name: 'node-identity-registries',
    kind: 'list',
    arg: 'PATTERNS',
    default: DEFAULT_NODE_IDENTITY_REGISTRIES.join(','),
    help:
      'Leave alone images of these registries (host patterns, `*` within a label), which the kubelet ' +
      'authenticates with the node identity through credential provider plugins; `none` for none, when ' +
      'the node proxy runs those plugins (--image-credential-provider-config). Default: ECR, Artifact ' +
      'Registry, Container Registry and ACR hosts.',
  },
  { name: 'service-name', kind: 'string', arg: 'NAME', default: 'pullthrough-webhook', help: "The webhook's Service." },
  {
    name: 'tls-secret',
    kind: 'string',
    arg: 'NAME',
    default: 'pullthrough-webhook-tls',
    help: 'The Secret that keeps the CA and the serving certificate (without --tls-cert).',
  },
  {
    name: 'webhook-configuration',
    kind: 'string',
    arg: 'NAME',
    default: 'pullthrough',
    help: 'The MutatingWebhookConfiguration whose caBundle is kept current (without --tls-cert).',
  },
  { name: 'ca-validity-days', kind: 'string', arg: 'N', default: '3650', help: 'Validity of the CA it creates.' },
  {
    name: 'cert-validity-days',
    kind: 'string',
    arg: 'N',
    default: '365',
    help: 'Validity of the serving certificate it issues.',
  },
  {
    name: 'renew-before-days',
    kind: 'string',
    arg: 'N',
    default: '30',
    help: 'Renew the serving certificate this long before it expires (less than --cert-validity-days).',
  },
  {
    name: 'cert-check-interval',
    kind: 'string',
    arg: 'SECONDS',
    default: '3600',
    help: 'How often the certificate (files or Secret) is checked.',
  },
  {
    name: 'max-body-bytes',
    kind: 'string',
    arg: 'N',
    default: '4194304',
    help: 'Largest AdmissionReview accepted.',
  },
  { name: 'log-level', kind: 'string', arg: 'LEVEL', default: 'info', help: 'pino level.' },
  {
    name: 'kubeconfig',
    kind: 'string',
    arg: 'FILE',
    help: 'A kubeconfig file for the API server (outside a cluster); in-cluster without it.',
  },
  {
    name: 'metrics-listen',
    kind: 'string',
    arg: 'HOST:PORT',
    default: '0.0.0.0:7440',
    help:
      'Where Prometheus /metrics is served on plain HTTP (admission counts and latency, no image names); ' +
      'empty disables it.',
  },
  ...scanPolicyFlags,
];

export const WEBHOOK_HELP = helpText(
  [
    'Usage: pullthrough webhook [flags]',
    '',
    'Mutating admission webhook: points pod images at the node proxy (localhost:7439/<registry>/<repo>).',
  ].join('\n'),
  webhookFlags,
);

export type ParsedWebhookArgs = { help: true } | { help: false; config: WebhookConfig };

export function parseWebhookConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedWebhookArgs {
  // An empty variable is unset here, so a manifest's `value: ""` keeps the default.
  const flags = parseFlags(webhookFlags, argv, env, { emptyEnvIsUnset: true });
  const { values: v, repeated, help } = flags;
  if (help) return { help: true };
  const listen = hostPort('listen', v.listen);
  // Read raw: with emptyEnvIsUnset an empty variable keeps the default, an empty flag turns it off.
  const metricsListen = v['metrics-listen'] ? hostPort('metrics-listen', v['metrics-listen']) : undefined;
  const tlsCertFile = v['tls-cert'];
  const tlsKeyFile = v['tls-key'];
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) {
    throw new ConfigError('--tls-cert and --tls-key go together');
  }
  const skipPullPolicies = parseList(v['skip-pull-policies']).map((p) => {
    const policy = PULL_POLICIES.find((x) => x === p);
    if (!policy) throw new ConfigError(`--skip-pull-policies: unknown policy ${p}`);
    return policy;
  });
  const proxyHost = valueOf(v, 'proxy-host');
  hostPort('proxy-host', proxyHost);
  const renewBeforeDays = positiveInt(v, 'renew-before-days');
  const certValidityDays = positiveInt(v, 'cert-validity-days');
  if (renewBeforeDays >= certValidityDays) {
    throw new ConfigError('--renew-before-days must be less than --cert-validity-days');
  }
  return {
    help: false,
    config: {
      listenHost: listen.host,
      listenPort: listen.port,
      ...(tlsCertFile !== undefined && tlsKeyFile !== undefined ? { tlsCertFile, tlsKeyFile } : {}),
      proxyHost,
      namespace: v.namespace ?? (env.POD_NAMESPACE || 'pullthrough'),
      excludeNamespaces: parseList(v['exclude-namespaces']),
      namespaces: namespaceMode(valueOf(v, 'namespaces')),
      ignoreImages: [...(repeated['ignore-images'] ?? [])],
      acceptImages: [...(repeated['accept-images'] ?? [])],
      skipPullPolicies,
      nodeIdentityRegistries: nodeIdentityRegistries(v['node-identity-registries']),
      serviceName: valueOf(v, 'service-name'),
      tlsSecretName: valueOf(v, 'tls-secret'),
      webhookConfigurationName: valueOf(v, 'webhook-configuration'),
      caValidityDays: positiveInt(v, 'ca-validity-days'),
      certValidityDays,
      renewBeforeDays,
      certCheckIntervalSeconds: positiveInt(v, 'cert-check-interval'),
      maxBodyBytes: positiveInt(v, 'max-body-bytes'),
      logLevel: valueOf(v, 'log-level'),
      ...(metricsListen ? { metricsListen } : {}),
      ...(v.kubeconfig ? { kubeconfig: v.kubeconfig } : {}),
      scanPolicy: parseScanPolicy(flags),
    },
  };
}

function namespaceMode(value: string): NamespaceMode {
  const mode = NAMESPACE_MODES.find((m) => m === value);
  if (!mode)
    throw new ConfigError(`--namespaces: expected ${NAMESPACE_MODES.join(' or ')}, got ${JSON.stringify(value)}`);
  return mode;
}

/** `none` (or an empty flag) turns the rule off; an empty variable keeps the default. */
function nodeIdentityRegistries(value: string | undefined): string[] {
  const list = parseList(value);
  if (list.length === 1 && list[0]?.toLowerCase() === 'none') return [];
  if (list.includes('*')) throw new ConfigError('--node-identity-registries: `*` would leave every image alone');
  return list;
}

/** HOST:PORT with a port from 1; an empty host (`:8443`) listens on every interface. */
function hostPort(name: string, value: string | undefined): { host: string; port: number } {
  const hp = parseHostPort(name, value?.startsWith(':') ? `0.0.0.0${value}` : value);
  if (hp.port === 0) throw new ConfigError(`--${name}: expected HOST:PORT, got ${JSON.stringify(value)}`);
  return hp;
}

/** An empty flag (`--max-body-bytes=`) takes the declared default, as an empty variable does. */
function positiveInt(values: Readonly<Record<string, string | undefined>>, name: string): number {
  const s = values[name] || webhookFlags.find((f) => f.name === name)?.default;
  if (s === undefined || !/^\d+$/.test(s) || Number(s) <= 0) {
    throw new ConfigError(`--${name}: ${JSON.stringify(s)} is not a positive integer`);
  }
  return Number(s);
}
