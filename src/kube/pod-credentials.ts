/**
 * The registry credentials of the pods on this node. For one pod and one repository: the pod's
 * `imagePullSecrets`, then its ServiceAccount's, each read from the pod's own namespace and
 * matched as the kubelet matches them. Nothing here throws into the caller: a missing, forbidden
 * or garbled secret is skipped with a reason that names the secret and never shows its content.
 */
import NodeCache from 'node-cache';
import { credentialIdentity, matchDockerConfig, type DockerConfigEntry } from '../oci/credentials.js';
import { CachedReader, type CacheTimes, type ReadResult } from './cached-reader.js';
import type { KubeClient } from './client.js';
import { silentLogger, type KubeLogger } from './logger.js';
import type { PodIndex } from './pod-index.js';
import { parsePullSecret } from './pull-secrets.js';
import type { PodCredential, PodRef } from './types.js';

export interface PodCredentialsOptions {
  readonly client: KubeClient;
  /** The node's pods, usually `NodePodInformer.index`. */
  readonly index: PodIndex;
  readonly logger?: KubeLogger;
  /** Defaults: fresh 30 s, last good value kept 5 min for outages, outage remembered 5 s. */
  readonly cache?: Partial<CacheTimes>;
}

export interface SkippedSource {
  /** `secret ns/name` or `serviceaccount ns/name`. */
  readonly source: string;
  readonly reason: string;
}

export interface PodCredentialLookup {
  readonly pod: PodRef;
  /** False when the pod is not (or no longer) on this node. */
  readonly known: boolean;
  readonly credentials: PodCredential[];
  readonly skipped: SkippedSource[];
}

const DEFAULT_TIMES: CacheTimes = { ttlSeconds: 30, staleSeconds: 300, unreachableSeconds: 5 };

export class PodCredentials {
  private readonly index: PodIndex;
  private readonly log: KubeLogger;
  private readonly secrets: CachedReader<DockerConfigEntry[]>;
  private readonly serviceAccounts: CachedReader<string[]>;
  /** Which skip reasons were already logged, so a broken secret warns once, not on every pull. */
  private readonly warned = new NodeCache({ stdTTL: 300, checkperiod: 60, useClones: false });

  constructor(options: PodCredentialsOptions) {
    this.index = options.index;
    this.log = options.logger ?? silentLogger;
    const times = { ...DEFAULT_TIMES, ...options.cache };
    const core = options.client.core;
    this.secrets = new CachedReader(async (namespace, name) => {
      const secret = await core.readNamespacedSecret({ namespace, name });
      // Only the parsed pull credentials are kept, never the rest of the Secret.
      return parsePullSecret(secret, `secret ${namespace}/${name}`);
    }, times);
    this.serviceAccounts = new CachedReader(async (namespace, name) => {
      const sa = await core.readNamespacedServiceAccount({ namespace, name });
      return (sa.imagePullSecrets ?? []).flatMap((r) => (r.name ? [r.name] : []));
    }, times);
  }

  /** The pods on this node that use registry/repository. */
  podsUsing(registry: string, repository: string): PodRef[] {
    return this.index.podsUsing(registry, repository);
  }

  async credentialsFor(pod: PodRef, registry: string, repository: string): Promise<PodCredential[]> {
    return (await this.lookup(pod, registry, repository)).credentials;
  }

  /** Like credentialsFor, with what was skipped and why, for the "pod lacked access" log line. */
  async lookup(pod: PodRef, registry: string, repository: string): Promise<PodCredentialLookup> {
    const spec = this.index.pod(pod)?.spec;
    if (!spec) return { pod, known: false, credentials: [], skipped: [] };
    const skipped: SkippedSource[] = [];
    const names: string[] = [];
    const add = (name: string | undefined): void => {
      if (name && !names.includes(name)) names.push(name);
    };
    for (const ref of spec.imagePullSecrets ?? []) add(ref.name);
    const saName = spec.serviceAccountName || 'default';
    const sa = await this.serviceAccounts.read(pod.namespace, saName);
    if (sa.ok) sa.value.forEach(add);
    else skipped.push(this.skip(pod, `serviceaccount ${pod.namespace}/${saName}`, sa));

    const results = await Promise.all(
      names.map(async (name) => [name, await this.secrets.read(pod.namespace, name)] as const),
    );
    const credentials: PodCredential[] = [];
    const seen = new Set<string>();
    for (const [name, r] of results) {
      if (!r.ok) {
        skipped.push(this.skip(pod, `secret ${pod.namespace}/${name}`, r));
        continue;
      }
      for (const c of matchDockerConfig(r.value, registry, repository)) {
        const id = credentialIdentity(c);
        if (seen.has(id)) continue;
        seen.add(id);
        credentials.push({ ...c, pod, pods: [pod] });
      }
    }
    return { pod, known: true, credentials, skipped };
  }

  close(): void {
    this.secrets.close();
    this.serviceAccounts.close();
    this.warned.close();
  }

  private skip(pod: PodRef, source: string, r: ReadResult<unknown> & { ok: false }): SkippedSource {
    const reason = r.failure.reason;
    const key = `${source}\0${reason}`;
    if (!this.warned.has(key)) {
      this.warned.set(key, true);
      const fields = {
        pod: `${pod.namespace}/${pod.name}`,
        source,
        reason,
        ...(r.failure.code !== undefined ? { status: r.failure.code } : {}),
      };
      this.log.warn(fields, 'skipping an image pull secret source of a pod');
    }
    return { source, reason };
  }
}
