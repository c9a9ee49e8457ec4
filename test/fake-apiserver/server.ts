/**
 * A small Kubernetes API server for tests: plain HTTP on 127.0.0.1, port 0, speaking the REST
 * protocol @kubernetes/client-node uses (list with resourceVersion, chunked watch streams of JSON
 * lines, 410 Gone for a compacted resourceVersion, field and label selectors, create/replace/
 * patch/delete, Status bodies on errors). The control methods let a test change the world
 * underneath a running client and look at what the client asked for.
 */

/* eslint-disable @typescript-eslint/no-confusing-void-expression --
  `return this.send(...)` ends an async request handler, as the config allows in sync void functions */ import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { jsonPatch, mergePatch, PatchError } from './patch.js';
import { parsePath, resourceByKind, type ParsedPath, type ResourceType } from './resources.js';
import { matchesFields, matchesLabels, parseSelector, type Requirement } from './selectors.js';
import { expired, notFound, status, type StatusBody } from './status.js';
import { ApiError, Store, typeKey, type KubeObject, type StoredEvent, type WritePart } from './store.js';

export interface FakeApiServerOptions {
  /** When set, every request must carry `Authorization: Bearer <token>`. */
  readonly token?: string;
  /**
   * How a watch from a compacted resourceVersion is refused: `event` (what kube-apiserver does:
   * 200 and one ERROR event carrying a 410 Status, then end of stream) or `http` (a 410 response).
   */
  readonly expiredWatch?: 'event' | 'http';
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType?: string;
  readonly watch: boolean;
}

interface OpenWatch {
  readonly res: ServerResponse;
  readonly type: ResourceType;
  readonly bookmarks: boolean;
  /** The last resourceVersion sent to this watcher, for bookmarks. */
  sent: number;
}

// The usual kinds, spelled out; any other is accepted too.
type Kind =
  // eslint-disable-next-line @typescript-eslint/no-redundant-type-constituents
  'Pod' | 'Secret' | 'ServiceAccount' | 'Event' | 'Lease' | 'CachedImage' | 'MutatingWebhookConfiguration' | string;

const part = (target: ParsedPath): WritePart => (target.subresource === 'status' ? 'status' : 'object');

export class FakeApiServer {
  readonly store = new Store();
  readonly requests: RecordedRequest[] = [];
  private readonly server: Server;
  private readonly watches = new Set<OpenWatch>();
  private readonly hung = new Set<ServerResponse>();
  private hanging = false;
  private listeningPort = 0;
  private running = false;
  private expiredWatch: 'event' | 'http';

  private constructor(private readonly options: FakeApiServerOptions) {
    this.expiredWatch = options.expiredWatch ?? 'event';
    this.server = createServer((req, res) => void this.handle(req, res));
    // Longer than any client's idle keep-alive (undici: 4 s), as kube-apiserver's is: a server
    // closing an idle connection just as a loaded client reuses it fails that request.
    this.server.keepAliveTimeout = 65_000;
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(options);
    await s.listen(0);
    return s;
  }

