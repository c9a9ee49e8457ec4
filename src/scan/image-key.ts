/**
 * The one spelling of an image under which verdicts are kept and looked up, so `nginx`,
 * `library/nginx:latest` and `docker.io/library/nginx:latest` find the same verdict.
 */
import { formatReference, parseReference } from '../oci/reference.js';

/** The normalised reference; undefined when it does not parse. */
export function imageKey(image: string): string | undefined {
  try {
    return formatReference(parseReference(image));
  } catch {
    return undefined;
  }
}
