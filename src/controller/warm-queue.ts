/**
 * Fetches CachedImages into the cache: every object whose current generation is not yet Cached
 * (a new one, a changed spec, a used image back from Expiring) is warmed through the proxy's own
 * pull path, a few at a time; its status says Caching, then Cached with digest, size and
 * platforms, or Failed with a short reason, retried with exponential backoff. An image that pods
 * already pulled costs a few store lookups. Events on every change of state; never a credential in
 * a status, an Event or a log line (the reasons come from typed errors that name no secret).
 */
import type { CachedImage, CachedImageApi } from '../kube/cached-images.js';
import { describeKubeError } from '../kube/errors.js';
import type { EventRecorder } from '../kube/event-recorder.js';
import type { KubeLogger } from '../kube/logger.js';
import type { SecretCredentials } from '../kube/secret-credentials.js';
import type { Credential } from '../oci/credentials.js';
import { parseReference } from '../oci/reference.js';

/** What a warm needs from the proxy's pull path (src/proxy/prewarm.ts). */
export interface ImageWarmer {
  warm(req: {
    readonly image: string;
    readonly platforms?: readonly string[] | 'all';
    readonly credentials?: readonly Credential[];
    readonly signal?: AbortSignal;
  }): Promise<{ readonly digest: string; readonly size: number; readonly platforms: readonly string[] }>;
}

export interface WarmQueueOptions {
  readonly api: CachedImageApi;
  readonly warmer: ImageWarmer;
  readonly secrets: SecretCredentials;
  readonly events?: EventRecorder;
  readonly log: KubeLogger;
  /** Warms at once. Default 2. */
  readonly concurrency?: number;
  /** Retry delays after a failure: doubling from `initialMs` to `maxMs`. Default 10 s to 10 min. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly now?: () => number;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** Bytes in binary units, as `kubectl get ci` shows them: `512 B`, `1.5 MiB`. */
export function humanSize(bytes: number): string {
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${String(v)} B` : `${v.toFixed(1)} ${UNITS[u] ?? ''}`;
}

/** A failure's reason for status and Events: the typed error's message, short, one line. */
function reasonOf(err: unknown): string {
  const text = err instanceof Error ? err.message : describeKubeError(err).reason;
  return text.replace(/\s+/g, ' ').slice(0, 300);
}

export class WarmQueue {
  private readonly o: WarmQueueOptions & { now: () => number };
  private readonly running = new Map<string, Promise<void>>();
  private readonly retries = new Map<string, { attempts: number; at: number; generation: number }>();

  constructor(opts: WarmQueueOptions) {
    this.o = { now: Date.now, ...opts };
  }

  /** Warms being made now. */
  get active(): number {
    return this.running.size;
  }

  /**
   * Starts warms for the objects that need one, up to the concurrency, and returns at once. When
   * `leading` aborts (leadership lost), the warms stop and write nothing more.
   */
  schedule(objects: readonly CachedImage[], leading: AbortSignal): void {
    for (const o of objects) {
      if (this.running.size >= (this.o.concurrency ?? 2)) break;
      if (!this.due(o)) continue;
      const name = o.metadata.name;
      this.running.set(
        name,
        this.warm(o, leading).finally(() => this.running.delete(name)),
      );
    }
  }

  /** Resolves when every warm started has ended. */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private due(o: CachedImage): boolean {
    if (this.running.has(o.metadata.name)) return false;
    const s = o.status;
    const generation = o.metadata.generation ?? 1;
    if (s?.phase === 'Expiring') return false;
    if (s?.phase === 'Cached' && s.observedGeneration === generation) return false;
    const retry = this.retries.get(o.metadata.name);
    if (!retry) return true;
    // A failure waits out its backoff, unless the spec changed since.
    return retry.generation !== generation || this.o.now() >= retry.at;
  }

  private async warm(o: CachedImage, leading: AbortSignal): Promise<void> {
    const name = o.metadata.name;
    const generation = o.metadata.generation ?? 1;
    const target = { apiVersion: 'pullthrough.dev/v1alpha1', kind: 'CachedImage', name, uid: o.metadata.uid };
    // Read afresh each time: leadership can end during any await.
    const stopped = (): boolean => leading.aborted;
    try {
      await this.o.api.patchStatus(name, { phase: 'Caching', message: null });
      void this.o.events?.record(target, 'Normal', 'Caching', `fetching ${o.spec.image} into the cache`);
      const ref = parseReference(o.spec.image);
      const credentials = o.spec.pullSecretRef
        ? await this.o.secrets(o.spec.pullSecretRef, ref.registry, ref.repository)
        : [];
      const platforms = o.spec.platforms?.includes('all') ? 'all' : o.spec.platforms;
      if (stopped()) return;
      const r = await this.o.warmer.warm({
        image: o.spec.image,
        credentials,
        signal: leading,
        ...(platforms !== undefined ? { platforms } : {}),
      });
      if (stopped()) return;
      await this.o.api.patchStatus(name, {
        phase: 'Cached',
        observedGeneration: generation,
        digest: r.digest,
        size: r.size,
        sizeText: humanSize(r.size),
        platforms: r.platforms,
        message: null,
      });
      this.retries.delete(name);
      void this.o.events?.record(target, 'Normal', 'Cached', `${o.spec.image} cached: ${humanSize(r.size)}`);
    } catch (err) {
      if (stopped()) return;
      const attempts = (this.retries.get(name)?.attempts ?? 0) + 1;
      const { initialMs, maxMs } = this.o.backoff ?? { initialMs: 10_000, maxMs: 600_000 };
      const delay = Math.min(maxMs, initialMs * 2 ** (attempts - 1));
      this.retries.set(name, { attempts, at: this.o.now() + delay, generation });
      const reason = reasonOf(err);
      this.o.log.warn({ cachedImage: name, image: o.spec.image, reason, retryInMs: delay }, 'pre-warm failed');
      await this.o.api
        .patchStatus(name, { phase: 'Failed', observedGeneration: generation, message: reason })
        .catch((e: unknown) => {
          this.o.log.warn({ cachedImage: name, err: describeKubeError(e) }, 'CachedImage status write failed');
        });
      void this.o.events?.record(target, 'Warning', 'CacheFailed', reason);
    }
  }
}