  get port(): number {
    return this.listeningPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.listeningPort}`;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Watch streams open right now. */
  get openWatches(): number {
    return this.watches.size;
  }

  // ---- control: objects ----

  /** Creates or replaces (no resourceVersion check), emitting ADDED or MODIFIED. */
  put<T extends KubeObject>(kind: Kind, obj: T): T {
    return this.store.upsert(this.type(kind), obj) as T;
  }

  remove(kind: Kind, namespace: string | undefined, name: string): void {
    this.store.delete(this.type(kind), namespace, name);
  }

  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names what it reads
  object<T extends KubeObject = KubeObject>(kind: Kind, namespace: string | undefined, name: string): T | undefined {
    return this.store.get(this.type(kind), namespace, name) as T | undefined;
  }

  addPod<T extends KubeObject>(pod: T): T {
    return this.put('Pod', pod);
  }
  updatePod<T extends KubeObject>(pod: T): T {
    return this.put('Pod', pod);
  }
  deletePod(namespace: string, name: string): void {
    this.remove('Pod', namespace, name);
  }
  putSecret<T extends KubeObject>(secret: T): T {
    return this.put('Secret', secret);
  }
  deleteSecret(namespace: string, name: string): void {
    this.remove('Secret', namespace, name);
  }
  putServiceAccount<T extends KubeObject>(sa: T): T {
    return this.put('ServiceAccount', sa);
  }
  deleteServiceAccount(namespace: string, name: string): void {
    this.remove('ServiceAccount', namespace, name);
  }

  // ---- control: watches and resourceVersions ----

  /** Forgets event history up to now: a watch resumed from an older resourceVersion gets 410. */
  compact(upTo?: number): void {
    this.store.compact(upTo);
  }

  /** Compacts and ends every watch, so clients come back with their old resourceVersion and get 410. */
  expireResourceVersions(): void {
    this.compact();
    this.closeWatches();
  }

  /** Ends every open watch stream cleanly, as the API server does when a watch times out. */
  closeWatches(): void {
    for (const w of this.watches) w.res.end();
    this.watches.clear();
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(): void {
    const rv = this.store.resourceVersion;
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      w.sent = rv;
      this.writeEvent(w.res, {
        type: 'BOOKMARK',
        object: { kind: w.type.kind, apiVersion: w.type.apiVersion, metadata: { resourceVersion: String(rv) } },
      });
    }
  }

  /** Moves the resourceVersion on, as writes elsewhere in the cluster do. */
  bumpResourceVersion(by = 1): number {
    return this.store.bump(by);
  }

  setExpiredWatchMode(mode: 'event' | 'http'): void {
    this.expiredWatch = mode;
  }

  // ---- control: availability ----

  /** While on, requests are accepted and never answered (an overloaded or partitioned server). */
  hang(on: boolean): void {
    this.hanging = on;
    if (!on) {
      for (const res of this.hung) res.destroy();
      this.hung.clear();
    }
  }

  /** Stops listening and drops every connection; the state is kept for `restart`. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.closeWatches();
    for (const res of this.hung) res.destroy();
    this.hung.clear();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  /** Listens again on the same port, with the same objects and history. */
  async restart(): Promise<void> {
    if (this.running) return;
    await this.listen(this.listeningPort);
  }

  async close(): Promise<void> {
    await this.stop();
  }

  // ---- control: what the client did ----

  /** Requests whose path equals `path` (or satisfies the predicate), optionally of one method. */
  count(path: string | ((r: RecordedRequest) => boolean), method?: string): number {
    const test = typeof path === 'string' ? (r: RecordedRequest) => r.path === path : path;
    return this.requests.filter((r) => test(r) && (method === undefined || r.method === method)).length;
  }

  /** Lists (not watches) of a path. */
  lists(path: string): number {
    return this.count((r) => r.path === path && r.method === 'GET' && !r.watch);
  }

  watchRequests(path: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path && r.watch);
  }

  // ---- HTTP ----

  private async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.listeningPort = (this.server.address() as AddressInfo).port;
    this.running = true;
  }

  private type(kind: Kind): ResourceType {
    const t = resourceByKind(kind);
    if (!t) throw new Error(`fake API server: unknown kind ${kind}`);
    return t;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    const method = req.method ?? 'GET';
    this.requests.push({
      method,
      path: url.pathname,
      query,
      watch,
      ...(req.headers['content-type'] ? { contentType: req.headers['content-type'] } : {}),
    });
    if (this.hanging) {
      this.hung.add(res);
      return;
    }
    try {
      if (this.options.token !== undefined && req.headers.authorization !== `Bearer ${this.options.token}`) {
        return this.send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      }
      const target = parsePath(url.pathname);
      if (!target)
        return this.send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
      const fields = parseSelector(query.fieldSelector);
      const labels = parseSelector(query.labelSelector);
      if (!fields || !labels) return this.send(res, 400, status(400, 'BadRequest', 'unable to parse requirement'));
      if (target.name === undefined) {
        if (method === 'GET' && watch) return this.watch(req, res, target, fields, labels, query);
        if (method === 'GET') return this.list(res, target, fields, labels);
        if (method === 'POST') {
          const created = this.store.create(
            target.type,
            (await this.body(req)) as KubeObject,
            target.namespace,
            'object',
          );
          return this.send(res, 201, created);
        }
        return this.send(res, 405, status(405, 'MethodNotAllowed', `${method} is not supported here`));
      }
      switch (method) {
        case 'GET': {
          const o = this.store.get(target.type, target.namespace, target.name);
          return o ? this.send(res, 200, o) : this.send(res, 404, notFound(target.type.kind, target.name));
        }
        case 'PUT': {
          const body = (await this.body(req)) as KubeObject;
          if (body.metadata?.name !== target.name) {
            return this.send(
              res,
              400,
              status(400, 'BadRequest', 'the name of the object does not match the name on the URL'),
            );
          }
          return this.send(res, 200, this.store.replace(target.type, body, target.namespace, part(target)));
        }
        case 'PATCH':
          return this.send(res, 200, await this.patch(req, target, target.name));
        case 'DELETE':
          if (target.subresource)
            return this.send(res, 405, status(405, 'MethodNotAllowed', 'DELETE is not supported on status'));
          return this.send(res, 200, this.store.delete(target.type, target.namespace, target.name));
        default:
          return this.send(res, 405, status(405, 'MethodNotAllowed', `${method} is not supported here`));
      }
    } catch (err) {
      if (err instanceof ApiError) return this.send(res, err.body.code, err.body);
      if (err instanceof PatchError) return this.send(res, 422, status(422, 'Invalid', err.message));
      if (err instanceof SyntaxError)
        return this.send(res, 400, status(400, 'BadRequest', `invalid JSON body: ${err.message}`));
      return this.send(res, 500, status(500, 'InternalError', String(err)));
    }
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  }

  private async patch(req: IncomingMessage, target: ParsedPath, name: string): Promise<KubeObject> {
    const current = this.store.get(target.type, target.namespace, name);
    if (!current) throw new ApiError(notFound(target.type.kind, name));
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
    const patch = await this.body(req);
    let patched: KubeObject;
    if (type === 'application/json-patch+json') patched = jsonPatch(current, patch) as KubeObject;
    // Strategic merge is plain merge here: the objects under test have no keyed lists to merge.
    else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
      patched = mergePatch(current, patch) as KubeObject;
    } else {
      throw new ApiError(
        status(
          415,
          'UnsupportedMediaType',
          'the body of the request was in an unknown format - accepted media types include: ' +
            'application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json',
        ),
      );
    }
    if (patched.metadata?.name !== name)
      throw new ApiError(status(422, 'Invalid', 'metadata.name: Invalid value: field is immutable'));
    return this.store.replace(target.type, patched, target.namespace, part(target));
  }

  private selected(
    o: KubeObject,
    target: ParsedPath,
    fields: readonly Requirement[],
    labels: readonly Requirement[],
  ): boolean {
    if (target.namespace !== undefined && o.metadata?.namespace !== target.namespace) return false;
    return matchesFields(o, fields) && matchesLabels(o.metadata?.labels, labels);
  }

  private list(
    res: ServerResponse,
    target: ParsedPath,
    fields: readonly Requirement[],
    labels: readonly Requirement[],
  ): void {
    // Items of a list carry no kind or apiVersion: the list does.
    const items = this.store
      .list(target.type, target.namespace)
      .filter((o) => this.selected(o, target, fields, labels))
      .map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    this.send(res, 200, {
      kind: `${target.type.kind}List`,
      apiVersion: target.type.apiVersion,
      metadata: { resourceVersion: String(this.store.resourceVersion) },
      items,
    });
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    target: ParsedPath,
    fields: readonly Requirement[],
    labels: readonly Requirement[],
    query: Record<string, string>,
  ): void {
    const rvParam = query.resourceVersion ?? '';
    const from = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    if (from !== undefined && !Number.isInteger(from)) {
      return this.send(res, 400, status(400, 'BadRequest', `invalid resource version ${JSON.stringify(rvParam)}`));
    }
    const replay = from === undefined ? undefined : this.store.eventsSince(from);
    if (replay === 'expired' && this.expiredWatch === 'http') return this.send(res, 410, expired(rvParam));
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Node holds headers back until the first write; the API server sends them at once, and a
    // client waits for them before it considers the watch established.
    res.flushHeaders();
    if (replay === 'expired') {
      this.writeEvent(res, { type: 'ERROR', object: expired(rvParam) });
      res.end();
      return;
    }
    const w: OpenWatch = { res, type: target.type, bookmarks: query.allowWatchBookmarks === 'true', sent: from ?? 0 };
    const deliver = (e: StoredEvent): void => {
      if (e.resource !== typeKey(target.type)) return;
      const now = this.selected(e.object, target, fields, labels);
      const before = e.previous !== undefined && this.selected(e.previous, target, fields, labels);
      let type: string | undefined;
      if (e.type === 'MODIFIED') type = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
      else if (now) type = e.type;
      if (!type) return;
      w.sent = e.rv;
      this.writeEvent(res, { type, object: e.object });
    };
    if (replay === undefined) {
      // "Get state and start at most recent": every current object as ADDED, then live events.
      for (const o of this.store.list(target.type, target.namespace)) {
        if (this.selected(o, target, fields, labels)) this.writeEvent(res, { type: 'ADDED', object: o });
      }
      w.sent = this.store.resourceVersion;
    } else {
      for (const e of replay) deliver(e);
    }
    const unsubscribe = this.store.subscribe(deliver);
    this.watches.add(w);
    const timeout = Number(query.timeoutSeconds);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    const cleanup = (): void => {
      unsubscribe();
      this.watches.delete(w);
      if (timer) clearTimeout(timer);
    };
    res.on('close', cleanup);
    req.on('close', cleanup);
  }

  private writeEvent(res: ServerResponse, event: { type: string; object: unknown }): void {
    if (!res.writableEnded) res.write(`${JSON.stringify(event)}\n`);
  }

  private send(res: ServerResponse, code: number, body: KubeObject | StatusBody): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}
