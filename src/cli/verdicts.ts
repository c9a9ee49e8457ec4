/**
 * The vulnerability gate of the webhook and the node proxy: with --scan-policy warn or enforce,
 * the verdicts of every CachedImage are listed and watched into memory in the background (the
 * command starts at once; until the first list every image counts as not scanned yet) and judged
 * by the gate.
 */
import type { Logger } from '../observability/logger.js';
import type { GatePolicy } from '../scan/policy.js';
import type { VulnerabilityGate } from '../scan/gate.js';

export async function startVerdicts(
  policy: GatePolicy | undefined,
  log: Logger,
  kubeconfig?: string,
): Promise<{ gate: VulnerabilityGate; stop(): void } | undefined> {
  if (!policy || policy.mode === 'off') return undefined;
  const { createKubeClient } = await import('../kube/index.js');
  const { VerdictFeed } = await import('../kube/verdict-feed.js');
  const { VerdictCache } = await import('../scan/verdict-cache.js');
  const { VulnerabilityGate } = await import('../scan/gate.js');
  const cache = new VerdictCache();
  const feed = new VerdictFeed({
    client: createKubeClient(kubeconfig ? { kubeconfig } : {}),
    cache,
    log: log.child({ component: 'verdicts' }),
  });
  feed.start();
  log.info(
    { mode: policy.mode, threshold: policy.threshold, unscanned: policy.unscanned, scannerDown: policy.scannerDown },
    'vulnerability gate on',
  );
  return { gate: new VulnerabilityGate(policy, cache), stop: () => void feed.stop() };
}
