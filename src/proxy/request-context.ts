/** What every step of a pull knows of the request it serves, and how it tells where bytes came from. */
import type { Log as Logger } from '../observability/logger.js';

export type Source = 'cache' | 'origin' | 'shared-fetch' | 'stale';

export interface RequestContext {
  /** The client's: aborted when it goes away. */
  readonly signal?: AbortSignal;
  readonly log: Logger;
  /** The client's address: the access gate serves private content to the node itself only (--private-to). */
  readonly peer?: string | undefined;
  /**
   * The origin credential a node proxy passed a cluster proxy for this request only
   * (HOP_AUTHORIZATION_HEADER): checked at the origin before anything is served, used for what
   * this request fetches, never kept, never logged.
   */
  readonly originAuthorization?: string | undefined;
}
