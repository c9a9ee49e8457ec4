/**
 * AdmissionReview v1 in, AdmissionReview v1 out. Anything malformed either cannot be answered
 * (no uid: the caller gets a 400) or is answered `allowed: true` with a warning: the webhook is
 * fail-open by design and is never the reason a pod is refused, except by the vulnerability gate
 * in `enforce` (vulnerability-gate.ts), whose denials name the image, the counts and the policy.
 */
import { mutatePod, type PodMutation } from './mutate-pod.js';
import type { RewritePolicy } from './policy.js';
import { gatePod, type AdmissionGate } from './vulnerability-gate.js';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export interface AdmissionResponse {
  uid: string;
  /** false only when the vulnerability gate denies the pod (--scan-policy enforce). */
  allowed: boolean;
  status?: { code: number; message: string };
  patchType?: 'JSONPatch';
  patch?: string;
  warnings?: string[];
}

export interface AdmissionReviewResponse {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export type ReviewOutcome =
  { status: 200; body: AdmissionReviewResponse; mutation?: PodMutation } | { status: 400; error: string };

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function allow(uid: string, warning?: string): ReviewOutcome {
  const response: AdmissionResponse = { uid, allowed: true };
  if (warning) response.warnings = [`pullthrough: ${warning}`];
  return { status: 200, body: { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response } };
}

/** Parses the raw body text and reviews it. */
export function reviewText(text: string, policy: RewritePolicy, gate?: AdmissionGate): ReviewOutcome {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return { status: 400, error: `body is not JSON: ${(err as Error).message}` };
  }
  return review(body, policy, gate);
}

export function review(body: unknown, policy: RewritePolicy, gate?: AdmissionGate): ReviewOutcome {
  if (!isObject(body)) return { status: 400, error: 'body is not a JSON object' };
  if (body.kind !== 'AdmissionReview')
    return { status: 400, error: `kind is ${JSON.stringify(body.kind)}, not AdmissionReview` };
  if (body.apiVersion !== ADMISSION_API_VERSION) {
    return {
      status: 400,
      error: `apiVersion ${JSON.stringify(body.apiVersion)} is not supported, only ${ADMISSION_API_VERSION}`,
    };
  }
  const request = body.request;
  if (!isObject(request)) return { status: 400, error: 'request is missing' };
  const uid = request.uid;
  if (typeof uid !== 'string' || uid === '') return { status: 400, error: 'request.uid is missing' };

  const kind = isObject(request.kind) ? request.kind : {};
  if (kind.kind !== 'Pod' || (kind.group ?? '') !== '' || kind.version !== 'v1') {
    return allow(uid, `not a v1 Pod (${JSON.stringify(request.kind)}); nothing rewritten`);
  }
  const sub = typeof request.subResource === 'string' ? request.subResource : undefined;
  const op = request.operation;
  const ephemeral = op === 'UPDATE' && sub === 'ephemeralcontainers';
  if (!(op === 'CREATE' && sub === undefined) && !ephemeral) return allow(uid);
  const pod = request.object;
  if (!isObject(pod) || !isObject(pod.spec))
    return allow(uid, 'request.object is not a pod with a spec; nothing rewritten');
  const namespace =
    typeof request.namespace === 'string'
      ? request.namespace
      : isObject(pod.metadata) && typeof pod.metadata.namespace === 'string'
        ? pod.metadata.namespace
        : '';
  const mutation = mutatePod(
    pod,
    { namespace, ...(sub ? { subresource: sub } : {}), oldPod: request.oldObject },
    policy,
  );
  const gated = gate
    ? gatePod(pod, { namespace, ...(sub ? { subresource: sub } : {}), oldPod: request.oldObject }, policy, gate)
    : undefined;
  if (gated?.denied !== undefined) {
    const response: AdmissionResponse = { uid, allowed: false, status: { code: 403, message: gated.denied } };
    return { status: 200, body: { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response }, mutation };
  }
  const out = allow(uid);
  if (out.status === 200 && gated && gated.warnings.length > 0) out.body.response.warnings = [...gated.warnings];
  if (out.status === 200) {
    out.mutation = mutation;
    if (mutation.patch.length > 0) {
      out.body.response.patchType = 'JSONPatch';
      out.body.response.patch = Buffer.from(JSON.stringify(mutation.patch)).toString('base64');
    }
  }
  return out;
}
