/**
 * The namespaceSelector and objectSelector of the MutatingWebhookConfiguration, derived from the
 * same policy the webhook enforces itself: the manifests carry the defaults, and the webhook
 * re-applies these on start so a changed flag cannot leave the API server sending pods it will
 * only skip, or withholding pods it should rewrite.
 */
import {
  ENABLED_NAMESPACE_LABEL,
  ENABLED_NAMESPACE_LABEL_VALUE,
  IGNORE_LABEL,
  IGNORE_LABEL_VALUE,
  type RewritePolicy,
} from './policy.js';

export interface LabelSelector {
  matchExpressions: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

/** In `--namespaces=labelled` mode the API server calls the webhook only for opted-in namespaces. */
export function namespaceSelector(policy: RewritePolicy): LabelSelector {
  return {
    matchExpressions: [
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [...policy.excludedNamespaces].sort() },
      ...(policy.optInNamespaces
        ? [{ key: ENABLED_NAMESPACE_LABEL, operator: 'In' as const, values: [ENABLED_NAMESPACE_LABEL_VALUE] }]
        : []),
    ],
  };
}

export function objectSelector(): LabelSelector {
  return { matchExpressions: [{ key: IGNORE_LABEL, operator: 'NotIn', values: [IGNORE_LABEL_VALUE] }] };
}
