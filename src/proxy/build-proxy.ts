/**
 * Wires a node proxy from its configuration: the origin, cache-registry and cluster-tier clients,
 * the store, the blob fills, the access checks and the pull service behind the HTTP server. Tests build their
 * proxies here too, so they run the same wiring as the `pullthrough proxy` command.
 */
import { join } from 'node:path';
import { Agent, type Dispatcher } from 'undici';
import { AccessControl, type PodDirectory } from '../access/access-control.js';
import { LocalPeers } from '../access/node-peers.js';
import { originHopAuthorizer } from '../access/hop-credential.js';
import { registryProbe } from '../access/origin-probe.js';
import { PrivacyBook } from '../access/privacy.js';
import { BlobFills } from '../cache/blob-fills.js';
import { isDiskFull, SpoolError } from '../cache/spool-writer.js';
import { FsStore } from '../cache/fs-store.js';
import type { WriteHold } from '../cache/write-hold.js';
import { NoSpaceError, SpaceGuard } from '../cache/space-guard.js';
import { CacheBudgetError, resolveStoreBudget, type StoreBudget } from '../cache/store-budget.js';
import { RegistryStore } from '../cache/registry-store.js';
import { ResilientStore } from '../cache/resilient-store.js';
import type { Store } from '../cache/store.js';
import type { ProxyConfig } from '../config/proxy.js';
import { ExecCredentialProviders } from '../oci/credential-provider.js';
import { StaticCredentialSource, type CredentialSource } from '../oci/credentials.js';
import { createEgressPolicy, egressTarget, guardedConnector, InternalTargets } from '../oci/egress.js';
import { parseHostList } from '../oci/host-pattern.js';
import { DOCKER_HUB, DOCKER_HUB_ENDPOINT } from '../oci/reference.js';
import { RegistryClient } from '../oci/registry-client.js';
import { reportResponseBytes } from '../oci/response-bytes.js';
import type { Logger } from '../observability/logger.js';
import { ProxyMetrics } from '../observability/metrics.js';
import { YoungGcPacer, type CollectYoung } from '../runtime/young-gc.js';
import { Prewarmer, WarmCredentials } from './prewarm.js';
import { baseUrl, ClusterTier, ReplicaList } from './cluster-tier.js';
import { credentialRefusalLog } from './credential-refusals.js';
import { BlobRedirects } from './blob-source.js';
import { RedirectCache } from './redirect-cache.js';
import type { StaleSink } from './tag-resolver.js';
import { PullService, type ServeGate } from './pull-service.js';
import { createProxyServer } from './server.js';

const VERSION = '0.1.0';
const USER_AGENT = `pullthrough/${VERSION}`;
const CACHE_HOST = 'cache-registry';

export interface ProxyDeps {
  readonly log: Logger;
  readonly metrics?: ProxyMetrics;
  /** Extra credential sources tried before --registry-credentials (the pods' secrets). */
  readonly podCredentials?: CredentialSource;
  /**
   * The pods on this node (src/kube's PodCredentials). With it, private images are served from
   * the cache only under the access model of docs/credentials.md; without it, every cached copy
   * is served (standalone, no pods to check against).
   */
  readonly pods?: PodDirectory;
  /**
   * A young-generation collection, run after every few MiB received from registries so that dead
   * socket buffers are freed early (src/runtime/young-gc.ts). Without it, V8 decides alone.
   */
  readonly collectYoung?: CollectYoung;
  /** Told of every tag served stale because its origin could not confirm it (pod Events). */
  readonly onStale?: StaleSink;
  /** The vulnerability gate (--scan-policy enforce refuses what it denies); none: everything is served. */
  readonly gate?: ServeGate;
  /**
   * Writes to the cache registry wait while it holds (a collection runs there:
   * docs/garbage-collection.md). Without it, writes never wait.
   */
  readonly writeHold?: WriteHold;
}

/**
 * Received bytes between two young-generation collections (see ProxyDeps.collectYoung): often
 * enough to keep streaming's peak RSS down, rarely enough to cost no measurable CPU.
 */
const YOUNG_GC_EVERY_BYTES = 8 * 1024 * 1024;

/** The cluster proxy has no pods to check against: a private image only with node-wide credentials. */
const NO_PODS: PodDirectory = {
  podsUsing: () => [],
  lookup: () => Promise.resolve({ known: false, credentials: [], skipped: [] }),
};

