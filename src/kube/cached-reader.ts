/**
 * Reads single API objects by name, briefly cached: the proxy reads the few secrets and
 * ServiceAccounts that pods on its node name, when it needs them, instead of watching every secret
 * in the cluster. Three layers, all in node-cache:
 *  - fresh answers (the value, or a definitive NotFound/Forbidden) for `ttlSeconds`, so a password
 *    rotated in the cluster is picked up within that time;
 *  - the last good value for `staleSeconds`, served only while the API server is unreachable;
 *  - "unreachable" for `unreachableSeconds`, so during an outage callers fail at once instead of
 *    each waiting out a request timeout.
 * Concurrent reads of one key share one request.
 */
import NodeCache from 'node-cache';
import { describeKubeError, type KubeFailure } from './errors.js';

export type ReadResult<T> =
  | { readonly ok: true; readonly value: T; readonly stale: boolean }
  | { readonly ok: false; readonly failure: KubeFailure };

export interface CacheTimes {
  readonly ttlSeconds: number;
  readonly staleSeconds: number;
  readonly unreachableSeconds: number;
}

/** Turns a fetched object into what is kept; throwing here is a definitive, cached failure. */
export type Fetch<T> = (namespace: string, name: string) => Promise<T>;

export class CachedReader<T> {
  private readonly fresh: NodeCache;
  private readonly lastGood: NodeCache;
  private readonly down: NodeCache;
  private readonly inflight = new Map<string, Promise<ReadResult<T>>>();

  constructor(
    private readonly fetch: Fetch<T>,
    times: CacheTimes,
  ) {
    const opts = { useClones: false, checkperiod: 60 };
    this.fresh = new NodeCache({ ...opts, stdTTL: times.ttlSeconds });
    this.lastGood = new NodeCache({ ...opts, stdTTL: times.staleSeconds });
    this.down = new NodeCache({ ...opts, stdTTL: times.unreachableSeconds });
  }

  read(namespace: string, name: string): Promise<ReadResult<T>> {
    const key = `${namespace}/${name}`;
    const cached = this.fresh.get<ReadResult<T>>(key);
    if (cached) return Promise.resolve(cached);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const downFailure = this.down.get<KubeFailure>(key);
    if (downFailure) return Promise.resolve(this.staleOr(key, downFailure));
    const p = this.load(key, namespace, name).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Drops everything cached for a key. */
  forget(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    this.fresh.del(key);
    this.lastGood.del(key);
    this.down.del(key);
  }

  close(): void {
    this.fresh.close();
    this.lastGood.close();
    this.down.close();
  }

  private async load(key: string, namespace: string, name: string): Promise<ReadResult<T>> {
    try {
      const value = await this.fetch(namespace, name);
      const r: ReadResult<T> = { ok: true, value, stale: false };
      this.fresh.set(key, r);
      this.lastGood.set(key, value);
      this.down.del(key);
      return r;
    } catch (err) {
      const failure = describeKubeError(err);
      if (failure.unreachable) {
        this.down.set(key, failure);
        return this.staleOr(key, failure);
      }
      // NotFound, Forbidden, a garbled object: the API server's answer, cached like a value.
      const r: ReadResult<T> = { ok: false, failure };
      this.fresh.set(key, r);
      this.lastGood.del(key);
      return r;
    }
  }

  private staleOr(key: string, failure: KubeFailure): ReadResult<T> {
    const last = this.lastGood.get<T>(key);
    return last !== undefined ? { ok: true, value: last, stale: true } : { ok: false, failure };
  }
}
