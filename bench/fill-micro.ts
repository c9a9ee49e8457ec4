/**
 * Micro-benchmark of the cold-blob path inside the process (no HTTP): an "origin" stream of
 * 64 KiB chunks (what undici hands over) through BlobFill (hash + spool file) to N readers that
 * drain their streams. Measures wall time, CPU and RSS growth of the fill machinery alone.
 *
 *   node --import tsx bench/fill-micro.ts [MiB] [readers] [--cpu-prof]
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BlobFills } from '../src/cache/blob-fills.js';

const mib = Number(process.argv[2] ?? 512);
const readers = Number(process.argv[3] ?? 1);
const CHUNK = 64 * 1024;
const block = randomBytes(8 * 1024 * 1024);
const total = mib * 1024 * 1024;

function origin(): Readable {
  let sent = 0;
  return new Readable({
    highWaterMark: 1 << 20,
    read() {
      while (sent < total) {
        const n = Math.min(CHUNK, total - sent);
        const off = sent % block.length;
        // A fresh buffer per chunk, as a socket read gives.
        const chunk = Buffer.from(block.subarray(off, Math.min(off + n, block.length)));
        sent += chunk.length;
        if (!this.push(chunk)) return;
      }
      this.push(null);
    },
  });
}

function digestOfStream(): string {
  const h = createHash('sha256');
  for (let sent = 0; sent < total;) {
    const n = Math.min(CHUNK, total - sent);
    const off = sent % block.length;
    h.update(block.subarray(off, Math.min(off + n, block.length)));
    sent += Math.min(n, block.length - off);
  }
  return `sha256:${h.digest('hex')}`;
}

const dir = mkdtempSync(join(tmpdir(), 'fill-micro-'));
const digest = digestOfStream();
const fills = new BlobFills({ tmpDir: dir, store: { putBlobFile: async () => true } });
const rss0 = process.memoryUsage().rss;
let peak = rss0;
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const { fill } = fills.getOrStart('r', digest, { open: async () => ({ size: total, stream: origin() }) });
await fill.started;
const counts = await Promise.all(
  Array.from({ length: readers }, async () => {
    let n = 0;
    for await (const c of fill.reader(0, undefined, { cancelWhenAbandoned: true })) n += (c as Buffer).length;
    return n;
  }),
);
const secs = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
clearInterval(sampler);
await fill.committed;
if (counts.some((n) => n !== total)) throw new Error(`short read: ${counts.join(',')}`);
process.stdout.write(
  `${mib} MiB, ${readers} reader(s): ${(total / secs / 1e6).toFixed(0)} MB/s, ` +
    `cpu ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s, rss growth ${((peak - rss0) / 2 ** 20).toFixed(0)} MiB\n`,
);
rmSync(dir, { recursive: true, force: true });
