/**
 * The layout's rules, checked on the source itself: imports flow one way (no cycle between files,
 * none between src/ folders), and only the HTTP servers import the web framework.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Static imports and re-exports (`import type` too); dynamic `import()` loads lazily and is left out. */
const staticImport = /^(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'/gms;

const files = sourceFiles(SRC).map((f) => relative(SRC, f));
const imports = new Map<string, { local: string[]; packages: string[] }>();
for (const f of files) {
  const text = readFileSync(join(SRC, f), 'utf8');
  const local: string[] = [];
  const packages: string[] = [];
  for (const m of text.matchAll(staticImport)) {
    const spec = m[1] as string;
    if (spec.startsWith('.')) local.push(relative(SRC, join(SRC, dirname(f), spec)).replace(/\.js$/, '.ts'));
    else packages.push(spec);
  }
  imports.set(f, { local, packages });
}

/** A cycle in `graph`, as the path that closes it; undefined when there is none. */
function findCycle(graph: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (n: string): string[] | undefined => {
    if (state.get(n) === 'done') return undefined;
    if (state.get(n) === 'open') return [...path.slice(path.indexOf(n)), n];
    state.set(n, 'open');
    path.push(n);
    for (const next of graph.get(n) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(n, 'done');
    return undefined;
  };
  for (const n of graph.keys()) {
    const cycle = visit(n);
    if (cycle) return cycle;
  }
  return undefined;
}

const folderOf = (f: string) => (f.includes('/') ? (f.split('/')[0] as string) : f);

t.test('every relative import names a file of src/', async (t) => {
  const missing = [...imports].flatMap(([f, i]) =>
    i.local.filter((d) => !files.includes(d)).map((d) => `${f} -> ${d}`),
  );
  t.same(missing, [], 'the scan reads the imports it checks');
  t.ok(files.length > 50 && [...imports.values()].some((i) => i.local.length > 5), 'and it found them');
});

t.test('no import cycle between files', async (t) => {
  const graph = new Map([...imports].map(([f, i]) => [f, new Set(i.local)]));
  t.equal(findCycle(graph)?.join(' -> '), undefined);
});

t.test('no import cycle between src/ folders', async (t) => {
  const graph = new Map<string, Set<string>>();
  for (const [f, i] of imports) {
    const from = folderOf(f);
    const to = graph.get(from) ?? new Set<string>();
    for (const d of i.local) if (folderOf(d) !== from) to.add(folderOf(d));
    graph.set(from, to);
  }
  t.equal(findCycle(graph)?.join(' -> '), undefined);
});

t.test('only the HTTP servers import the web framework', async (t) => {
  const users = [...imports].filter(([, i]) => i.packages.some((p) => p === 'fastify' || p.startsWith('@fastify/')));
  t.same(users.map(([f]) => f).sort(), ['proxy/server.ts', 'webhook/server.ts']);
});

t.test('the cycle finder finds a cycle', async (t) => {
  const graph = new Map([
    ['a', new Set(['b'])],
    ['b', new Set(['c'])],
    ['c', new Set(['a'])],
  ]);
  t.same(findCycle(graph), ['a', 'b', 'c', 'a']);
});
