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
  readonly resource: string;
  readonly type: EventType;
  readonly object: KubeObject;
  /** The object before a MODIFIED, so a filtered watch can turn it into ADDED or DELETED. */
  readonly previous?: KubeObject;
}

export class ApiError extends Error {
  constructor(readonly body: StatusBody) {
    super(body.message);
  }
}

const key = (namespace: string | undefined, name: string): string => `${namespace ?? ''}/${name}`;

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
    let t = this.objects.get(type.resource);
    if (!t) this.objects.set(type.resource, (t = new Map<string, KubeObject>()));
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

  create(type: ResourceType, input: KubeObject, namespace?: string): KubeObject {
    const obj = this.normalise(type, input, namespace);
    const meta = obj.metadata as ObjectMeta;
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
  replace(type: ResourceType, input: KubeObject, namespace?: string): KubeObject {
    const obj = this.normalise(type, input, namespace);
    const meta = obj.metadata as ObjectMeta;
    const name = meta.name ?? '';
    const current = this.table(type).get(key(meta.namespace, name));
    if (!current) throw new ApiError(notFound(type.kind, name));
    if (meta.resourceVersion && meta.resourceVersion !== current.metadata?.resourceVersion) {
      throw new ApiError(conflict(type.kind, name));
    }
    meta.uid = current.metadata?.uid;
    meta.creationTimestamp = current.metadata?.creationTimestamp;
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
    this.emit({ rv: this.rv, resource: type.resource, type: 'DELETED', object: gone });
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
      resource: type.resource,
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
