/**
 * The cache registry as manifests/overlays/s3-registry renders it: its config.yml and its
 * container's environment (Secret references resolved from a given map), run on this machine as
 * the Deployment runs it, so the e2e tests on object storage exercise the overlay itself. What an
 * operator sets for their own bucket (endpoint, bucket, root, listen address) is given as
 * REGISTRY_* variables, as distribution reads overrides.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

const overlay = fileURLToPath(new URL('../../manifests/overlays/s3-registry', import.meta.url));

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}

interface Container {
  name: string;
  env?: EnvVar[];
  lifecycle?: { preStop?: { exec?: { command?: string[] } } };
  readinessProbe?: { httpGet?: { path?: string } };
}

interface Rendered {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: {
    strategy?: { type?: string; rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string } };
    template: { spec: { terminationGracePeriodSeconds?: number; containers: Container[] } };
  };
}

/** How the Deployment replaces a registry replica. */
export interface Rollout {
  readonly type: string | undefined;
  readonly maxSurge: number | string | undefined;
  readonly maxUnavailable: number | string | undefined;
  /** The registry container's readiness probe path. */
  readonly readinessPath: string | undefined;
  /** Its preStop command. */
  readonly preStop: readonly string[] | undefined;
  readonly terminationGracePeriodSeconds: number | undefined;
}

export interface OverlayRegistry {
  /** The ConfigMap's config.yml, verbatim. */
  readonly config: string;
  /** The registry container's environment, Secret references as `secret:NAME/KEY`. */
  readonly env: readonly EnvVar[];
  readonly rollout: Rollout;
}

export function renderS3Registry(): OverlayRegistry {
  const out = execFileSync('kubectl', ['kustomize', overlay], { encoding: 'utf8' });
  const objs = parseAllDocuments(out)
    .map((d) => d.toJS() as Rendered)
    .filter(Boolean);
  const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('pullthrough-registry-config'));
  const dep = objs.find((o) => o.kind === 'Deployment' && o.metadata.name === 'pullthrough-registry');
  const config = cm?.data?.['config.yml'];
  const container = dep?.spec?.template.spec.containers.find((c) => c.name === 'registry');
  if (config === undefined || !container) throw new Error('the overlay renders no registry config or container');
  const spec = dep?.spec;
  return {
    config,
    env: container.env ?? [],
    rollout: {
      type: spec?.strategy?.type,
      maxSurge: spec?.strategy?.rollingUpdate?.maxSurge,
      maxUnavailable: spec?.strategy?.rollingUpdate?.maxUnavailable,
      readinessPath: container.readinessProbe?.httpGet?.path,
      preStop: container.lifecycle?.preStop?.exec?.command,
      terminationGracePeriodSeconds: spec?.template.spec.terminationGracePeriodSeconds,
    },
  };
}

/**
 * Starts docker-registry in `dir` with the overlay's config and environment; `secrets` answers
 * its Secret references (`NAME/KEY`), `overrides` are the operator's REGISTRY_* settings. The
 * pid file is where the lab's registry-down.sh stops it.
 */
export async function startOverlayRegistry(
  dir: string,
  port: number,
  secrets: Record<string, string>,
  overrides: Record<string, string>,
): Promise<void> {
  const { config, env } = renderS3Registry();
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.yml'), config);
  const vars: Record<string, string> = {};
  for (const e of env) {
    const ref = e.valueFrom?.secretKeyRef;
    const v = ref ? secrets[`${ref.name}/${ref.key}`] : e.value;
    if (v === undefined) throw new Error(`no value for ${e.name}`);
    vars[e.name] = v;
  }
  const { AWS_CA_BUNDLE: _caBundle, ...inherited } = process.env;
  const log = openSync(join(dir, 'registry.log'), 'a');
  // Without AWS_CA_BUNDLE (set on the lab machine): the s3 driver panics on it.
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...inherited, ...vars, ...overrides },
  });
  child.unref();
  writeFileSync(join(dir, 'registry.pid'), String(child.pid));
  for (let i = 0; i < 100; i++) {
    const up = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the overlay's registry did not start on ${port}; see ${join(dir, 'registry.log')}`);
}
