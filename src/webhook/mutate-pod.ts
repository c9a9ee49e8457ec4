/**
 * Turns a pod into the JSONPatch that points its images at the node proxy and records what was
 * done in annotations. Pure: no I/O, no fastify; the AdmissionReview layer calls it.
 */
import { pointerSegment, type JsonPatchOp } from './json-patch.js';
import {
  IGNORE_LABEL,
  IGNORE_LABEL_VALUE,
  NODE_READY_LABEL,
  ORIGINAL_IMAGES_ANNOTATION,
  SKIPPED_IMAGES_ANNOTATION,
  nodeIdentityReason,
  optInReason,
  type RewritePolicy,
} from './policy.js';
import type { WebhookSkipReason } from '../observability/metrics.js';
import { decideImage } from './rewrite-image.js';

export const CONTAINER_FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const;
export type ContainerField = (typeof CONTAINER_FIELDS)[number];

export interface MutationContext {
  namespace: string;
  /**
   * `ephemeralcontainers` when the request is the pods/ephemeralcontainers subresource: then only
   * ephemeral containers absent from `oldPod` may change (existing ones are immutable, and touching
   * them would get the whole request rejected), and metadata changes would be dropped by the API
   * server, so no annotation is written.
   */
  subresource?: string;
  oldPod?: unknown;
}

