/** The cache registry repository an image is kept in, as the scanner is told to pull it. */
import { cacheRepositoryName } from '../oci/encoding.js';
import { parseReference } from '../oci/reference.js';

export function encodeRegistryRepository(image: string): string {
  const ref = parseReference(image);
  return cacheRepositoryName(ref.registry, ref.repository);
}