export interface BuiltProxy {
  readonly app: ReturnType<typeof createProxyServer>;
  readonly pull: PullService;
  /** The origin client, with its egress policy (a pre-warm's refresh HEADs through it). */
  readonly origin: RegistryClient;
  readonly store: ResilientStore;
  readonly fills: BlobFills;
  readonly metrics: ProxyMetrics;
  readonly access: AccessControl | undefined;
  /** Stops serving: in-flight requests get `graceMs` (default 10 s), then connections are cut. */
  close(graceMs?: number): Promise<void>;
}

/** Wires a node proxy from its configuration. The returned server is not listening yet. */
export function buildProxy(config: ProxyConfig, deps: ProxyDeps): BuiltProxy {
  const { log } = deps;
  const metrics = deps.metrics ?? new ProxyMetrics();
  const insecure = parseHostList(config.insecureRegistries);
  const allowed = parseHostList(config.allowedRegistries);
  const staticCreds = new StaticCredentialSource(config.credentials);
  const providers = config.credentialProviders
    ? new ExecCredentialProviders({
        ...config.credentialProviders,
        events: {
          invoked: (plugin) => log.debug({ plugin }, 'credential provider plugin run'),
          failed: (err, image) =>
            log.warn(
              { plugin: err.plugin, image, code: err.code, reason: err.reason },
              'credential provider plugin failed; pulling without its credentials',
            ),
        },
      })
    : undefined;
  // Pods' own credentials first, then the node's: --registry-credentials and the kubelet's plugins.
  const sources = [deps.podCredentials, staticCreds, providers].filter((s) => s !== undefined);
  const credentials: CredentialSource =
    sources.length === 1
      ? staticCreds
      : {
          async credentialsFor(req) {
            const lists = await Promise.all(sources.map((s) => s.credentialsFor(req)));
            return lists.flat();
          },
        };

  const pacer = deps.collectYoung ? new YoungGcPacer(deps.collectYoung, YOUNG_GC_EVERY_BYTES) : undefined;
  const paced = (agent: Agent): Dispatcher => (pacer ? agent.compose(reportResponseBytes(pacer.note)) : agent);
  // Loopback only for the host:port pairs the operator named. Origins named by a pod spec may be
  // on private ranges (in-cluster registries); where an origin sends us (redirects, token realms)
  // may be too when the origin itself is, else only when named: a public origin does not steer the
  // proxy, or the credentials it holds, into the private network.
  const named = [...insecure.patterns, ...allowed.patterns];
  const internalOrigins = new InternalTargets();
  const originAgent = new Agent({
    connect: guardedConnector(createEgressPolicy({ named, privateRanges: 'any' }), {
      timeoutMs: config.originConnectTimeoutMs,
      onConnect: (target, addresses) => internalOrigins.note(target, addresses),
    }),
    headersTimeout: config.originTimeoutMs,
    bodyTimeout: config.originIdleTimeoutMs,
    keepAliveTimeout: 30_000,
  });
  const elsewhereAgent = new Agent({
    connect: guardedConnector(createEgressPolicy({ named, privateRanges: 'named' }), {
      timeoutMs: config.originConnectTimeoutMs,
    }),
    headersTimeout: config.originTimeoutMs,
    bodyTimeout: config.originIdleTimeoutMs,
    keepAliveTimeout: 30_000,
  });
  const originDispatcher = paced(originAgent);
  const elsewhereDispatcher = paced(elsewhereAgent);
  const originBase = (registry: string): string => {
    if (registry === DOCKER_HUB) return `https://${DOCKER_HUB_ENDPOINT}`;
    return `${insecure.matches(registry) ? 'http' : 'https'}://${registry}`;
  };
  const origin = new RegistryClient({
    name: 'origin',
    dispatcher: originDispatcher,
    elsewhere: (registry) =>
      internalOrigins.has(egressTarget(new URL(originBase(registry)))) ? originDispatcher : elsewhereDispatcher,
    baseUrl: originBase,
    credentials,
    userAgent: USER_AGENT,
    headersTimeoutMs: config.originTimeoutMs,
    bodyTimeoutMs: config.originIdleTimeoutMs,
    onRefused: credentialRefusalLog(log),
  });

  let inner: Store;
  /** The embedded store's budget (--max-cache-size). */
  let budget: StoreBudget | undefined;
  let cacheAgent: Agent | undefined;
  let cacheRedirectAgent: Agent | undefined;
  let blobRedirects: BlobRedirects | undefined;
  if (config.cacheRegistry) {
    const cacheRegistry = config.cacheRegistry;
    const base = cacheRegistry.toString().replace(/\/+$/, '');
    // The cache registry is configured by the operator, so its own address is trusted as given.
    cacheAgent = new Agent({
      connect: guardedConnector(createEgressPolicy({ named: [cacheRegistry.host], privateRanges: 'any' }), {
        timeoutMs: config.cacheTimeoutMs,
      }),
      headersTimeout: config.cacheTimeoutMs,
      bodyTimeout: config.originIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    // Where the cache registry redirects blob reads (its object store, e.g. presigned S3 URLs) is
    // set by its storage configuration, which the operator wrote: trusted as the registry is
    // (private ranges allowed), but loopback still only where named, and link-local never.
    cacheRedirectAgent = new Agent({
      connect: guardedConnector(createEgressPolicy({ named: [cacheRegistry.host, ...named], privateRanges: 'any' }), {
        timeoutMs: config.cacheTimeoutMs,
      }),
      headersTimeout: config.cacheTimeoutMs,
      bodyTimeout: config.originIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    const cacheRedirectDispatcher = paced(cacheRedirectAgent);
    const cacheClient = new RegistryClient({
      name: 'cache',
      dispatcher: paced(cacheAgent),
      elsewhere: () => cacheRedirectDispatcher,
      baseUrl: () => base,
      credentials: {
        credentialsFor: async (req) =>
          staticCreds.credentialsFor({ registry: cacheRegistry.host, repository: req.repository }),
      },
      userAgent: USER_AGENT,
      headersTimeoutMs: config.cacheTimeoutMs,
      bodyTimeoutMs: config.originIdleTimeoutMs,
    });
    inner = new RegistryStore(cacheClient, CACHE_HOST, deps.writeHold);
  } else {
    budget = config.maxCacheSize
      ? resolveStoreBudget(config.maxCacheSize, config.cacheLowWater, config.dataDir)
      : undefined;
    const fs = new FsStore(config.dataDir, {
      ...(budget ? { budget } : {}),
      onEvicted: (digest, bytes) => {
        metrics.evictions.inc();
        metrics.evictedBytes.inc(bytes);
        log.debug({ digest, bytes }, 'evicted from the embedded store (least recently used)');
      },
    });
    metrics.trackCacheUsage(() => fs.usedBytes);
    inner = fs;
  }
  const store = new ResilientStore(
    inner,
    {
      storeFailed: (op, err) => {
        if (err instanceof CacheBudgetError) {
          metrics.uncached.inc({ reason: 'too-large' });
          log.info({ op, bytes: err.bytes, err: err.message }, 'too large to cache: served from the origin');
          return;
        }
        metrics.storeFailures.inc({ op });
        metrics.fallbacks.inc({ reason: 'cache-failed' });
        if (isDiskFull(err)) {
          metrics.diskFull.inc({ where: 'store' });
          log.warn(
            { op, store: inner.kind, where: 'store', err: err.message },
            'disk full: the cache store cannot be written; serving from the origin without caching',
          );
          return;
        }
        log.warn(
          { op, store: inner.kind, err: err.message },
          'cache store failed; serving from the origin without caching',
        );
      },
      storeSkipped: () => metrics.fallbacks.inc({ reason: 'cache-skipped' }),
      storeRecovered: () => log.info({ store: inner.kind }, 'cache store answers again'),
    },
    config.cacheCooldownMs,
  );
  // A cluster proxy relays: the node proxies asking it fill from its answer, and its tier client
  // takes a redirect for no answer (it would go to the origin instead).
  if (config.cacheRegistry && config.blobRedirect === 'auto' && !config.clusterSelf) {
    // A hold that tells when it is held (the collection Lease's reader) empties the remembered
    // redirects while a collection may remove blobs.
    const hold = deps.writeHold;
    const held = hold?.held === undefined ? undefined : () => hold.held === true;
    blobRedirects = new BlobRedirects(store, new RedirectCache(held ? { paused: held } : {}));
  }
  const fills = new BlobFills({
    tmpDir: join(config.dataDir, 'tmp'),
    store,
    space: new SpaceGuard({ dir: join(config.dataDir, 'tmp'), ...(budget ? { budget } : {}) }),
    spoolCooldownMs: config.cacheCooldownMs,
    // Uploads to the cache registry yield to pulls in progress, which they would slow down; a
    // rename into the embedded store costs nothing.
    ...(inner.kind === 'registry' ? { commitDeferMs: 30_000, commitConcurrency: 2 } : {}),
    events: {
      onVerified: (f) => {
        metrics.fills.inc({ result: 'verified' });
        metrics.fillBytes.inc(f.written);
        // Its whole spool was written: there is space again.
        store.noteWritten();
      },
      onFailed: (f, err) => {
        if (err instanceof CacheBudgetError) {
          metrics.uncached.inc({ reason: 'too-large' });
          log.info(
            { repo: f.repo, digest: f.digest, bytes: err.bytes, err: err.message },
            'too large to cache: served from the origin, verified, uncached',
          );
          return;
        }
        metrics.fills.inc({ result: 'failed' });
        // A spool failure has had its line (onSpoolFailed), once for the fill.
        if (err instanceof SpoolError) return;
        log.warn(
          { repo: f.repo, digest: f.digest, bytes: f.written, err: err.message },
          'blob fill failed; nothing was cached',
        );
      },
      onSpoolFailed: (f, err) => {
        metrics.storeFailures.inc({ op: 'spool' });
        const at = { repo: f.repo, digest: f.digest, bytes: f.written };
        if (err instanceof NoSpaceError) {
          metrics.uncached.inc({ reason: 'no-space' });
          metrics.diskFull.inc({ where: 'spool' });
          store.noteDiskFull();
          log.warn(
            { ...at, size: f.size, where: 'spool', code: 'ENOSPC', err: err.message },
            'disk full: not enough free space to cache this blob; serving it from the origin without caching',
          );
          return;
        }
        if (isDiskFull(err)) {
          metrics.diskFull.inc({ where: 'spool' });
          store.noteDiskFull();
          log.warn(
            { ...at, where: 'spool', code: 'ENOSPC' },
            'disk full: the spool cannot be written; serving from the origin without caching',
          );
          return;
        }
        log.warn({ ...at, err: err.message }, 'spool failed; serving from the origin without caching');
      },
    },
  });
  metrics.trackFills(() => fills.size);
  const pods: PodDirectory | undefined =
    deps.pods ?? (config.privateImages === 'node-credentials' ? NO_PODS : undefined);
  const privacy = pods
    ? new PrivacyBook({
        file: join(config.dataDir, 'access', 'privacy.json'),
        onError: (op, err) =>
          log.warn(
            { op, err: err.message },
            'privacy record of repositories could not be read or written; kept in memory',
          ),
      })
    : undefined;
  const access =
    pods && privacy
      ? new AccessControl({
          pods,
          probe: registryProbe(origin),
          privacy,
          authTtlMs: config.authTtlMs,
          originDown: config.privateWhenOriginDown,
          originDownGraceMs: config.originDownGraceMs,
          log,
          ...(config.privateTo === 'node' ? { peers: new LocalPeers() } : {}),
          // A cluster proxy replica serves other nodes' fills: every request is checked first.
          ...(config.clusterSelf ? { checkEveryRequest: true } : {}),
          metrics: {
            refused: (reason) => metrics.accessRefusals.inc({ reason }),
            probed: (result) => metrics.accessProbes.inc({ result }),
            servedWhileOriginDown: () => metrics.accessServedOriginDown.inc(),
          },
        })
      : undefined;
  // The cluster proxies are configured by the operator: their addresses are trusted as given.
  const tierAgent =
    config.clusterProxies.length > 0
      ? new Agent({
          connect: guardedConnector(
            createEgressPolicy({ named: config.clusterProxies.map((u) => u.host), privateRanges: 'any' }),
            { timeoutMs: config.clusterTimeoutMs },
          ),
          headersTimeout: config.clusterTimeoutMs,
          bodyTimeout: config.originIdleTimeoutMs,
          keepAliveTimeout: 30_000,
        })
      : undefined;
  const tier = tierAgent
    ? new ClusterTier({
        replicas: new ReplicaList(config.clusterProxies),
        self: config.clusterSelf ? baseUrl(config.clusterSelf) : undefined,
        dispatcher: paced(tierAgent),
        cooldownMs: config.clusterCooldownMs,
        onUnavailable: (replica, reason) => {
          metrics.fallbacks.inc({ reason: 'cluster-failed' });
          log.warn(
            { replica, reason, cooldownMs: config.clusterCooldownMs },
            'cluster proxy did not answer; asking the origin directly',
          );
        },
        onSkipped: () => metrics.fallbacks.inc({ reason: 'cluster-skipped' }),
        // A node proxy passes its own credential for a private object; a replica only relays one.
        ...(config.clusterSelf ? {} : { authorize: originHopAuthorizer(origin, access) }),
      })
    : undefined;
  const pull = new PullService({
    origin,
    store,
    fills,
    tagTtlMs: config.tagTtlMs,
    platforms: config.platforms,
    log,
    ...(access ? { access } : {}),
    ...(tier ? { tier } : {}),
    events: {
      rateLimit: (registry, r) => metrics.noteRateLimit(registry, r),
      fallback: (reason) => metrics.fallbacks.inc({ reason }),
    },
    ...(deps.onStale ? { onStale: deps.onStale } : {}),
    ...(blobRedirects ? { blobRedirects } : {}),
    ...(deps.gate ? { gate: deps.gate } : {}),
  });
  metrics.trackWaiters(() => pull.blobWaiters);
  const ready = async (): Promise<{ caching: boolean; reason?: string }> => {
    await store.ping();
    if (store.diskFull) return { caching: false, reason: 'not caching: disk full' };
    if (store.degraded) return { caching: false, reason: 'not caching: cache store unreachable' };
    if (fills.spoolUnavailable) return { caching: false, reason: 'not caching: spool unavailable' };
    return { caching: true };
  };
  metrics.trackReadiness(ready);
  const app = createProxyServer({
    pull,
    allowed,
    self: parseHostList(config.proxyHosts),
    ready,
    log,
    metrics,
    // Only a replica that checks every request may take a node's credential for one.
    acceptOriginAuthorization: config.clusterSelf !== undefined && access !== undefined,
  });
  return {
    app,
    pull,
    origin,
    store,
    fills,
    metrics,
    access,
    async close(graceMs = 10_000) {
      // Cold fills stop at once (their clients resume elsewhere with Range); uploads still waiting
      // for quieter times run now, for a few seconds at most (the pod has 30 s to stop).
      await fills.flush(new Error('shutting down'), Math.min(5_000, graceMs / 2));
      fills.cancelAll(new Error('shutting down'));
      // Connections that sent no request yet (clients open them ahead) would hold close() until
      // the server's headers timeout: other in-flight answers get a grace period, then everything
      // is cut.
      const force = setTimeout(() => app.server.closeAllConnections(), graceMs);
      await app.close();
      clearTimeout(force);
      access?.close();
      privacy?.flush();
      await originAgent.close().catch(() => undefined);
      await elsewhereAgent.close().catch(() => undefined);
      await cacheAgent?.close().catch(() => undefined);
      await cacheRedirectAgent?.close().catch(() => undefined);
      await tierAgent?.close().catch(() => undefined);
      await inner.close();
    },
  };
}

export interface BuiltPrewarmer {
  readonly prewarmer: Prewarmer;
  readonly store: ResilientStore;
  close(): Promise<void>;
}

/**
 * The pull path without its HTTP server, for pre-warming (the CachedImage controller): the same
 * wiring and flags as a proxy, with no pods to check (it serves nobody) and each warm's own
 * credentials.
 */
export function buildPrewarmer(
  config: ProxyConfig,
  deps: { readonly log: Logger; readonly writeHold?: WriteHold },
): BuiltPrewarmer {
  const credentials = new WarmCredentials();
  const proxy = buildProxy(config, {
    log: deps.log,
    podCredentials: credentials,
    ...(deps.writeHold ? { writeHold: deps.writeHold } : {}),
  });
  const prewarmer = new Prewarmer({
    pull: proxy.pull,
    origin: proxy.origin,
    credentials,
    allowed: parseHostList(config.allowedRegistries),
    log: deps.log,
  });
  return { prewarmer, store: proxy.store, close: () => proxy.close() };
}
