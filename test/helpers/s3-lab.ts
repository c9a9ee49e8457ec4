/**
 * The cache registry on object storage as the e2e tests run it: the lab's radosgw behind a logging
 * front (the registries presign URLs naming the front, so every object read is in its log), the
 * replicas run as manifests/overlays/s3-registry runs them (test/manifests/s3-overlay.ts), and a
 * TCP balancer standing in for their Service.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import type { Dispatcher } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { startOverlayRegistry } from '../manifests/s3-overlay.js';
import type { Lab } from './lab.js';
import { testRegistryClient } from './registry-client.js';

/** `KEY=VALUE` lines of a lab script's output. */
export function vars(out: string): Record<string, string> {
  const v: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_0-9]+)=(.*)$/.exec(line.trim());
    if (m) v[m[1] as string] = m[2] as string;
  }
  return v;
}

export interface S3Keys {
  readonly accessKey: string;
  readonly secretKey: string;
}

/** radosgw on s3Port (it takes s3Port..s3Port+12); the caller stops it with `lab.down('s3')`. */
export async function startS3(lab: Lab, s3Port: number): Promise<S3Keys> {
  const v = vars(await lab.script('s3-up.sh', ['s3', String(s3Port)]));
  return { accessKey: v.S3_ACCESS_KEY ?? '', secretKey: v.S3_SECRET_KEY ?? '' };
}

/** registry-up.sh flags for the bucket at `endpoint`, under `root`. */
export function onS3Flags(endpoint: string, keys: S3Keys, root: string, ...more: string[]): string[] {
  return [
    '--s3',
    endpoint,
    '--s3-root',
    root,
    '--s3-access-key',
    keys.accessKey,
    '--s3-secret-key',
    keys.secretKey,
    ...more,
  ];
}

/** The overlay's registry as `name` on `port`, on the bucket at `endpoint` under `root`. */
export async function startReplica(
  lab: Lab,
  name: string,
  port: number,
  endpoint: string,
  keys: S3Keys,
  root = '/cache',
): Promise<void> {
  await startOverlayRegistry(
    join(lab.dir, name),
    port,
    {
      'pullthrough-registry-s3/access-key': keys.accessKey,
      'pullthrough-registry-s3/secret-key': keys.secretKey,
      'pullthrough-registry-s3/http-secret': 'the-replicas-share-this',
    },
    {
      REGISTRY_HTTP_ADDR: `127.0.0.1:${port}`,
      REGISTRY_STORAGE_S3_REGIONENDPOINT: endpoint,
      REGISTRY_STORAGE_S3_SECURE: 'false',
      REGISTRY_STORAGE_S3_BUCKET: 'registry',
      REGISTRY_STORAGE_S3_ROOTDIRECTORY: root,
    },
  );
}

export interface Balancer {
  /** The replicas new connections go to (a Service's ready endpoints); open connections stay. */
  setUpstreams(ports: readonly number[]): void;
  close(): Promise<void>;
}

export interface BalancerOptions {
  /**
   * On a refused connection, try the next replica (default). Off, the client's connection is
   * closed as a Service does when its endpoint refuses.
   */
  readonly retryRefused?: boolean;
}

/** Round robin over the replicas: a Service over its ready endpoints. */
export async function startBalancer(
  port: number,
  upstreams: readonly number[],
  opts: BalancerOptions = {},
): Promise<Balancer> {
  const retry = opts.retryRefused ?? true;
  let current = [...upstreams];
  const sockets = new Set<Socket>();
  let next = 0;
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const attempt = (left: number): void => {
      if (current.length === 0) {
        client.destroy();
        return;
      }
      const up = current[next++ % current.length] as number;
      const upstream = connect(up, '127.0.0.1');
      upstream.once('error', () => {
        upstream.destroy();
        if (retry && left > 1 && !client.destroyed) attempt(left - 1);
        else client.destroy();
      });
      upstream.once('connect', () => {
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        upstream.removeAllListeners('error');
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    attempt(current.length);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    setUpstreams(ports) {
      current = [...ports];
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A registry store on the registry at `url`, as a node proxy builds it. */
export function s3StoreFor(
  url: string,
  dispatcher: Dispatcher,
  creds?: { username: string; password: string },
): RegistryStore {
  return new RegistryStore(testRegistryClient(url, { name: 'cache', dispatcher, creds, timeoutMs: 10_000 }), 'cache');
}
