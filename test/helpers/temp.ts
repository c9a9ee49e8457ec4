/** Temporary directories for one test process, removed when it exits (pass or fail). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let base: string | undefined;

export function testTempDir(prefix: string): string {
  if (base === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'pullthrough-test-'));
    base = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return mkdtempSync(join(base, prefix));
}
