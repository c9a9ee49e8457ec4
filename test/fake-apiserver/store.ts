/**
 * The fake API server's state: objects by resource, one resourceVersion counter for everything
 * (as etcd has), and an event history that watches replay from and that `compact` forgets, so
 * that a watch from a forgotten resourceVersion gets 410 Gone as it would from a real server.
 */
import { randomUUID } from 'node:crypto';
import { alreadyExists, conflict, notFound, status, type StatusBody } from './status.js';
import type { ResourceType } from './resources.js';

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [k: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [k: string]: unknown;
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  readonly rv: number;
  /** `apiVersion/plural`: events of core/v1 and events.k8s.io/v1 are kept apart. */
  readonly resource: string;
  readonly type: EventType;
  readonly object: KubeObject;
  /** The object before a MODIFIED, so a filtered watch can turn it into ADDED or DELETED. */
  readonly previous?: KubeObject;
}

/**
 * Which part of an object a write may change, for types with a status subresource: `object`
 * (the resource's own path: status is kept), `status` (the `/status` path: only status changes),
 * `all` (test control).
 */
export type WritePart = 'object' | 'status' | 'all';

/** Everything but metadata and status, as JSON: what `metadata.generation` counts changes of. */
function specOf(o: KubeObject): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return JSON.stringify(rest);
}

export class ApiError extends Error {
  constructor(readonly body: StatusBody) {
    super(body.message);
  }
}

const key = (namespace: string | undefined, name: string): string => `${namespace ?? ''}/${name}`;

export const typeKey = (type: ResourceType): string => `${type.apiVersion}/${type.resource}`;

export class Store {
  /** Starts above zero: "0" means "any version" to the API, never a real one. */
  private rv = 100;
  private compactedAt = 0;
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private history: StoredEvent[] = [];
  private readonly listeners = new Set<(e: StoredEvent) => void>();

  get resourceVersion(): number {
    return this.rv;
  }

  get compactedResourceVersion(): number {
    return this.compactedAt;
  }

  private table(type: ResourceType): Map<string, KubeObject> {
    let t = this.objects.get(typeKey(type));
    if (!t) this.objects.set(typeKey(type), (t = new Map<string, KubeObject>()));
    return t;
  }

  get(type: ResourceType, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.table(type).get(key(type.namespaced ? namespace : undefined, name));
    return o ? structuredClone(o) : undefined;
  }

  list(type: ResourceType, namespace?: string): KubeObject[] {
    return [...this.table(type).values()]
      .filter((o) => namespace === undefined || o.metadata?.namespace === namespace)
      .map((o) => structuredClone(o));
  }

  create(type: ResourceType, input: KubeObject, namespace?: string, part: WritePart = 'all'): KubeObject {
    const obj = this.normalise(type, input, namespace);
    const meta = obj.metadata as ObjectMeta;
    if (type.statusSubresource) {
      // A create through the API drops the status, as for any CRD with a status subresource.
      if (part !== 'all') delete obj.status;
      meta.generation = 1;
    }
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    if (!meta.name)
      throw new ApiError(status(422, 'Invalid', `${type.kind} is invalid: metadata.name: Required value`));
    const k = key(meta.namespace, meta.name);
    if (this.table(type).has(k)) throw new ApiError(alreadyExists(type.kind, meta.name));
    meta.uid = meta.uid ?? randomUUID();
    meta.creationTimestamp = meta.creationTimestamp ?? new Date().toISOString();
    return this.commit(type, 'ADDED', obj);
  }

