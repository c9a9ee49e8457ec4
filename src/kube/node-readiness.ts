/**
 * What node-setup tells the cluster about its node: the label `pullthrough.dev/node-ready`
 * (`true`/`false`, which the webhook reads for pods already bound to the node), an annotation with
 * the reason, and on a node that cannot be served a Warning Event on the Node, so `kubectl describe
 * node` and event-based alerting show it rather than one line in an init container's log.
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import { describeKubeError } from './errors.js';
import { EventRecorder } from './event-recorder.js';
import type { KubeLogger } from './logger.js';
import { NODE_READY_LABEL } from '../webhook/policy.js';

export { NODE_READY_LABEL };
export const NODE_SETUP_ANNOTATION = 'pullthrough.dev/node-setup';
export const NODE_NOT_READY_REASON = 'PullthroughNodeNotReady';
/** Node Events go where the kubelet puts its own: the default namespace. */
const NODE_EVENT_NAMESPACE = 'default';

export interface NodeReadiness {
  readonly ready: boolean;
  /** Each names the check that failed and its fix; empty when ready. */
  readonly problems: readonly string[];
}

export interface NodeReadinessReport {
  readonly labelled: boolean;
  readonly eventRecorded: boolean;
}

/**
 * Labels and annotates the Node, and records the Event when it is not ready. Never throws: an API
 * server that refuses is logged, and node-setup goes on (the node proxy starts either way).
 */
export async function reportNodeReadiness(
  client: KubeClient,
  nodeName: string,
  readiness: NodeReadiness,
  log: KubeLogger,
): Promise<NodeReadinessReport> {
  const summary = readiness.ready ? 'ready' : readiness.problems.join('; ');
  let uid: string | undefined;
  let labelled = false;
  try {
    const node = await client.core.patchNode(
      {
        name: nodeName,
        body: {
          metadata: {
            labels: { [NODE_READY_LABEL]: String(readiness.ready) },
            annotations: { [NODE_SETUP_ANNOTATION]: summary.slice(0, 1024) },
          },
        },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    uid = node.metadata?.uid;
    labelled = true;
  } catch (err) {
    log.error({ node: nodeName, err: describeKubeError(err) }, `node not labelled ${NODE_READY_LABEL}`);
  }
  if (readiness.ready) return { labelled, eventRecorded: false };
  const recorder = new EventRecorder({
    client,
    namespace: NODE_EVENT_NAMESPACE,
    component: 'pullthrough-node-setup',
    log,
  });
  const eventRecorded = await recorder.record(
    { apiVersion: 'v1', kind: 'Node', name: nodeName, ...(uid !== undefined ? { uid } : {}) },
    'Warning',
    NODE_NOT_READY_REASON,
    `pullthrough cannot serve this node's image pulls: ${summary}`,
  );
  return { labelled, eventRecorded };
}
