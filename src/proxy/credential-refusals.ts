/**
 * One warning per refused credential and repository, so a wrong pull secret or a provider plugin
 * answering with a stale credential is visible in `kubectl logs` without a line per pull: the
 * registry client tries the next candidate silently, and the pull may still succeed elsewhere.
 */
import NodeCache from 'node-cache';
import type { CredentialRefusal } from '../oci/registry-client.js';
import type { Logger } from '../observability/logger.js';

const PLUGIN_LABEL = 'credential provider ';
/** How long one refusal stays reported; a credential still refused after it is said again. */
const REPEAT_AFTER_S = 600;
/** Bounds the memory of what was said: past it, refusals are logged without de-duplication. */
const MAX_REMEMBERED = 10_000;

export function credentialRefusalLog(log: Logger): (refusal: CredentialRefusal) => void {
  const said = new NodeCache({ stdTTL: REPEAT_AFTER_S, checkperiod: 120, useClones: false });
  return ({ registry, repository, label, reason }) => {
    const key = `${label}\n${registry}/${repository}`;
    if (said.has(key)) return;
    if (said.keys().length < MAX_REMEMBERED) said.set(key, true);
    const who = label.startsWith(PLUGIN_LABEL) ? { plugin: label.slice(PLUGIN_LABEL.length) } : { credential: label };
    log.warn(
      { ...who, registry, repository, reason },
      'origin refused a credential; the next one is tried (said once per 10 min)',
    );
  };
}
