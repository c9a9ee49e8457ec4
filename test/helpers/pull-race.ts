/**
 * Pulls that race a collection: workers (a containerd, an HTTP client) pull in a loop from before
 * the deletes until after the sweep, each pull recorded with the collection phase it started and
 * ended in, so a test can show which pulls overlapped which step and wait on a worker's progress
 * (an event) instead of sleeping. Also reads what a lab containerd stored, with `ctr`, as an
 * operator would check it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import type { Test } from 'tap';
import { request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { registryRequests, type Lab } from './lab.js';
import type { TestProxy } from './proxy.js';
import { eventually } from './wait.js';

const run = promisify(execFile);

/** The steps of a collection, in order. */
export const PHASES = ['before', 'deleting', 'held', 'swept', 'after'] as const;
export type Phase = (typeof PHASES)[number];

export interface PullRecord {
  readonly worker: string;
  readonly repo: string;
  readonly started: Phase;
  readonly ended: Phase;
  /** Empty when the pull succeeded and its content checked out; otherwise why not. */
  readonly failure: string;
}

export class PullRace {
  readonly records: PullRecord[] = [];
  private phaseIndex = 0;
  private readonly loops: Promise<void>[] = [];
  private readonly inFlight = new Map<string, Phase>();
  private entered: () => void = () => undefined;
  /** Resolves at the next enter(). */
  private nextPhase = new Promise<void>((r) => (this.entered = r));

  get phase(): Phase {
    return PHASES[this.phaseIndex] as Phase;
  }

  enter(phase: Phase): void {
    this.phaseIndex = PHASES.indexOf(phase);
    const entered = this.entered;
    this.nextPhase = new Promise<void>((r) => (this.entered = r));
    entered();
  }

  /**
   * Starts a worker pulling `repo` with `pullOnce` (which throws when the pull failed or its
   * content is wrong) until it has done `minPulls` and one pull that started after the collection;
   * back to back, or with `oncePerPhase` one pull per phase (the next waits for the next phase).
   */
  worker(
    name: string,
    repo: string,
    minPulls: number,
    pullOnce: () => Promise<void>,
    opts: { oncePerPhase?: boolean } = {},
  ): void {
    this.loops.push(
      (async () => {
        let done = 0;
        let last: Phase | undefined;
        for (;;) {
          if (opts.oncePerPhase && last === this.phase) await this.nextPhase;
          const started = this.phase;
          last = started;
          this.inFlight.set(name, started);
          const failure = await pullOnce().then(
            () => '',
            (err: unknown) => (err as Error).message || String(err),
          );
          this.inFlight.delete(name);
          this.records.push({ worker: name, repo, started, ended: this.phase, failure });
          done++;
          if (started === 'after' && done >= minPulls) return;
        }
      })(),
    );
  }

  /** Waits until every worker has started a pull in `phase` or later (under way or done). */
  async eachStartedIn(phase: Phase, workers: readonly string[]): Promise<void> {
    const at = PHASES.indexOf(phase);
    await eventually(
      () =>
        workers.every((w) => {
          const inFlight = this.inFlight.get(w);
          return (
            (inFlight !== undefined && PHASES.indexOf(inFlight) >= at) ||
            this.records.some((r) => r.worker === w && PHASES.indexOf(r.started) >= at)
          );
        }),
      `every worker to start a pull in phase ${phase}`,
      120_000,
    );
  }

  /** Waits until every worker has finished a pull that started in `phase` (or later). */
  async eachFinishedFrom(phase: Phase, workers: readonly string[]): Promise<void> {
    const at = PHASES.indexOf(phase);
    await eventually(
      () => workers.every((w) => this.records.some((r) => r.worker === w && PHASES.indexOf(r.started) >= at)),
      `every worker to finish a pull started in phase ${phase}`,
      180_000,
    );
  }

