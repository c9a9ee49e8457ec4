/**
 * The container runs the proxy with the Node flags the benchmark measured: those of `npm start`
 * (bench/run.ts takes them from there).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const flags = (args: string[]) => args.filter((a) => a.startsWith('--'));

t.test("the Dockerfile's ENTRYPOINT passes the same Node flags as npm start", async (t) => {
  const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as { scripts: { start: string } };
  const start = pkg.scripts.start.split(' ');
  const entry = /^ENTRYPOINT (\[.*\])$/m.exec(readFileSync(`${root}Dockerfile`, 'utf8'))?.[1];
  t.ok(entry, 'the Dockerfile has an exec-form ENTRYPOINT');
  const entrypoint = JSON.parse(entry ?? '[]') as string[];
  t.equal(start[0], 'node');
  t.equal(entrypoint[0], 'node');
  t.ok(flags(start).includes('--max-semi-space-size=1'), 'the flag the memory target depends on');
  t.same(flags(entrypoint), flags(start));
});
