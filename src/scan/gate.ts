/**
 * The vulnerability gate where it acts: admission (an image as a pod names it) and serving (a
 * manifest digest the node proxy is asked for). Both read verdicts from a VerdictSource in
 * memory and decide with the policy (policy.ts); neither waits on anything.
 *
 * At the proxy an image without a verdict is served whatever `unscanned` says: holding it there
 * would keep it from ever being cached, hence from ever being scanned. `hold` acts at admission.
 */
import { parseReference } from '../oci/reference.js';
import { imageKey } from './image-key.js';
import { evaluate, type GateDecision, type GatePolicy } from './policy.js';
import type { VerdictSource } from './verdict-cache.js';

export class VulnerabilityGate {
  constructor(
    readonly policy: GatePolicy,
    private readonly source: VerdictSource,
    private readonly now: () => number = Date.now,
  ) {}

  /** An image as a pod spec names it; one that does not parse is not the gate's to judge. */
  admit(image: string): GateDecision {
    const key = imageKey(image);
    if (key === undefined) return evaluate({ ...this.policy, mode: 'off' }, image, undefined, this.now());
    const digest = parseReference(key).digest;
    const record =
      (digest !== undefined ? this.source.byDigest(digest) : undefined) ?? this.source.byImage(key)?.record;
    return evaluate(this.policy, key, record, this.now());
  }

  /** A manifest of `registry/repository` by digest, as the proxy is about to serve it. */
  serve(registry: string, repository: string, digest: string): GateDecision {
    const image = `${registry}/${repository}@${digest}`;
    const record = this.source.byDigest(digest);
    const policy = record ? this.policy : { ...this.policy, unscanned: 'allow-and-scan' as const };
    return evaluate(policy, image, record, this.now());
  }
}
