/**
 * The rendered install gives node-setup what it needs to report its node: the node name from the
 * downward API, a host root that makes containerd's own config_path match, a status file on a
 * volume the proxy container reads, and RBAC to patch Nodes and create Events (nothing wider).
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseNodeSetupConfig } from '../../src/config/node-setup.js';

const root = fileURLToPath(new URL('../../manifests/', import.meta.url));

function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const skip = hasKubectl() ? false : 'kubectl is not installed';

interface Container {
  name: string;
  args: string[];
  env: EnvVar[];
  volumeMounts: Mount[];
}
interface PodSpec {
  serviceAccountName: string;
  initContainers: Container[];
  containers: Container[];
  volumes: { name: string; emptyDir?: object }[];
}
interface Obj {
  kind: string;
  metadata: { name: string };
  spec?: { template: { spec: PodSpec } };
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string } };
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}

function render(target: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', join(root, target)], { encoding: 'utf8' });
  return parseAllDocuments(out)
    .map((d) => d.toJS() as Obj)
    .filter(Boolean);
}

function find(objs: Obj[], kind: string, name: string): Obj {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name}`);
  return o;
}

for (const target of ['.', 'overlays/cri-o']) {
  t.test(`${target}: node-setup reports its node`, { skip }, async (t) => {
    const objs = render(target);
    const pod = find(objs, 'DaemonSet', 'pullthrough-node-proxy').spec?.template.spec;
    const setup = pod?.initContainers.find((c) => c.name === 'node-setup');
    if (!pod || !setup) throw new Error('no node-setup init container');
    const env = setup.env;
    t.same(
      env.find((e) => e.name === 'PULLTHROUGH_NODE_NAME')?.valueFrom,
      { fieldRef: { fieldPath: 'spec.nodeName' } },
      'the node name from the downward API',
    );
    const parsed = parseNodeSetupConfig(
      setup.args.slice(1),
      Object.fromEntries(env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value])),
    );
    if (parsed.help) throw new Error('help');
    const c = parsed.config;
    if (target === '.') {
      t.equal(c.hostRoot, '/host');
      t.equal(
        c.hostsDir.slice(c.hostRoot?.length ?? 0),
        '/etc/containerd/certs.d',
        "the hosts dir as containerd's config_path names it on the node",
      );
    }
    const statusFile = c.statusFile ?? '';
    t.match(statusFile, /^\//, 'a status file');
    const shared = setup.volumeMounts.find((m) => statusFile.startsWith(`${m.mountPath}/`));
    t.ok(shared, 'the status file is on a mounted volume');
    t.match(
      pod.volumes.find((v) => v.name === shared?.name),
      { emptyDir: {} },
    );
    const proxy = pod.containers.find((x) => x.name === 'proxy');
    t.match(
      proxy?.volumeMounts.find((m) => m.name === shared?.name),
      { mountPath: shared?.mountPath, readOnly: true },
      'the proxy container reads it',
    );

    t.equal(pod.serviceAccountName, 'pullthrough-proxy');
    const rules = find(objs, 'ClusterRole', 'pullthrough-proxy').rules ?? [];
    const allowed = (resource: string, verb: string) =>
      rules.some((r) => r.apiGroups.includes('') && r.resources.includes(resource) && r.verbs.includes(verb));
    t.ok(allowed('nodes', 'patch'), 'may patch Nodes (the label)');
    t.ok(allowed('events', 'create'), 'may create Events');
    t.notOk(allowed('nodes', 'update') || allowed('nodes', 'delete'), 'patch only');

    // The webhook watches the Nodes labelled not ready, read-only, through a role of its own.
    t.same(find(objs, 'ClusterRole', 'pullthrough-webhook-nodes').rules, [
      { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] },
    ]);
    t.match(find(objs, 'ClusterRoleBinding', 'pullthrough-webhook-nodes'), {
      roleRef: { name: 'pullthrough-webhook-nodes' },
      subjects: [{ kind: 'ServiceAccount', name: 'pullthrough-webhook', namespace: 'pullthrough' }],
    });
  });
}
