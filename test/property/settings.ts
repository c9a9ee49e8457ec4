/**
 * One seed for every property file, so a failure reproduces: PROPERTY_SEED overrides the fixed
 * default, and fast-check's failure message carries the seed and the counterexample's path.
 */
import type { Parameters } from 'fast-check';

const DEFAULT_SEED = 22_2026;

function seedFromEnv(): number {
  const text = process.env.PROPERTY_SEED;
  if (text === undefined || text === '') return DEFAULT_SEED;
  const seed = Number(text);
  if (!Number.isSafeInteger(seed)) throw new Error(`PROPERTY_SEED must be an integer, not ${JSON.stringify(text)}`);
  return seed;
}

export const SEED = seedFromEnv();

/** fc.assert parameters: the shared seed and `numRuns` generated cases. */
export function runs<T>(numRuns: number): Parameters<T> {
  return { seed: SEED, numRuns };
}
