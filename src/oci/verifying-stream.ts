/**
 * A pass-through that checks a whole blob against its digest as it streams, holding back the last
 * chunk until the end: a client never receives the complete bytes of a blob that turned out not
 * to match (it gets an error instead and retries elsewhere).
 */
import { Transform, type TransformCallback } from 'node:stream';
import { DigestVerifier, parseDigest } from './digest.js';

export function verifyingStream(digest: string, size: number | undefined): Transform {
  const verifier = new DigestVerifier(parseDigest(digest));
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback): void {
      verifier.update(chunk);
      const out = held;
      held = chunk;
      cb(null, out);
    },
    flush(cb: TransformCallback): void {
      const seen = verifier.finish();
      if (seen !== digest) return cb(new Error(`blob digest is ${seen}, not ${digest}`));
      if (size !== undefined && verifier.size !== size)
        return cb(new Error(`blob has ${verifier.size} bytes, not ${size}`));
      cb(null, held);
    },
  });
}
