/**
 * What the webhook rewrites and what it leaves alone. One object built from the configuration and
 * shared by the pod mutator and the MutatingWebhookConfiguration selectors, so the selectors the
 * API server applies and the checks the webhook repeats cannot drift apart.
 */
import type { PullPolicy } from '../config/webhook.js';

export const IGNORE_LABEL = 'pullthrough.dev/image-caching-policy';
export const IGNORE_LABEL_VALUE = 'ignore';
export const ORIGINAL_IMAGES_ANNOTATION = 'pullthrough.dev/original-images';
export const SKIPPED_IMAGES_ANNOTATION = 'pullthrough.dev/skipped-images';
/** Namespaces never touched: the webhook's own (its pods must start without it) and kube-system. */
export const ALWAYS_EXCLUDED_NAMESPACES = ['kube-system'] as const;

export interface RewritePolicy {
  /** host:port the rewritten images point at (containerd on every node resolves it to its proxy). */
  readonly proxyHost: string;
  /** Namespaces left alone, the webhook's own and kube-system included. */
  readonly excludedNamespaces: ReadonlySet<string>;
  /** An image matching any of these is left alone. */
  readonly ignoreImages: readonly RegExp[];
  /** When not empty, only images matching one of these are rewritten. */
  readonly acceptImages: readonly RegExp[];
  /** Containers with one of these pull policies are left alone. */
  readonly skipPullPolicies: ReadonlySet<PullPolicy>;
}

export interface RewritePolicyInput {
  proxyHost: string;
  ownNamespace: string;
  excludeNamespaces?: readonly string[];
  ignoreImages?: readonly string[];
  acceptImages?: readonly string[];
  skipPullPolicies?: readonly PullPolicy[];
}

export function compileRegexes(patterns: readonly string[], flag: string): RegExp[] {
  return patterns.map((p) => {
    try {
      return new RegExp(p);
    } catch (err) {
      throw new Error(`${flag}: invalid regular expression ${JSON.stringify(p)}: ${(err as Error).message}`);
    }
  });
}

export function createRewritePolicy(input: RewritePolicyInput): RewritePolicy {
  return {
    proxyHost: input.proxyHost,
    excludedNamespaces: new Set([
      input.ownNamespace,
      ...ALWAYS_EXCLUDED_NAMESPACES,
      ...(input.excludeNamespaces ?? []),
    ]),
    ignoreImages: compileRegexes(input.ignoreImages ?? [], '--ignore-images'),
    acceptImages: compileRegexes(input.acceptImages ?? [], '--accept-images'),
    skipPullPolicies: new Set(input.skipPullPolicies ?? []),
  };
}
