import { createHash, type Hash } from 'node:crypto';
import { OciError } from './errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

const hexLength: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/** A validated digest, `algorithm:hex`, lower-case hex of the exact length. */
export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  readonly value: string;
}

// The spec's grammar (algorithm [+.-_ separators] ":" encoded) is wider than what we can verify;
// anything we cannot hash ourselves is refused instead of being trusted.
const grammar = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function looksLikeDigest(s: string): boolean {
  return s.includes(':');
}

export function parseDigest(s: string): Digest {
  if (s.length > 200 || !grammar.test(s))
    throw new OciError('DIGEST_INVALID', `invalid digest ${JSON.stringify(s.slice(0, 80))}`);
  const i = s.indexOf(':');
  const algorithm = s.slice(0, i);
  const hex = s.slice(i + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new OciError('UNSUPPORTED', `unsupported digest algorithm ${JSON.stringify(algorithm)}`, { status: 400 });
  }
  if (hex.length !== hexLength[algorithm] || !/^[a-f0-9]+$/.test(hex)) {
    throw new OciError('DIGEST_INVALID', `invalid ${algorithm} digest ${JSON.stringify(s.slice(0, 140))}`);
  }
  return { algorithm, hex, value: s };
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Incremental hashing for bytes that stream past; `finish()` says whether they were the digest. */
export class DigestVerifier {
  readonly expected: Digest;
  private readonly hash: Hash;
  private bytes = 0;
  constructor(expected: Digest) {
    this.expected = expected;
    this.hash = createHash(expected.algorithm);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }
  get size(): number {
    return this.bytes;
  }
  /** The digest actually seen. Call once. */
  finish(): string {
    return `${this.expected.algorithm}:${this.hash.digest('hex')}`;
  }
}
