/**
 * Registry credentials and where they come from. The registry client asks a CredentialSource for
 * the candidates of one (registry, repository) and tries them in order on a 401; sources are the
 * pulling pods' imagePullSecrets (kube/), the static `--registry-credentials` file and the kubelet's
 * credential provider plugins (credential-provider.ts).
 *
 * Secrets live only inside Credential objects: `label` and `identity` are what logs, metrics and
 * token-cache keys may carry.
 */
import { createHash } from 'node:crypto';

export type Credential =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string; readonly label: string }
  /** docker config `identitytoken`: an OAuth2 refresh token exchanged at the realm. */
  | { readonly kind: 'identity-token'; readonly username: string; readonly token: string; readonly label: string }
  /** docker config `registrytoken`: a bearer token sent as it is. */
  | { readonly kind: 'registry-token'; readonly token: string; readonly label: string };

export interface CredentialRequest {
  readonly registry: string;
  readonly repository: string;
}

export interface CredentialSource {
  credentialsFor(req: CredentialRequest): Promise<readonly Credential[]>;
}

/** A stable, non-secret key for a credential: different secrets never share a token cache entry. */
export function credentialIdentity(c: Credential | undefined): string {
  if (!c) return 'anonymous';
  const secret =
    c.kind === 'basic'
      ? `${c.username}\0${c.password}`
      : c.kind === 'identity-token'
        ? `${c.username}\0${c.token}`
        : c.token;
  return `${c.kind}:${createHash('sha256').update(secret).digest('hex').slice(0, 16)}`;
}

export interface DockerConfigEntry {
  /** The key as written (`https://index.docker.io/v1/`, `*.example.com`, `host:5000/path`). */
  readonly key: string;
  readonly credential: Credential;
}

const strictBase64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

interface RawAuth {
  auth?: unknown;
  username?: unknown;
  password?: unknown;
  identitytoken?: unknown;
  registrytoken?: unknown;
}

/**
 * Reads a docker config.json (`{"auths": {...}}`, kubernetes.io/dockerconfigjson) or a legacy
 * .dockercfg (the map itself, kubernetes.io/dockercfg). Malformed entries are skipped, never echoed.
 */
export function parseDockerConfig(json: unknown, labelPrefix: string): DockerConfigEntry[] {
  if (typeof json !== 'object' || json === null) return [];
  const root = json as Record<string, unknown>;
  const auths = typeof root.auths === 'object' && root.auths !== null ? (root.auths as Record<string, unknown>) : root;
  const out: DockerConfigEntry[] = [];
  for (const [key, value] of Object.entries(auths)) {
    if (typeof value !== 'object' || value === null) continue;
    const raw = value as RawAuth;
    let username = typeof raw.username === 'string' ? raw.username : '';
    let password = typeof raw.password === 'string' ? raw.password : '';
    // Buffer.from decodes whatever base64 characters it finds, so garbage would become a
    // credential; docker and the kubelet accept padded standard base64, line breaks skipped
    // (as `base64` writes a long key).
    const auth = typeof raw.auth === 'string' ? raw.auth.replace(/[\r\n]/g, '') : '';
    if (auth !== '' && strictBase64.test(auth)) {
      const decoded = Buffer.from(auth, 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      if (i > 0) {
        username = decoded.slice(0, i);
        password = decoded.slice(i + 1);
      }
    }
    const label = `${labelPrefix} ${key}`;
    if (typeof raw.registrytoken === 'string' && raw.registrytoken !== '') {
      out.push({ key, credential: { kind: 'registry-token', token: raw.registrytoken, label } });
    } else if (typeof raw.identitytoken === 'string' && raw.identitytoken !== '') {
      out.push({ key, credential: { kind: 'identity-token', username, token: raw.identitytoken, label } });
    } else if (username !== '' && password !== '') {
      out.push({ key, credential: { kind: 'basic', username, password, label } });
    }
  }
  return out;
}

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com']);

interface ParsedKey {
  host: string;
  port: string;
  path: string;
}

function parseKey(key: string): ParsedKey | undefined {
  let k = key
    .trim()
    .toLowerCase()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//, '');
  // `https://index.docker.io/v1/` is Docker Hub itself, not a path prefix inside it.
  if (/^index\.docker\.io\/v[12]\/?$/.test(k)) k = 'docker.io';
  const slash = k.indexOf('/');
  const hostPort = slash < 0 ? k : k.slice(0, slash);
  const path = slash < 0 ? '' : k.slice(slash + 1).replace(/\/+$/, '');
  const m = /^([^:]+)(?::(\d+))?$/.exec(hostPort);
  if (!m?.[1]) return undefined;
  return { host: m[1], port: m[2] ?? '', path };
}

function hostMatches(pattern: string, host: string): boolean {
  if (DOCKER_HUB_HOSTS.has(pattern) && DOCKER_HUB_HOSTS.has(host)) return true;
  const p = pattern.split('.');
  const h = host.split('.');
  if (p.length !== h.length) return false;
  return p.every((label, i) => label === h[i] || (label.includes('*') && globLabel(label, h[i] ?? '')));
}

/**
 * `*` matches any run of characters inside the label; everything else matches itself. Both sides
 * come from users (a pull secret's key, a pod's image), so the match backtracks to the last `*`
 * only: at worst pattern length times label length steps. (A regex with one `[^.]*` per `*` took
 * seconds for six stars against a 60-character label, and grew exponentially with each star.)
 */
export function globLabel(pattern: string, label: string): boolean {
  let p = 0;
  let l = 0;
  let star = -1;
  let resume = 0;
  while (l < label.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      resume = l;
    } else if (p < pattern.length && pattern[p] === label[l]) {
      p++;
      l++;
    } else if (star >= 0) {
      p = star + 1;
      l = ++resume;
    } else {
      return false;
    }
  }
  while (pattern[p] === '*') p++;
  return p === pattern.length;
}

/**
 * The entries that apply to registry/repository, most specific first, as the kubelet matches
 * image pull secrets: host (with `*` globs per label, Docker Hub aliases equal), the same port,
 * and a path that is a prefix of the repository.
 */
export function matchDockerConfig(
  entries: readonly DockerConfigEntry[],
  registry: string,
  repository: string,
): Credential[] {
  const target = parseKey(registry);
  if (!target) return [];
  const scored: { score: number; credential: Credential }[] = [];
  for (const e of entries) {
    const k = parseKey(e.key);
    if (k?.port !== target.port || !hostMatches(k.host, target.host)) continue;
    if (k.path !== '' && repository !== k.path && !repository.startsWith(`${k.path}/`)) continue;
    scored.push({
      score: k.host.length + k.path.length * 2 + (k.host.includes('*') ? 0 : 1000),
      credential: e.credential,
    });
  }
  return scored.sort((a, b) => b.score - a.score).map((s) => s.credential);
}

/** The `--registry-credentials` file as a source. */
export class StaticCredentialSource implements CredentialSource {
  private readonly entries: readonly DockerConfigEntry[];
  constructor(entries: readonly DockerConfigEntry[]) {
    this.entries = entries;
  }
  credentialsFor(req: CredentialRequest): Promise<readonly Credential[]> {
    return Promise.resolve(matchDockerConfig(this.entries, req.registry, req.repository));
  }
}
