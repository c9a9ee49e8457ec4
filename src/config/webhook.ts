/**
 * `pullthrough webhook` settings: every flag has a PULLTHROUGH_* environment variable (flags win),
 * so the Deployment can set them either way.
 */
import { type PullPolicy } from '../webhook/policy.js';

export interface WebhookConfig {
  listenHost: string;
  listenPort: number;
  /** Both set: serve these files (reloaded when they change) and never talk to the API server. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  proxyHost: string;
  namespace: string;
  excludeNamespaces: string[];
  ignoreImages: string[];
  acceptImages: string[];
  skipPullPolicies: PullPolicy[];
  serviceName: string;
  tlsSecretName: string;
  webhookConfigurationName: string;
  caValidityDays: number;
  certValidityDays: number;
  renewBeforeDays: number;
  certCheckIntervalSeconds: number;
  maxBodyBytes: number;
  logLevel: string;
}

export const WEBHOOK_HELP = `Usage: pullthrough webhook [flags]

Mutating admission webhook: points pod images at the node proxy (localhost:7439/<registry>/<repo>).
Every flag can also be set by the environment variable shown; a flag wins over its variable.

  --listen HOST:PORT              PULLTHROUGH_LISTEN              default 0.0.0.0:8443
  --tls-cert FILE                 PULLTHROUGH_TLS_CERT            serve this certificate (PEM) ...
  --tls-key FILE                  PULLTHROUGH_TLS_KEY             ... and key; reloaded when they change.
                                  With both, no API server is needed (outside a cluster, cert-manager).
                                  Without, the webhook keeps a CA and certificate in a Secret and
                                  patches the caBundle of its MutatingWebhookConfiguration.
  --proxy-host HOST:PORT          PULLTHROUGH_PROXY_HOST          default localhost:7439
  --namespace NS                  PULLTHROUGH_NAMESPACE           own namespace (always excluded);
                                                                  default $POD_NAMESPACE or pullthrough
  --exclude-namespaces A,B        PULLTHROUGH_EXCLUDE_NAMESPACES  more namespaces to leave alone
                                                                  (kube-system always is)
  --ignore-images REGEX           PULLTHROUGH_IGNORE_IMAGES       leave matching images alone; repeatable;
                                                                  the variable takes several, one per line
  --accept-images REGEX           PULLTHROUGH_ACCEPT_IMAGES       when given, rewrite only matching images
                                  (regexes see the image as written and normalised, e.g.
                                  nginx and docker.io/library/nginx:latest)
  --skip-pull-policies P,Q        PULLTHROUGH_SKIP_PULL_POLICIES  leave containers with these
                                                                  imagePullPolicy values alone (Always, Never)
  --service-name NAME             PULLTHROUGH_SERVICE_NAME        default pullthrough-webhook
  --tls-secret NAME               PULLTHROUGH_TLS_SECRET          default pullthrough-webhook-tls
  --webhook-configuration NAME    PULLTHROUGH_WEBHOOK_CONFIGURATION  default pullthrough
  --ca-validity-days N            PULLTHROUGH_CA_VALIDITY_DAYS    default 3650
  --cert-validity-days N          PULLTHROUGH_CERT_VALIDITY_DAYS  default 365
  --renew-before-days N           PULLTHROUGH_RENEW_BEFORE_DAYS   default 30
  --cert-check-interval SECONDS   PULLTHROUGH_CERT_CHECK_INTERVAL default 3600
  --max-body-bytes N              PULLTHROUGH_MAX_BODY_BYTES      default 4194304
  --log-level LEVEL               PULLTHROUGH_LOG_LEVEL           default info
  --help
`;

export class WebhookConfigError extends Error {}

interface FlagSpec {
  env: string;
  repeatable?: boolean;
}

const FLAGS: Record<string, FlagSpec> = {
  listen: { env: 'PULLTHROUGH_LISTEN' },
  'tls-cert': { env: 'PULLTHROUGH_TLS_CERT' },
  'tls-key': { env: 'PULLTHROUGH_TLS_KEY' },
  'proxy-host': { env: 'PULLTHROUGH_PROXY_HOST' },
  namespace: { env: 'PULLTHROUGH_NAMESPACE' },
  'exclude-namespaces': { env: 'PULLTHROUGH_EXCLUDE_NAMESPACES' },
  'ignore-images': { env: 'PULLTHROUGH_IGNORE_IMAGES', repeatable: true },
  'accept-images': { env: 'PULLTHROUGH_ACCEPT_IMAGES', repeatable: true },
  'skip-pull-policies': { env: 'PULLTHROUGH_SKIP_PULL_POLICIES' },
  'service-name': { env: 'PULLTHROUGH_SERVICE_NAME' },
  'tls-secret': { env: 'PULLTHROUGH_TLS_SECRET' },
  'webhook-configuration': { env: 'PULLTHROUGH_WEBHOOK_CONFIGURATION' },
  'ca-validity-days': { env: 'PULLTHROUGH_CA_VALIDITY_DAYS' },
  'cert-validity-days': { env: 'PULLTHROUGH_CERT_VALIDITY_DAYS' },
  'renew-before-days': { env: 'PULLTHROUGH_RENEW_BEFORE_DAYS' },
  'cert-check-interval': { env: 'PULLTHROUGH_CERT_CHECK_INTERVAL' },
  'max-body-bytes': { env: 'PULLTHROUGH_MAX_BODY_BYTES' },
  'log-level': { env: 'PULLTHROUGH_LOG_LEVEL' },
};

/** `--name value` or `--name=value`; repeatable flags collect. `{help: true}` for --help. */
function readFlags(argv: readonly string[]): { help: boolean; values: Map<string, string[]> } {
  const values = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') return { help: true, values };
    if (!arg.startsWith('--')) throw new WebhookConfigError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = FLAGS[name];
    if (!spec) throw new WebhookConfigError(`unknown flag --${name}`);
    let value: string | undefined = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new WebhookConfigError(`--${name} needs a value`);
    const list = spec.repeatable ? (values.get(name) ?? []) : [];
    list.push(value);
    values.set(name, list);
  }
  return { help: false, values };
}

