/**
 * From a request's repository name (and containerd's `ns` query) to the origin it stands for.
 * Two forms: the rewritten `<encoded registry>/<repository>` the webhook writes into pods, and
 * the mirror form `<repository>?ns=<registry>` containerd sends to a hosts.toml mirror (with
 * `override_path`, the mirror path may carry the encoded registry too: it is then dropped).
 *
 * containerd also adds `?ns=<host of the reference>` when it sends a request to any host other
 * than the one the reference names. A rewritten reference (`localhost:7439/docker.io/...`) that
 * reaches the cluster proxy as the next host in hosts.toml therefore carries `ns=localhost:7439`:
 * an `ns` naming the proxy itself (`--proxy-hosts`) means the rewritten form.
 */
import { OciError } from '../oci/errors.js';
import { cacheRepositoryName, decodeName, decodeRegistry } from '../oci/encoding.js';
import { isValidRepository, normalizeRegistry } from '../oci/reference.js';
import type { HostList } from '../oci/host-pattern.js';

export interface Target {
  readonly registry: string;
  readonly repository: string;
  /** The repository's name in the cache: `<encoded registry>/<repository>`. */
  readonly cacheRepo: string;
}

export function resolveTarget(name: string, ns: string | undefined, allowed: HostList, self?: HostList): Target {
  let registry: string;
  let repository: string;
  if (ns !== undefined && self?.matches(normalizeRegistry(ns) ?? ns)) ns = undefined;
  if (ns !== undefined) {
    const r = normalizeRegistry(ns);
    if (r === undefined) throw new OciError('NAME_INVALID', `invalid ns registry ${JSON.stringify(ns.slice(0, 100))}`);
    registry = r;
    repository = name;
    const slash = name.indexOf('/');
    if (slash > 0 && decodeRegistry(name.slice(0, slash)) === registry) repository = name.slice(slash + 1);
    if (!isValidRepository(repository))
      throw new OciError('NAME_INVALID', `invalid repository name ${JSON.stringify(repository.slice(0, 300))}`);
  } else {
    const d = decodeName(name);
    const slash = name.indexOf('/');
    if (!d && slash > 0 && decodeRegistry(name.slice(0, slash)) !== undefined) {
      // The rewritten form, with a repository part that is no valid name.
      throw new OciError(
        'NAME_INVALID',
        `invalid repository name ${JSON.stringify(name.slice(slash + 1, slash + 301))}`,
      );
    }
    if (!d) {
      throw new OciError(
        'NAME_UNKNOWN',
        `${JSON.stringify(name.slice(0, 300))} names no registry: expected <registry>/<repository> ` +
          '(e.g. docker.io/library/nginx) or a ?ns= query',
      );
    }
    registry = d.registry;
    repository = d.repository;
  }
  if (!allowed.matches(registry)) throw new OciError('DENIED', `registry ${registry} is not in --allowed-registries`);
  let cacheRepo: string;
  try {
    cacheRepo = cacheRepositoryName(registry, repository);
  } catch (err) {
    throw new OciError('NAME_INVALID', (err as Error).message);
  }
  return { registry, repository, cacheRepo };
}
