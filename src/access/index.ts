/** Access control for private images in the cache: see access-control.ts and docs/credentials.md. */
export {
  AccessControl,
  type AccessControlOptions,
  type AccessGate,
  type AccessMetrics,
  type AccessTarget,
  type ObjectKind,
  type OriginProbe,
  type PodDirectory,
  type PodRef,
  type ProbeAnswer,
  type ProbeRequest,
  type ProbeResult,
  type RefusalReason,
  type RequestScope,
} from './access-control.js';
export { LocalPeers, type InterfaceAddresses, type PeerPolicy } from './node-peers.js';
export { PrivacyBook, type Privacy, type PrivacyBookOptions } from './privacy.js';
export { registryProbe } from './origin-probe.js';
export { originHopAuthorizer, type HopAuthorizer } from './hop-credential.js';