  /** A PUT: the object must exist; a resourceVersion in the body must be the current one. */
  replace(type: ResourceType, input: KubeObject, namespace?: string, part: WritePart = 'all'): KubeObject {
    let obj = this.normalise(type, input, namespace);
    const name = obj.metadata?.name ?? '';
    const current = this.table(type).get(key(obj.metadata?.namespace, name));
    if (!current) throw new ApiError(notFound(type.kind, name));
    const rv = obj.metadata?.resourceVersion;
    if (rv && rv !== current.metadata?.resourceVersion) throw new ApiError(conflict(type.kind, name));
    if (type.statusSubresource && part === 'status') {
      obj = { ...structuredClone(current), status: obj.status };
    } else if (type.statusSubresource && part === 'object') {
      obj = { ...obj, status: structuredClone(current.status) };
      if (obj.status === undefined) delete obj.status;
    }
    const meta = obj.metadata as ObjectMeta;
    meta.uid = current.metadata?.uid;
    meta.creationTimestamp = current.metadata?.creationTimestamp;
    if (type.statusSubresource) {
      const generation = Number(current.metadata?.generation ?? 1);
      meta.generation = specOf(obj) === specOf(current) ? generation : generation + 1;
    }
    return this.commit(type, 'MODIFIED', obj, current);
  }

  /** Test control: create, or replace whatever is there regardless of its resourceVersion. */
  upsert(type: ResourceType, input: KubeObject): KubeObject {
    const obj = this.normalise(type, input, input.metadata?.namespace);
    const meta = obj.metadata as ObjectMeta;
    const current = this.table(type).get(key(meta.namespace, meta.name ?? ''));
    if (!current) return this.create(type, obj);
    delete meta.resourceVersion;
    return this.replace(type, obj);
  }

  delete(type: ResourceType, namespace: string | undefined, name: string): KubeObject {
    const k = key(type.namespaced ? namespace : undefined, name);
    const current = this.table(type).get(k);
    if (!current) throw new ApiError(notFound(type.kind, name));
    this.table(type).delete(k);
    this.rv++;
    const gone = structuredClone(current);
    (gone.metadata as ObjectMeta).resourceVersion = String(this.rv);
    this.emit({ rv: this.rv, resource: typeKey(type), type: 'DELETED', object: gone });
    return gone;
  }

  /** Events after `since`, or 'expired' when some of them may have been forgotten. */
  eventsSince(since: number): StoredEvent[] | 'expired' {
    if (since < this.compactedAt) return 'expired';
    return this.history.filter((e) => e.rv > since);
  }

  /** Forgets history up to `upTo` (default: everything so far). */
  compact(upTo = this.rv): void {
    this.compactedAt = Math.max(this.compactedAt, upTo);
    this.history = this.history.filter((e) => e.rv > this.compactedAt);
  }

  /** Moves the counter without touching an object, as writes to unrelated resources do. */
  bump(by = 1): number {
    this.rv += by;
    return this.rv;
  }

  subscribe(fn: (e: StoredEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private normalise(type: ResourceType, input: KubeObject, namespace: string | undefined): KubeObject {
    const obj = structuredClone(input);
    obj.apiVersion = type.apiVersion;
    obj.kind = type.kind;
    const meta: ObjectMeta = { ...(obj.metadata ?? {}) };
    if (type.namespaced) meta.namespace = meta.namespace ?? namespace ?? 'default';
    else delete meta.namespace;
    if (type.namespaced && namespace !== undefined && meta.namespace !== namespace) {
      throw new ApiError(
        status(
          400,
          'BadRequest',
          'the namespace of the provided object does not match the namespace sent on the request',
        ),
      );
    }
    obj.metadata = meta;
    return obj;
  }

  private commit(type: ResourceType, eventType: EventType, obj: KubeObject, previous?: KubeObject): KubeObject {
    this.rv++;
    const meta = obj.metadata as ObjectMeta;
    meta.resourceVersion = String(this.rv);
    this.table(type).set(key(meta.namespace, meta.name ?? ''), obj);
    this.emit({
      rv: this.rv,
      resource: typeKey(type),
      type: eventType,
      object: structuredClone(obj),
      ...(previous ? { previous } : {}),
    });
    return structuredClone(obj);
  }

  private emit(e: StoredEvent): void {
    this.history.push(e);
    for (const fn of this.listeners) fn(e);
  }
}