export interface PodMutation {
  patch: JsonPatchOp[];
  /** `field/name` -> original image, for what this call rewrote. */
  rewritten: Record<string, string>;
  /** `field/name` -> why it was left alone. */
  skipped: Record<string, string>;
  /** `field/name` -> the bounded reason it was left alone, for metrics. */
  skipKinds: Record<string, WebhookSkipReason>;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringRecord(v: unknown): Record<string, string> {
  if (!isObject(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

function parseAnnotationMap(text: unknown): Record<string, string> {
  if (typeof text !== 'string') return {};
  try {
    return stringRecord(JSON.parse(text));
  } catch {
    return {};
  }
}

function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** Why the whole pod is left alone, if it is. */
function podLevelSkip(
  pod: Json,
  ctx: MutationContext,
  policy: RewritePolicy,
): { reason: string; kind: WebhookSkipReason } | undefined {
  if (policy.excludedNamespaces.has(ctx.namespace))
    return { reason: `namespace ${ctx.namespace} is excluded`, kind: 'namespace-excluded' };
  const optIn = optInReason(ctx.namespace, policy);
  if (optIn) return optIn;
  const labels = isObject(pod.metadata) ? stringRecord(pod.metadata.labels) : {};
  if (labels[IGNORE_LABEL] === IGNORE_LABEL_VALUE)
    return { reason: `pod is labelled ${IGNORE_LABEL}=${IGNORE_LABEL_VALUE}`, kind: 'pod-ignored' };
  // Only a pod bound at admission (static, DaemonSet, spec.nodeName set by hand) names its node.
  const nodeName = isObject(pod.spec) && typeof pod.spec.nodeName === 'string' ? pod.spec.nodeName : '';
  if (nodeName && policy.nodeReadiness?.isNotReady(nodeName))
    return {
      reason: `node ${nodeName} is labelled ${NODE_READY_LABEL}=false (node-setup cannot serve it)`,
      kind: 'node-not-ready',
    };
  return undefined;
}

function containerNames(pod: unknown, field: ContainerField): Set<string> {
  const spec = isObject(pod) && isObject(pod.spec) ? pod.spec : {};
  const list = Array.isArray(spec[field]) ? (spec[field] as unknown[]) : [];
  return new Set(list.filter(isObject).map((c) => String(c.name)));
}

/** A container a request adds, with where it sits in the pod. */
export interface AddedContainer {
  readonly field: ContainerField;
  readonly index: number;
  readonly container: Record<string, unknown>;
}

/**
 * The containers a request adds, in field order: all of a new pod's; with the
 * `ephemeralcontainers` subresource only the ephemeral containers absent from `oldPod` (the
 * others are immutable). The rewrite and the vulnerability gate both walk this.
 */
export function addedContainers(pod: unknown, ctx: Pick<MutationContext, 'subresource' | 'oldPod'>): AddedContainer[] {
  if (!isObject(pod) || !isObject(pod.spec)) return [];
  const spec = pod.spec;
  const ephemeralOnly = ctx.subresource === 'ephemeralcontainers';
  const existingEphemeral = ephemeralOnly ? containerNames(ctx.oldPod, 'ephemeralContainers') : new Set<string>();
  const out: AddedContainer[] = [];
  for (const field of CONTAINER_FIELDS) {
    if (ephemeralOnly && field !== 'ephemeralContainers') continue;
    const list = spec[field];
    if (!Array.isArray(list)) continue;
    list.forEach((c: unknown, index) => {
      if (!isObject(c)) return;
      if (ephemeralOnly && existingEphemeral.has(String(c.name))) return;
      out.push({ field, index, container: c });
    });
  }
  return out;
}

export function mutatePod(pod: unknown, ctx: MutationContext, policy: RewritePolicy): PodMutation {
  const out: PodMutation = { patch: [], rewritten: {}, skipped: {}, skipKinds: {} };
  if (!isObject(pod) || !isObject(pod.spec)) return out;
  const podSkip = podLevelSkip(pod, ctx, policy);
  for (const { field, index, container: c } of addedContainers(pod, ctx)) {
    const key = `${field}/${String(c.name)}`;
    if (podSkip) {
      out.skipped[key] = podSkip.reason;
      out.skipKinds[key] = podSkip.kind;
      continue;
    }
    const decided = decideImage(c.image, c.imagePullPolicy, policy);
    const nodeIdentity = decided.action === 'rewrite' ? nodeIdentityReason(c.image as string, policy) : undefined;
    const d =
      nodeIdentity === undefined
        ? decided
        : { action: 'keep' as const, reason: nodeIdentity, kind: 'node-identity' as const };
    if (d.action === 'keep') {
      out.skipped[key] = d.reason;
      out.skipKinds[key] = d.kind;
    }
    if (d.action !== 'rewrite') continue;
    out.rewritten[key] = c.image as string;
    out.patch.push({ op: 'replace', path: `/spec/${field}/${index}/image`, value: d.image });
  }
  if (ctx.subresource !== 'ephemeralcontainers') out.patch.push(...annotationPatch(pod, out));
  return out;
}

/**
 * Merges with what an earlier invocation recorded: on re-invocation the images it rewrote read as
 * already rewritten, and their originals must survive.
 */
function annotationPatch(pod: Json, m: PodMutation): JsonPatchOp[] {
  const metadata = isObject(pod.metadata) ? pod.metadata : undefined;
  const annotations = metadata && isObject(metadata.annotations) ? metadata.annotations : undefined;
  const oldOriginal = parseAnnotationMap(annotations?.[ORIGINAL_IMAGES_ANNOTATION]);
  const oldSkipped = parseAnnotationMap(annotations?.[SKIPPED_IMAGES_ANNOTATION]);
  const original = { ...oldOriginal, ...m.rewritten };
  const skipped: Record<string, string> = Object.fromEntries(
    Object.entries({ ...oldSkipped, ...m.skipped }).filter(([k]) => !Object.hasOwn(original, k)),
  );
  const wanted: [string, Record<string, string>, Record<string, string>, unknown][] = [
    [ORIGINAL_IMAGES_ANNOTATION, original, oldOriginal, annotations?.[ORIGINAL_IMAGES_ANNOTATION]],
    [SKIPPED_IMAGES_ANNOTATION, skipped, oldSkipped, annotations?.[SKIPPED_IMAGES_ANNOTATION]],
  ];
  const ops: JsonPatchOp[] = [];
  const toAdd: Record<string, string> = {};
  for (const [name, value, old, raw] of wanted) {
    if (Object.keys(value).length === 0) continue;
    if (raw !== undefined && sameMap(value, old)) continue;
    toAdd[name] = JSON.stringify(value);
  }
  if (Object.keys(toAdd).length === 0) return ops;
  if (!metadata) ops.push({ op: 'add', path: '/metadata', value: {} });
  if (!annotations) {
    ops.push({ op: 'add', path: '/metadata/annotations', value: toAdd });
    return ops;
  }
  for (const [name, value] of Object.entries(toAdd)) {
    ops.push({ op: 'add', path: `/metadata/annotations/${pointerSegment(name)}`, value });
  }
  return ops;
}
