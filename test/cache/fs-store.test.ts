import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStore } from '../../src/cache/fs-store.js';
import { storeConformance } from './store-conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'fs-store-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

storeConformance(t, 'embedded store', async () => new FsStore(dir));
