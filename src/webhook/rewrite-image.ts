/**
 * The decision for one container image: rewrite it to the node proxy, or keep it and say why.
 */
import { decodeImage, encodeImage } from '../oci/encoding.js';
import { formatReference, normalizeRegistry, parseReference } from '../oci/reference.js';
import type { PullPolicy } from '../config/webhook.js';
import type { WebhookSkipReason } from '../observability/metrics.js';
import type { RewritePolicy } from './policy.js';

export type ImageDecision =
  | { action: 'rewrite'; image: string }
  /** Already points at the proxy (a re-invocation, or written that way): nothing to record. */
  | { action: 'already-rewritten' }
  /** `reason` for the log and the annotation, `kind` for the metric label. */
  | { action: 'keep'; reason: string; kind: WebhookSkipReason };

/**
 * The regexes see the image as written and its normalised form (`nginx` and
 * `docker.io/library/nginx:latest`), so `^docker\.io/` and `^nginx` both do what one expects.
 */
function matchesAny(patterns: readonly RegExp[], forms: readonly string[]): RegExp | undefined {
  return patterns.find((re) => forms.some((f) => re.test(f)));
}

export function decideImage(image: unknown, pullPolicy: unknown, policy: RewritePolicy): ImageDecision {
  if (typeof image !== 'string' || image === '') return { action: 'keep', reason: 'no image given', kind: 'no-image' };
  if (decodeImage(image, policy.proxyHost).ok) return { action: 'already-rewritten' };
  let normalised: string;
  try {
    const ref = parseReference(image);
    if (ref.registry === normalizeRegistry(policy.proxyHost)) {
      // Pointing at the proxy without an encoded registry: there is no origin to send it to.
      return {
        action: 'keep',
        reason: `points at the proxy ${policy.proxyHost} but names no encoded registry`,
        kind: 'no-encoded-registry',
      };
    }
    normalised = formatReference(ref);
  } catch (err) {
    return {
      action: 'keep',
      reason: `not a valid image reference: ${(err as Error).message}`,
      kind: 'invalid-reference',
    };
  }
  if (typeof pullPolicy === 'string' && policy.skipPullPolicies.has(pullPolicy as PullPolicy)) {
    return { action: 'keep', reason: `imagePullPolicy ${pullPolicy} is excluded`, kind: 'pull-policy' };
  }
  const forms = [image, normalised];
  const ignored = matchesAny(policy.ignoreImages, forms);
  if (ignored) return { action: 'keep', reason: `matches --ignore-images ${ignored.source}`, kind: 'ignore-images' };
  if (policy.acceptImages.length > 0 && !matchesAny(policy.acceptImages, forms)) {
    return { action: 'keep', reason: 'matches no --accept-images pattern', kind: 'not-accepted' };
  }
  const enc = encodeImage(image, policy.proxyHost);
  if (!enc.ok) return { action: 'keep', reason: `cannot be encoded: ${enc.reason}`, kind: 'not-encodable' };
  return { action: 'rewrite', image: enc.value };
}
