/**
 * client-node's Watch with the deadlines it lacks. Its fetch has no timeout (1.x builds one and
 * then overwrites it), so a watch to an API server that accepts the connection and never answers,
 * or vanishes without a reset, would leave the informer waiting forever and its index frozen.
 * Here a watch must connect within `connectTimeoutMs` and see an event or bookmark at least every
 * `idleTimeoutMs`; otherwise it is abandoned and the informer gets an error, which restarts it.
 * It also asks for bookmarks (so a resume after a quiet period does not need a relist) and for a
 * server-side timeout, as client-go does.
 */
import * as k8s from '@kubernetes/client-node';

export interface WatchDeadlines {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Asked of the server; it ends the watch cleanly after this long and the informer resumes. */
  readonly timeoutSeconds: number;
}

export class WatchDeadlineError extends Error {
  constructor(readonly phase: 'connect' | 'idle') {
    super(phase === 'connect' ? 'watch did not connect in time' : 'watch went silent');
    this.name = 'WatchDeadlineError';
  }
}

type Params = Record<string, string | number | boolean | undefined>;
// The parent's callback type: watch events are untyped JSON.
type Callback = Parameters<k8s.Watch['watch']>[2];

export class DeadlineWatch extends k8s.Watch {
  private readonly live = new Set<AbortController>();
  private closed = false;

  constructor(
    config: k8s.KubeConfig,
    private readonly deadlines: WatchDeadlines,
    private readonly onConnected: () => void = () => {
      // Nobody to tell by default.
    },
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Params,
    callback: Callback,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.closed) {
      // ListWatch can start a watch after stop() when a list was in flight; refuse quietly.
      const c = new AbortController();
      c.abort();
      return c;
    }
    let settled = false;
    // finish() may run (connect deadline) before super.watch() resolves: a const would still be in its TDZ.
    // eslint-disable-next-line prefer-const
    let controller: AbortController | undefined;
    let idle: NodeJS.Timeout | undefined;
    const finish = (err: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connect);
      clearTimeout(idle);
      if (controller) this.live.delete(controller);
      done(err);
    };
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        controller?.abort();
        finish(new WatchDeadlineError('idle'));
      }, this.deadlines.idleTimeoutMs);
      idle.unref();
    };
    const connect = setTimeout(() => finish(new WatchDeadlineError('connect')), this.deadlines.connectTimeoutMs);
    connect.unref();
    const params: Params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.deadlines.timeoutSeconds };
    const ctl = await super.watch(
      path,
      params,
      (phase, obj, raw) => {
        if (settled) return;
        arm();
        callback(phase, obj, raw);
      },
      finish,
    );
    controller = ctl;
    clearTimeout(connect);
    // Both change in callbacks during the await above, which TypeScript's narrowing does not see.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (settled || this.closed) {
      // Failed, abandoned on the connect deadline, or closed meanwhile.
      ctl.abort();
      return ctl;
    }
    this.live.add(ctl);
    arm();
    this.onConnected();
    return ctl;
  }

  /** Aborts every watch this object started, including any the ListWatch lost track of. */
  close(): void {
    this.closed = true;
    for (const c of this.live) c.abort();
    this.live.clear();
  }
}
