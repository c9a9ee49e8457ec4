/**
 * The namespaceSelector and objectSelector of the MutatingWebhookConfiguration, derived from the
 * same policy the webhook enforces itself: the manifests carry the defaults, and the webhook
 * re-applies these on start so a changed flag cannot leave the API server sending pods it will
 * only skip, or withholding pods it should rewrite.
 */
import { IGNORE_LABEL, IGNORE_LABEL_VALUE, type RewritePolicy } from './policy.js';

export interface LabelSelector {
  matchExpressions: { key: string; operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'; values?: string[] }[];
}

export function namespaceSelector(policy: RewritePolicy): LabelSelector {
  return {
    matchExpressions: [
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: [...policy.excludedNamespaces].sort() },
    ],
  };
}

export function objectSelector(): LabelSelector {
  return { matchExpressions: [{ key: IGNORE_LABEL, operator: 'NotIn', values: [IGNORE_LABEL_VALUE] }] };
}