  /** Resolves when every worker has stopped (call after enter('after')). */
  async done(): Promise<PullRecord[]> {
    await Promise.all(this.loops);
    return this.records;
  }
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function ctr(lab: Lab, node: string, args: string[]): Promise<Buffer> {
  return run('ctr', ['-a', `${lab.dir}/${node}/containerd.sock`, '-n', 'k8s.io', ...args], {
    encoding: 'buffer',
    maxBuffer: 256 * 1024 * 1024,
  }).then((r) => r.stdout);
}

/** The manifest digest containerd recorded for `ref` (the CRI plugin's namespace), if any. */
export async function ctrImageTarget(lab: Lab, node: string, ref: string): Promise<string | undefined> {
  const out = (await ctr(lab, node, ['images', 'ls'])).toString('utf8');
  for (const line of out.split('\n').slice(1)) {
    const [name, , digest] = line.split(/\s+/);
    if (name === ref) return digest;
  }
  return undefined;
}

/** The sha256 of the bytes containerd's content store holds under `digest`. */
export async function ctrContentDigest(lab: Lab, node: string, digest: string): Promise<string> {
  return sha256(await ctr(lab, node, ['content', 'get', digest]));
}

/**
 * Checks what containerd stored for a pulled image: the image record names `manifest`, and the
 * manifest and each of `blobs` hash to their digests. Throws saying what differs.
 */
export async function checkStoredImage(
  lab: Lab,
  node: string,
  ref: string,
  manifest: string,
  blobs: readonly string[],
): Promise<void> {
  const target = await ctrImageTarget(lab, node, ref);
  if (target !== manifest) throw new Error(`containerd recorded ${ref} as ${target ?? 'nothing'}, not ${manifest}`);
  for (const d of [manifest, ...blobs]) {
    const got = await ctrContentDigest(lab, node, d);
    if (got !== d) throw new Error(`containerd's content ${d} hashes to ${got}`);
  }
}

/** What every collection race asserts of its records, on either backend. */
export function checkRaceRecords(
  t: Test,
  records: readonly PullRecord[],
  p: TestProxy,
  want: Record<'team/kept' | 'team/removed', { readonly blobs: readonly string[] }>,
): void {
  const summary = records.map((r) => `${r.worker} ${r.started}->${r.ended}${r.failure ? ` FAILED ${r.failure}` : ''}`);
  const byContainerd = records.filter((r) => r.worker.startsWith('containerd'));
  const byClients = records.filter((r) => r.worker.startsWith('client'));
  t.ok(
    byContainerd.length >= 10 && byClients.length >= 10,
    `${byContainerd.length} containerd and ${byClients.length} client pulls`,
  );
  t.ok(
    byContainerd.some(
      (r) => r.started !== 'swept' && r.started !== 'after' && r.ended !== 'held' && r.ended !== 'before',
    ),
    'a containerd pull was under way while garbage-collect ran',
    { summary },
  );
  for (const repo of ['team/kept', 'team/removed'] as const) {
    for (const phase of ['before', 'held', 'swept', 'after'] as const) {
      t.ok(
        records.some((r) => r.repo === repo && r.started === phase),
        `${repo} was pulled from the step "${phase}"`,
      );
    }
  }
  for (const repo of ['team/kept', 'team/removed'] as const) {
    // The config is the image's own blob (containerd keeps the shared layer while the other image names it).
    const config = want[repo].blobs[0] as string;
    const pulls = records.filter((r) => r.repo === repo).length;
    const configGets = p
      .logs()
      .filter((l) => l.msg === 'request' && l.method === 'GET' && String(l.path).endsWith(`/${repo}/blobs/${config}`));
    t.ok(configGets.length >= pulls, `every pull of ${repo} fetched through the proxy, containerd's too`, {
      pulls,
      configGets: configGets.length,
    });
  }
  t.same(
    records.filter((r) => r.repo === 'team/kept' && r.failure),
    [],
    'no pull of the kept image failed; each was byte-identical (containerd: its stored content hashed)',
  );
}

/** The origin registry of a collection race: its access log, its images, and pulls of them. */
export class RaceOrigin {
  constructor(
    private readonly lab: Lab,
    private readonly host: string,
    private readonly dir: string,
  ) {}

  /** GETs of a blob the origin answered, from its access log. */
  gets(repo: string, digest: string): number {
    return registryRequests(this.dir).filter(
      (r) => r.method === 'GET' && r.path.startsWith(`/v2/${repo}/blobs/${digest}`),
    ).length;
  }

  /** An image's manifest digest and its config and layers, as the origin has them. */
  async image(repo: string): Promise<{ digest: string; blobs: string[] }> {
    const m = await request(`http://${this.host}/v2/${repo}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    const bytes = Buffer.from(await m.body.arrayBuffer());
    const doc = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    return { digest, blobs: [doc.config.digest, ...doc.layers.map((l) => l.digest)] };
  }

  /** The kubelet's pull of an image through the node proxy, then what containerd stored, checked. */
  async criPull(p: TestProxy, repo: string, want: { digest: string; blobs: string[] }): Promise<void> {
    const ref = `${p.host}/${this.host.replace(':', '_')}/${repo}:v1`;
    // --fresh: the image and its content leave containerd first, so every pull fetches every blob.
    const r = await this.lab.criPull('node', ref, ['--fresh', '--timeout', '120']);
    if (r.image_ref !== want.blobs[0]) throw new Error(`containerd pull of ${repo}: ${JSON.stringify(r)}`);
    await checkStoredImage(this.lab, 'node', ref, want.digest, want.blobs);
  }
}

type RaceImages = Record<'team/kept' | 'team/removed', { readonly digest: string; readonly blobs: string[] }>;

/**
 * The race's pullers: containerd pulls each image over and over, ten HTTP clients (`clientPull`,
 * which answers the manifest digest it got) pull once in each step, from before the deletes until
 * after the sweep. Returns the workers' names.
 */
export function startRaceWorkers(
  race: PullRace,
  origin: RaceOrigin,
  p: TestProxy,
  want: RaceImages,
  clientPull: (repo: string) => Promise<string>,
): string[] {
  const workers: string[] = [];
  for (const repo of ['team/kept', 'team/removed'] as const) {
    workers.push(`containerd ${repo}`);
    race.worker(`containerd ${repo}`, repo, 5, () => origin.criPull(p, repo, want[repo]));
  }
  for (let i = 0; i < 10; i++) {
    const repo = i % 2 === 0 ? 'team/kept' : 'team/removed';
    workers.push(`client ${i}`);
    race.worker(
      `client ${i}`,
      repo,
      1,
      async () => {
        const digest = await clientPull(repo);
        if (digest !== want[repo].digest) throw new Error(`${repo} pulled as ${digest}`);
      },
      { oncePerPhase: true },
    );
  }
  return workers;
}