function list(s: string | undefined): string[] {
  return (s ?? '').split(',').map((x) => x.trim()).filter(Boolean);
}

function positiveInt(name: string, s: string | undefined, dflt: number): number {
  if (s === undefined || s === '') return dflt;
  if (!/^\d+$/.test(s) || Number(s) <= 0) throw new WebhookConfigError(`--${name}: ${JSON.stringify(s)} is not a positive integer`);
  return Number(s);
}

export function parseHostPort(s: string, flag: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]*):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new WebhookConfigError(`${flag}: ${JSON.stringify(s)} is not HOST:PORT`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, '') || '0.0.0.0', port };
}

export type ParsedWebhookArgs = { help: true } | { help: false; config: WebhookConfig };

export function parseWebhookConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedWebhookArgs {
  const { help, values } = readFlags(argv);
  if (help) return { help: true };
  const get = (name: string): string | undefined => {
    const v = values.get(name);
    if (v !== undefined) return v[v.length - 1];
    const e = env[(FLAGS[name] as FlagSpec).env];
    return e === undefined || e === '' ? undefined : e;
  };
  const getAll = (name: string): string[] => {
    const v = values.get(name);
    if (v !== undefined) return v;
    return (env[(FLAGS[name] as FlagSpec).env] ?? '').split('\n').map((x) => x.trim()).filter(Boolean);
  };
  const listen = parseHostPort(get('listen') ?? '0.0.0.0:8443', '--listen');
  const tlsCertFile = get('tls-cert');
  const tlsKeyFile = get('tls-key');
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) throw new WebhookConfigError('--tls-cert and --tls-key go together');
  const skip = list(get('skip-pull-policies'));
  for (const p of skip) {
    if (p !== 'Always' && p !== 'Never' && p !== 'IfNotPresent') throw new WebhookConfigError(`--skip-pull-policies: unknown policy ${p}`);
  }
  const proxyHost = get('proxy-host') ?? 'localhost:7439';
  parseHostPort(proxyHost, '--proxy-host');
  const renewBeforeDays = positiveInt('renew-before-days', get('renew-before-days'), 30);
  const certValidityDays = positiveInt('cert-validity-days', get('cert-validity-days'), 365);
  if (renewBeforeDays >= certValidityDays) throw new WebhookConfigError('--renew-before-days must be less than --cert-validity-days');
  return {
    help: false,
    config: {
      listenHost: listen.host,
      listenPort: listen.port,
      ...(tlsCertFile !== undefined && tlsKeyFile !== undefined ? { tlsCertFile, tlsKeyFile } : {}),
      proxyHost,
      namespace: get('namespace') ?? (env.POD_NAMESPACE || 'pullthrough'),
      excludeNamespaces: list(get('exclude-namespaces')),
      ignoreImages: getAll('ignore-images'),
      acceptImages: getAll('accept-images'),
      skipPullPolicies: skip as PullPolicy[],
      serviceName: get('service-name') ?? 'pullthrough-webhook',
      tlsSecretName: get('tls-secret') ?? 'pullthrough-webhook-tls',
      webhookConfigurationName: get('webhook-configuration') ?? 'pullthrough',
      caValidityDays: positiveInt('ca-validity-days', get('ca-validity-days'), 3650),
      certValidityDays,
      renewBeforeDays,
      certCheckIntervalSeconds: positiveInt('cert-check-interval', get('cert-check-interval'), 3600),
      maxBodyBytes: positiveInt('max-body-bytes', get('max-body-bytes'), 4 * 1024 * 1024),
      logLevel: get('log-level') ?? 'info',
    },
  };
}
