/**
 * The CachedImage CRD as `kubectl kustomize` renders it: a structural schema (every field typed,
 * nothing preserved unknown), objects the controller writes validate and bad specs do not (the
 * schema run by ajv, as the API server's OpenAPI validation would), and every printer column
 * points at a field of the schema with the column's type.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
  @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-return --
  the rendered YAML is walked as untyped JSON: a wrong path fails its assertion */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parseAllDocuments } from 'yaml';

// ajv-formats is CommonJS: its default export arrives as the module object under ESM.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;
const root = fileURLToPath(new URL('../../manifests/', import.meta.url));

function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function renderedCrd(): any {
  const out = execFileSync('kubectl', ['kustomize', root], { encoding: 'utf8' });
  const crd = parseAllDocuments(out)
    .map((d) => d.toJS())
    .find((o: any) => o?.kind === 'CustomResourceDefinition' && o.metadata.name === 'cachedimages.pullthrough.dev');
  if (!crd) throw new Error('the CachedImage CRD is not rendered');
  return crd;
}

/** Paths of schema nodes that break the structural rules the API server enforces. */
function unstructural(node: any, path: string, out: string[]): string[] {
  if (node['x-kubernetes-preserve-unknown-fields'] === true) out.push(`${path}: preserves unknown fields`);
  if (typeof node.type !== 'string' && node['x-kubernetes-int-or-string'] !== true) out.push(`${path}: no type`);
  for (const [k, v] of Object.entries(node.properties ?? {})) {
    // metadata is the API server's: only name and generateName may be constrained.
    if (!(path === '' && k === 'metadata')) unstructural(v, `${path}.${k}`, out);
  }
  if (node.items) unstructural(node.items, `${path}[]`, out);
  return out;
}

/** The OpenAPI schema as JSON Schema for ajv: the x-kubernetes-* keywords are the API server's own. */
function jsonSchema(node: any): any {
  if (Array.isArray(node)) return node.map(jsonSchema);
  if (node === null || typeof node !== 'object') return node;
  return Object.fromEntries(
    Object.entries(node)
      .filter(([k]) => !k.startsWith('x-kubernetes-'))
      .map(([k, v]) => [
        k,
        k === 'properties'
          ? Object.fromEntries(Object.entries(v as object).map(([p, s]) => [p, jsonSchema(s)]))
          : jsonSchema(v),
      ]),
  );
}

/** The schema node a simple `.a.b.c` path names; metadata is the API server's ObjectMeta. */
function fieldSchema(schema: any, jsonPath: string): any {
  const objectMeta = { type: 'object', properties: { creationTimestamp: { type: 'string', format: 'date-time' } } };
  let node = schema;
  for (const part of jsonPath.replace(/^\./, '').split('.')) {
    node = node === schema && part === 'metadata' ? objectMeta : node?.properties?.[part];
  }
  return node;
}

const noKubectl = 'kubectl is not installed: nothing here renders kustomize';

t.test(
  'the CRD: names, scope, status subresource, a structural schema',
  { skip: hasKubectl() ? false : noKubectl },
  async (t) => {
    const crd = renderedCrd();
    t.equal(crd.spec.scope, 'Cluster');
    t.same(crd.spec.names.shortNames, ['ci']);
    const [version] = crd.spec.versions;
    t.equal(version.name, 'v1alpha1');
    t.same(version.subresources, { status: {} });
    t.same(unstructural(version.schema.openAPIV3Schema, '', []), [], 'every field typed, none preserved unknown');
  },
);

t.test(
  'objects validate against the schema; bad specs do not',
  { skip: hasKubectl() ? false : noKubectl },
  async (t) => {
    const schema = jsonSchema(renderedCrd().spec.versions[0].schema.openAPIV3Schema);
    const ajv = new Ajv({ strict: false, allErrors: true });
    addFormats(ajv);
    const validate = ajv.compile(schema);
    const object = (spec: unknown, status?: unknown) => ({
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name: 'nginx-1.27-0123456789' },
      spec,
      ...(status === undefined ? {} : { status }),
    });
    const good = [
      object({ image: 'nginx:1.27' }),
      object({
        image: `ghcr.io/org/app:v2@sha256:${'ab'.repeat(32)}`,
        retain: true,
        platforms: ['linux/amd64', 'linux/arm64/v8'],
        pullSecretRef: { namespace: 'team-a', name: 'ghcr-pull' },
        refresh: '6h',
      }),
      object({ image: 'nginx', platforms: ['all'], refresh: '1h30m' }),
      object(
        { image: 'nginx:1.27' },
        {
          phase: 'Cached',
          observedGeneration: 1,
          digest: `sha256:${'cd'.repeat(32)}`,
          size: 52_428_800,
          sizeText: '50.0 MiB',
          platforms: ['linux/amd64'],
          usedBy: { count: 2, pods: [{ namespace: 'web', name: 'nginx-0' }] },
          lastUsed: '2026-12-06T20:00:00Z',
          upstreamDigest: `sha256:${'cd'.repeat(32)}`,
          upToDate: true,
          lastChecked: '2026-12-06T20:05:00Z',
          message: 'cached 3 blobs',
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              lastTransitionTime: '2026-12-06T20:00:00Z',
              reason: 'Cached',
              message: '',
            },
          ],
        },
      ),
    ];
    for (const o of good)
      t.ok(validate(o), `valid: ${JSON.stringify(o.spec)} ${JSON.stringify(validate.errors ?? [])}`);
    const bad: [string, unknown][] = [
      ['no image', object({ retain: true })],
      ['empty image', object({ image: '' })],
      ['image with a space', object({ image: 'nginx 1.27' })],
      ['a platform that is no os/arch', object({ image: 'nginx', platforms: ['amd64'] })],
      ['a pull secret without namespace', object({ image: 'nginx', pullSecretRef: { name: 's' } })],
      ['refresh that is no interval', object({ image: 'nginx', refresh: 'daily' })],
      ['retain that is no boolean', object({ image: 'nginx', retain: 'yes' })],
      ['an unknown phase', object({ image: 'nginx' }, { phase: 'Done' })],
      ['a negative size', object({ image: 'nginx' }, { size: -1 })],
      [
        'six pods in usedBy',
        object(
          { image: 'nginx' },
          { usedBy: { count: 6, pods: Array.from({ length: 6 }, (_, i) => ({ namespace: 'a', name: `p${i}` })) } },
        ),
      ],
    ];
    for (const [why, o] of bad) t.notOk(validate(o), `invalid: ${why}`);
  },
);

t.test(
  'printer columns answer `kubectl get ci` from fields of the schema',
  { skip: hasKubectl() ? false : noKubectl },
  async (t) => {
    const [version] = renderedCrd().spec.versions;
    const columns = version.additionalPrinterColumns as { name: string; type: string; jsonPath: string }[];
    t.same(
      columns.map((c) => c.name.toUpperCase()),
      ['IMAGE', 'PHASE', 'SIZE', 'PODS', 'UP-TO-DATE', 'LAST-USED', 'AGE'],
    );
    const schemaTypeFor: Record<string, (s: any) => boolean> = {
      string: (s) => s.type === 'string',
      integer: (s) => s.type === 'integer',
      boolean: (s) => s.type === 'boolean',
      date: (s) => s.type === 'string' && s.format === 'date-time',
    };
    for (const c of columns) {
      const field = fieldSchema(version.schema.openAPIV3Schema, c.jsonPath);
      t.ok(field, `${c.name}: ${c.jsonPath} is in the schema`);
      t.ok(schemaTypeFor[c.type]?.(field), `${c.name}: column type ${c.type} matches the field`);
    }
  },
);
