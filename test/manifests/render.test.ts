/**
 * `kubectl kustomize` renders manifests/ and each overlay; every object validates against the
 * Kubernetes schema (kubernetes-models), and the properties the install depends on are there.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
  @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call,
  @typescript-eslint/no-unsafe-return --
  the rendered YAML is walked as untyped JSON: a wrong path fails its assertion */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseControllerConfig } from '../../src/config/controller.js';
import { parseNodeSetupConfig } from '../../src/config/node-setup.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { parseWebhookConfig, type WebhookConfig } from '../../src/config/webhook.js';
import { mutatePod } from '../../src/webhook/mutate-pod.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { namespaceSelector, objectSelector } from '../../src/webhook/selectors.js';

const root = fileURLToPath(new URL('../../manifests/', import.meta.url));
const targets = ['.', ...readdirSync(join(root, 'overlays')).map((o) => `overlays/${o}`)];
/** Kinds from CRDs kubernetes-models does not know, allowed only in the named overlay. */
const foreign: Record<string, string[]> = {
  'overlays/cert-manager': ['cert-manager.io/v1/Issuer', 'cert-manager.io/v1/Certificate'],
  'overlays/prometheus-operator': ['monitoring.coreos.com/v1/PodMonitor', 'monitoring.coreos.com/v1/PrometheusRule'],
};

function kubectl(): string | undefined {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return 'kubectl';
  } catch {
    return undefined;
  }
}
const bin = kubectl();

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  [k: string]: any;
}

/** kustomize's output by target: several cases read the same target, and the files do not change. */
const rendered = new Map<string, string>();

/** Fresh objects on every call, so one case's walk cannot change what another reads. */
function render(target: string): Obj[] {
  let out = rendered.get(target);
  if (out === undefined) {
    out = execFileSync(bin as string, ['kustomize', join(root, target)], { encoding: 'utf8' });
    rendered.set(target, out);
  }
  return parseAllDocuments(out)
    .map((d) => d.toJS() as Obj)
    .filter(Boolean);
}

async function validate(o: Obj): Promise<void> {
  type Models = Record<string, new (d: unknown) => { validate(): void }>;
  const mod = (await import(`kubernetes-models/${o.apiVersion}/${o.kind}`)) as Models;
  const Model = mod[o.kind];
  if (!Model) throw new Error(`no model for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

const find = (objs: Obj[], kind: string, name: string) => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`${kind} ${name} not rendered`);
  return o;
};

const noKubectl = 'kubectl is not installed: nothing here renders kustomize (Debian 12 has no kubectl package)';
t.test('renders and validates', { skip: bin ? false : noKubectl }, async (t) => {
  for (const target of targets) {
    const objs = render(target);
    t.ok(objs.length > 10, `${target}: ${objs.length} objects`);
    for (const o of objs) {
      const id = `${target}: ${o.apiVersion} ${o.kind} ${o.metadata.name}`;
      if ((foreign[target] ?? []).includes(`${o.apiVersion}/${o.kind}`)) {
        t.ok(o.metadata.name && o.spec, `${id} (CRD kind, not schema-checked)`);
        continue;
      }
      await t.resolves(validate(o), id);
      const clusterScoped =
        o.kind === 'Namespace' ||
        o.kind.startsWith('Cluster') ||
        o.kind === 'MutatingWebhookConfiguration' ||
        o.kind === 'CustomResourceDefinition';
      if (!clusterScoped) {
        t.equal(o.metadata.namespace, 'pullthrough', `${id} namespaced`);
      }
    }
  }
});

t.test('what the install depends on', { skip: bin ? false : 'kubectl is not installed' }, async (t) => {
  const objs = render('.');
  const ds = find(objs, 'DaemonSet', 'pullthrough-node-proxy').spec.template.spec;
  const proxy = ds.containers.find((c: any) => c.name === 'proxy');
  // The node's own 127.0.0.1:7439, on the host network: no pod on the pod network reaches it.
  t.equal(ds.hostNetwork, true, 'on the host network');
  t.equal(ds.dnsPolicy, 'ClusterFirstWithHostNet', 'cluster DNS for the cache registry Service');
  t.same(proxy.ports, [{ name: 'metrics', containerPort: 7440 }], 'no port for the proxy, one for its metrics');
  t.ok(proxy.args.includes('--listen=127.0.0.1:7439'), "listens on the node's loopback only");
  t.ok(proxy.args.includes('--metrics-listen=0.0.0.0:7440'), 'metrics where Prometheus scrapes the pod IP');
  t.ok(proxy.args.includes('--private-to=node'), 'private images to the node itself only');
  for (const probe of [proxy.readinessProbe, proxy.livenessProbe])
    t.match(probe.httpGet, { host: '127.0.0.1', port: 7439 }, 'probed on the loopback');
  t.equal(ds.priorityClassName, 'system-node-critical');
  t.same(ds.tolerations, [{ operator: 'Exists' }], 'tolerates every taint');
  t.match(proxy.env, [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }]);
  t.equal(proxy.readinessProbe.httpGet.path, '/readyz');
  t.equal(proxy.livenessProbe.httpGet.path, '/healthz');
  t.match(proxy.securityContext, {
    runAsNonRoot: true,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
  });
  const setup = ds.initContainers.find((c: any) => c.name === 'node-setup');
  t.same(setup.args, ['node-setup']);
  const env = Object.fromEntries(setup.env.map((e: any) => [e.name, e.value]));
  const svc = find(objs, 'Service', 'pullthrough-cluster-proxy');
  t.equal(
    env.PULLTHROUGH_CLUSTER_PROXY,
    `http://${svc.metadata.name}.${svc.metadata.namespace}.svc.cluster.local:${svc.spec.ports[0].port}`,
    'node setup points at the cluster proxy Service',
  );
  t.equal(env.PULLTHROUGH_PROXY_HOST, 'localhost:7439');
  const webhookEnv = find(objs, 'Deployment', 'pullthrough-webhook').spec.template.spec.containers[0].env;
  t.equal(
    webhookEnv.find((e: any) => e.name === 'PULLTHROUGH_PROXY_HOST').value,
    'localhost:7439',
    'webhook rewrites to the host node setup configures',
  );

  for (const o of objs.filter((x) => x.kind === 'Deployment' || x.kind === 'DaemonSet')) {
    for (const c of [...(o.spec.template.spec.initContainers ?? []), ...o.spec.template.spec.containers]) {
      t.ok(c.resources?.requests && c.resources?.limits, `${o.metadata.name}/${c.name} has requests and limits`);
      t.equal(c.securityContext?.readOnlyRootFilesystem, true, `${o.metadata.name}/${c.name} read-only root`);
    }
  }
  const reg = find(objs, 'Deployment', 'pullthrough-registry').spec.template.spec;
  t.match(reg.containers[0].image, /^registry:(3|2\.8)/);
  const runner = reg.containers.find((c: any) => c.name === 'gc-runner');
  t.equal(runner.args[0], 'gc-runner', 'the gc-runner sidecar runs in the registry pod');
  const dataMount = (c: any) => c.volumeMounts.find((m: any) => m.name === 'data')?.mountPath;
  t.equal(dataMount(runner), dataMount(reg.containers[0]), "the gc-runner shares the registry's volume");
  t.equal(
    runner.env.find((e: any) => e.name === 'REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY')?.value,
    reg.containers[0].env.find((e: any) => e.name === 'REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY')?.value,
    "the gc-runner sees the registry's storage where the registry does",
  );
  t.same(reg.initContainers[0].image, reg.containers[0].image, "the gc-runner runs the registry's own binary");
  const regPolicy = find(objs, 'NetworkPolicy', 'pullthrough-registry').spec.ingress;
  t.same(
    regPolicy.filter((r: any) => r.ports.some((p: any) => p.port === 'gc-runner')).map((r: any) => r.from),
    [
      [
        {
          podSelector: {
            matchLabels: { 'app.kubernetes.io/name': 'pullthrough', 'app.kubernetes.io/component': 'controller' },
          },
        },
      ],
    ],
    'only the controller reaches the gc-runner',
  );
  t.match(reg.containers[0].env, [
    { name: 'REGISTRY_HTTP_ADDR' },
    { name: 'REGISTRY_STORAGE_DELETE_ENABLED', value: 'true' },
  ]);
  t.ok(find(objs, 'PersistentVolumeClaim', 'pullthrough-registry'));
  t.ok(find(objs, 'PodDisruptionBudget', 'pullthrough-webhook'));
  t.ok(find(objs, 'PodDisruptionBudget', 'pullthrough-cluster-proxy'));
  const cluster = find(objs, 'Deployment', 'pullthrough-cluster-proxy').spec.template.spec;
  t.notOk(cluster.automountServiceAccountToken === false, 'the cluster proxy reads the collection Lease');
  t.match(
    cluster.containers[0].args,
    ['proxy', /--listen=/, /--data-dir=/, /--cache-registry=/, '--node-name=', '--private-images=node-credentials'],
    'no pods to check: private images only with node-wide credentials',
  );
  t.equal(
    cluster.containers[0].readinessProbe.httpGet.path,
    '/healthz',
    'stays in the Service when the cache registry is down',
  );

  const mwc = find(objs, 'MutatingWebhookConfiguration', 'pullthrough').webhooks[0];
  t.match(mwc, {
    failurePolicy: 'Ignore',
    sideEffects: 'None',
    reinvocationPolicy: 'IfNeeded',
    admissionReviewVersions: ['v1'],
  });
  t.ok(mwc.timeoutSeconds <= 5, 'short timeout');
  t.match(mwc.clientConfig.service, { name: 'pullthrough-webhook', namespace: 'pullthrough', path: '/mutate' });
  t.same(
    mwc.rules.map((r: any) => [r.operations, r.resources]),
    [
      [['CREATE'], ['pods']],
      [['UPDATE'], ['pods/ephemeralcontainers']],
    ],
  );
  const policy = createRewritePolicy({ proxyHost: 'localhost:7439', ownNamespace: 'pullthrough' });
  t.same(
    mwc.namespaceSelector,
    namespaceSelector(policy),
    'namespaceSelector is what the webhook renders from its default settings',
  );
  t.same(mwc.objectSelector, objectSelector());

  const webhookRole = find(objs, 'ClusterRole', 'pullthrough-webhook');
  t.same(webhookRole.rules, [
    {
      apiGroups: ['admissionregistration.k8s.io'],
      resources: ['mutatingwebhookconfigurations'],
      resourceNames: ['pullthrough'],
      verbs: ['get', 'patch'],
    },
  ]);
  for (const r of objs.filter((x) => x.kind === 'Role' || x.kind === 'ClusterRole')) {
    for (const rule of r.rules) {
      t.notOk(rule.verbs.includes('*') || rule.resources.includes('*'), `${r.metadata.name}: no wildcards`);
    }
  }
});

t.test(
  'the controller: two replicas on a Lease, RBAC for what it calls',
  { skip: bin ? false : 'kubectl is not installed' },
  async (t) => {
    const objs = render('.');
    const deploy = find(objs, 'Deployment', 'pullthrough-controller');
    t.equal(deploy.spec.replicas, 2);
    const pod = deploy.spec.template.spec;
    t.equal(pod.serviceAccountName, 'pullthrough-controller');
    t.same(pod.containers[0].args, [
      'controller',
      '--cache-registry=http://pullthrough-registry.pullthrough.svc.cluster.local:5000',
      '--spool-dir=/tmp/pullthrough',
      '--gc-runner=http://pullthrough-registry.pullthrough.svc.cluster.local:5001',
      '--gc-interval=1h',
    ]);
    t.match(pod.volumes, [{ name: 'tmp', emptyDir: {} }], 'the spool on a volume of its own');
    const env = Object.fromEntries(pod.containers[0].env.map((e: any) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    t.equal(env.POD_NAME, 'metadata.name', 'each replica its own Lease identity');
    const rules = (kind: string, name: string) =>
      find(objs, kind, name).rules.map((r: any) => [r.apiGroups[0], r.resources[0], r.resourceNames, r.verbs]);
    t.same(rules('ClusterRole', 'pullthrough-controller'), [
      ['', 'pods', undefined, ['list', 'watch']],
      ['pullthrough.dev', 'cachedimages', undefined, ['get', 'list', 'watch', 'create']],
      ['pullthrough.dev', 'cachedimages/status', undefined, ['patch', 'update']],
      ['', 'secrets', undefined, ['get']],
    ]);
    t.same(rules('Role', 'pullthrough-controller'), [
      ['coordination.k8s.io', 'leases', undefined, ['create']],
      ['coordination.k8s.io', 'leases', ['pullthrough-controller', 'pullthrough-gc'], ['get', 'update']],
      ['', 'events', undefined, ['create']],
    ]);
    t.same(
      rules('Role', 'pullthrough-gc-lease-reader'),
      [['coordination.k8s.io', 'leases', ['pullthrough-gc'], ['get']]],
      'the collection Lease: read by name only',
    );
    t.same(
      find(objs, 'RoleBinding', 'pullthrough-gc-lease-reader').subjects.map((s: any) => s.name),
      ['pullthrough-proxy', 'pullthrough-cluster-proxy'],
      'every proxy reads the collection Lease',
    );
    const binding = find(objs, 'RoleBinding', 'pullthrough-controller');
    t.equal(binding.metadata.namespace, 'pullthrough', 'the Lease lives in the install namespace');
    t.notOk(
      objs.some(
        (o) =>
          (o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding') &&
          o.subjects?.some((s: any) => s.name === 'pullthrough-controller') &&
          o.roleRef.name !== 'pullthrough-controller',
      ),
      'bound to its own roles only',
    );
  },
);

t.test('overlays change what they say', { skip: bin ? false : 'kubectl is not installed' }, async (t) => {
  const s3 = render('overlays/s3-registry');
  t.notOk(
    s3.find((o) => o.kind === 'PersistentVolumeClaim'),
    'no volume',
  );
  const reg = find(s3, 'Deployment', 'pullthrough-registry');
  t.ok(reg.spec.replicas > 1, 'several registry replicas');
  t.match(reg.spec.template.spec.volumes, [{ name: 'config', configMap: { name: /^pullthrough-registry-config-/ } }]);
  t.same(
    reg.spec.strategy,
    { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
    'replaced one at a time, a new replica ready before an old one goes',
  );
  const pdb = find(s3, 'PodDisruptionBudget', 'pullthrough-registry');
  t.ok(
    selects(pdb.spec.selector, reg.spec.template.metadata.labels),
    "the disruption budget covers the registry's pods",
  );
  t.equal(pdb.spec.maxUnavailable, 1, 'one replica disrupted at a time');
  const env = reg.spec.template.spec.containers[0].env;
  const fromSecret = (name: string) => env.find((e: any) => e.name === name)?.valueFrom?.secretKeyRef?.name;
  for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'REGISTRY_HTTP_SECRET']) {
    t.equal(fromSecret(name), 'pullthrough-registry-s3', `${name} from the Secret`);
  }
  t.notOk(
    env.some((e: any) => e.name === 'REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY'),
    'no filesystem storage left',
  );
  const cm = s3.find((o) => o.kind === 'ConfigMap')!;
  const conf = parseAllDocuments(cm.data['config.yml'])[0]!.toJS();
  t.match(conf.storage, { s3: { bucket: String }, delete: { enabled: true } });
  t.notOk(conf.storage.filesystem, 'one storage driver');
  t.notOk(conf.storage.redirect?.disable, 'blob reads are redirected to the bucket');
  t.notOk(conf.http.secret, 'the http secret is not in the ConfigMap');

  const cmgr = render('overlays/cert-manager');
  const wh = find(cmgr, 'Deployment', 'pullthrough-webhook').spec.template.spec;
  t.ok(wh.containers[0].args.includes('--tls-cert=/etc/pullthrough/tls/tls.crt'));
  const cmgrMwc = find(cmgr, 'MutatingWebhookConfiguration', 'pullthrough');
  t.equal(cmgrMwc.metadata.annotations?.['cert-manager.io/inject-ca-from'], 'pullthrough/pullthrough-webhook');
  t.equal(find(cmgr, 'Certificate', 'pullthrough-webhook').spec.secretName, wh.volumes[0].secret.secretName);
});

interface Selector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** A label selector as the API server reads it (In, NotIn, Exists, DoesNotExist). */
function selects(sel: Selector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const ok =
      e.operator === 'In'
        ? has && (e.values ?? []).includes(labels[e.key] as string)
        : e.operator === 'NotIn'
          ? !has || !(e.values ?? []).includes(labels[e.key] as string)
          : e.operator === 'Exists'
            ? has
            : e.operator === 'DoesNotExist'
              ? !has
              : false;
    if (!ok) return false;
  }
  return true;
}

t.test('only the proxies reach the cache registry', { skip: bin ? false : 'kubectl is not installed' }, async (t) => {
  for (const target of targets) {
    const objs = render(target);
    const policy = find(objs, 'NetworkPolicy', 'pullthrough-registry').spec;
    const workloads = objs.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet');
    const labelsOf = (o: Obj) => o.spec.template.metadata.labels as Record<string, string>;
    const registry = find(objs, 'Deployment', 'pullthrough-registry');
    t.ok(selects(policy.podSelector, labelsOf(registry)), `${target}: the policy applies to the registry's pods`);
    t.same(
      workloads.filter((o) => selects(policy.podSelector, labelsOf(o))).map((o) => o.metadata.name),
      ['pullthrough-registry'],
      `${target}: and to no other pods`,
    );
    t.same(policy.policyTypes, ['Ingress']);
    t.equal(policy.ingress.length, 2, 'two rules: the registry port, and the gc-runner port');
    const [rule, gcRule] = policy.ingress;
    t.same(gcRule.ports, [{ protocol: 'TCP', port: 'gc-runner' }]);
    t.same(
      workloads
        .filter((o) => gcRule.from.some((peer: any) => selects(peer.podSelector, labelsOf(o))))
        .map((o) => o.metadata.name),
      ['pullthrough-controller'],
      `${target}: only the controller reaches the gc-runner`,
    );
    t.ok(
      rule.from.every((peer: any) => peer.podSelector && !peer.namespaceSelector && !peer.ipBlock),
      `${target}: peers are pods of this namespace only`,
    );
    const admitted = (o: Obj) => rule.from.some((peer: any) => selects(peer.podSelector, labelsOf(o)));
    // Whatever is configured with the cache registry's URL must be let in, and nothing else.
    const usesCache = (c: any) => (c.args ?? []).some((a: string) => a.startsWith('--cache-registry='));
    const clients = workloads.filter((o) => o.spec.template.spec.containers.some(usesCache));
    const proxies = ['pullthrough-cluster-proxy', 'pullthrough-controller', 'pullthrough-node-proxy'];
    t.same(clients.map((o) => o.metadata.name).sort(), proxies, `${target}: the registry's clients`);
    t.same(
      workloads
        .filter(admitted)
        .map((o) => o.metadata.name)
        .sort(),
      proxies,
      `${target}: only they are admitted`,
    );
    const portNames = registry.spec.template.spec.containers.flatMap((c: any) =>
      (c.ports ?? []).map((p: any) => p.name),
    );
    t.same(rule.ports, [{ protocol: 'TCP', port: 'registry' }]);
    t.ok(portNames.includes('registry'), `${target}: the policy's named port is the registry container's`);
    t.ok(portNames.includes('gc-runner'), `${target}: and the gc-runner's`);
  }
});

t.test(
  'every component serves /metrics where Prometheus finds it',
  { skip: bin ? false : 'kubectl is not installed' },
  async (t) => {
    const objs = render('.');
    for (const name of ['node-proxy', 'cluster-proxy', 'webhook', 'controller']) {
      const kind = name === 'node-proxy' ? 'DaemonSet' : 'Deployment';
      const template = find(objs, kind, `pullthrough-${name}`).spec.template;
      t.same(
        template.metadata.annotations,
        { 'prometheus.io/scrape': 'true', 'prometheus.io/port': '7440', 'prometheus.io/path': '/metrics' },
        `${name}: scrape annotations`,
      );
      const ports = template.spec.containers[0].ports;
      t.ok(
        ports.some((p: any) => p.name === 'metrics' && p.containerPort === 7440),
        `${name}: a container port named metrics`,
      );
    }

    const op = render('overlays/prometheus-operator');
    const monitor = find(op, 'PodMonitor', 'pullthrough').spec;
    t.same(
      monitor.podMetricsEndpoints.map((e: any) => e.port),
      ['metrics'],
    );
    t.same(
      monitor.selector.matchExpressions.find((e: any) => e.key === 'app.kubernetes.io/component').values,
      ['node-proxy', 'cluster-proxy', 'webhook', 'controller'],
      'selects every component',
    );
    t.ok(find(op, 'PrometheusRule', 'pullthrough').spec.groups.length > 0);
    const dashboard = find(op, 'ConfigMap', 'pullthrough-dashboard');
    t.equal(dashboard.metadata.labels?.grafana_dashboard, '1', "labelled for Grafana's dashboard sidecar");
    t.ok(JSON.parse(dashboard.data['pullthrough.json']).panels.length > 0, 'holds the dashboard JSON');
  },
);

/** The webhook's settings as its rendered Deployment gives them (args after the subcommand, env values). */
function webhookConfigOf(objs: Obj[]): WebhookConfig {
  const c = find(objs, 'Deployment', 'pullthrough-webhook').spec.template.spec.containers[0];
  const env = Object.fromEntries(c.env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value]));
  const parsed = parseWebhookConfig(c.args.slice(1), { ...env, POD_NAMESPACE: 'pullthrough' });
  if (parsed.help) throw new Error('help');
  return parsed.config;
}

/** The hostPath volume mounted read-only in `container` at a directory holding `path`, if any. */
function readOnlyHostMount(podSpec: any, container: any, path: string): any {
  const mount = (container.volumeMounts ?? []).find(
    (m: any) => path === m.mountPath || path.startsWith(`${m.mountPath}/`),
  );
  if (!mount?.readOnly) return undefined;
  return podSpec.volumes.find((v: any) => v.name === mount.name && v.hostPath?.path === mount.mountPath);
}

t.test('overlays that keep nodes working', { skip: bin ? false : 'kubectl is not installed' }, async (t) => {
  t.test('gradual-rollout: labelled namespaces only, in the webhook and in the API server', async (t) => {
    const objs = render('overlays/gradual-rollout');
    const config = webhookConfigOf(objs);
    t.equal(config.namespaces, 'labelled', 'the webhook runs with --namespaces=labelled');
    const policy = createRewritePolicy({
      proxyHost: config.proxyHost,
      ownNamespace: config.namespace,
      namespaces: config.namespaces,
      namespaceDirectory: { lookup: () => ({ known: true, labels: {} }) },
    });
    const mwc = find(objs, 'MutatingWebhookConfiguration', 'pullthrough').webhooks[0];
    t.same(mwc.namespaceSelector, namespaceSelector(policy), 'namespaceSelector is what the webhook renders');
    t.ok(
      selects(mwc.namespaceSelector, { 'kubernetes.io/metadata.name': 'team-a', 'pullthrough.dev/enabled': 'true' }),
      'an opted-in namespace is sent to the webhook',
    );
    t.notOk(selects(mwc.namespaceSelector, { 'kubernetes.io/metadata.name': 'team-b' }), 'another is not');
    t.same(find(objs, 'ClusterRole', 'pullthrough-webhook').rules.at(-1), {
      apiGroups: [''],
      resources: ['namespaces'],
      verbs: ['get', 'list', 'watch'],
    });
  });

  t.test('vulnerability-gate: one policy on the webhook, the node proxies and the controller', async (t) => {
    const objs = render('overlays/vulnerability-gate');
    const envOf = (c: any): Record<string, string> =>
      Object.fromEntries(c.env.filter((e: any) => 'value' in e).map((e: any) => [e.name, e.value]));
    const webhook = webhookConfigOf(objs).scanPolicy;
    const proxyC = find(objs, 'DaemonSet', 'pullthrough-node-proxy').spec.template.spec.containers[0];
    const proxy = readProxyConfig(proxyC.args.slice(1), {
      ...envOf(proxyC),
      NODE_NAME: 'node-1',
      POD_NAMESPACE: 'pullthrough',
    }).config.scanPolicy;
    const ctlC = find(objs, 'Deployment', 'pullthrough-controller').spec.template.spec.containers[0];
    const parsed = parseControllerConfig(ctlC.args.slice(1), { ...envOf(ctlC), POD_NAME: 'c-0' });
    if (parsed.help) throw new Error('help');
    t.equal(webhook?.mode, 'enforce', 'the webhook enforces');
    t.same(proxy, webhook, 'the node proxy runs the same policy');
    t.same(parsed.config.scanPolicy, webhook, 'and the controller');
    t.ok(parsed.config.scanner?.url, 'the controller has a scanner to ask');
    for (const role of ['pullthrough-webhook', 'pullthrough-proxy'])
      t.same(
        find(objs, 'ClusterRole', role).rules.at(-1),
        { apiGroups: ['pullthrough.dev'], resources: ['cachedimages'], verbs: ['list', 'watch'] },
        `${role} may list and watch the verdicts`,
      );
    const from = find(objs, 'NetworkPolicy', 'pullthrough-registry').spec.ingress[0].from;
    t.ok(
      from.some((p: any) => selects(p.podSelector, { 'app.kubernetes.io/component': 'scanner' })),
      'the scanner may pull from the cache registry',
    );
  });

  t.test('credential-providers: the kubelet config and plugins mounted read-only into the node proxy', async (t) => {
    const objs = render('overlays/credential-providers');
    const ds = find(objs, 'DaemonSet', 'pullthrough-node-proxy').spec.template.spec;
    const proxy = ds.containers.find((c: any) => c.name === 'proxy');
    const flag = (name: string) =>
      (proxy.args as string[]).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const file = flag('image-credential-provider-config');
    const dir = flag('image-credential-provider-bin-dir');
    t.equal(file, '/etc/eks/image-credential-provider/config.json', 'EKS defaults');
    t.equal(dir, '/etc/eks/image-credential-provider');
    for (const path of [file!, dir!]) {
      t.ok(readOnlyHostMount(ds, proxy, path), `${path}: from the node, at the same path, read-only`);
    }
    const cluster = find(objs, 'Deployment', 'pullthrough-cluster-proxy').spec.template.spec;
    t.notOk(
      JSON.stringify(cluster).includes('credential-provider'),
      'the cluster proxy, which serves every node, never gets them',
    );
    const config = webhookConfigOf(objs);
    const policy = createRewritePolicy({
      proxyHost: config.proxyHost,
      ownNamespace: config.namespace,
      nodeIdentityRegistries: config.nodeIdentityRegistries,
    });
    const m = mutatePod(
      {
        metadata: { name: 'p' },
        spec: {
          containers: [
            { name: 'ecr', image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1' },
            { name: 'acr', image: 'corp.azurecr.io/app:1' },
          ],
        },
      },
      { namespace: 'team-a' },
      policy,
    );
    t.same(Object.keys(m.rewritten), ['containers/ecr'], 'ECR, which the plugin answers for, is rewritten');
    t.equal(m.skipKinds['containers/acr'], 'node-identity', 'other node-identity registries are still left alone');
  });

  t.test('cri-o: node-setup writes the registries.conf.d drop-in and mounts nothing of containerd', async (t) => {
    const objs = render('overlays/cri-o');
    const ds = find(objs, 'DaemonSet', 'pullthrough-node-proxy').spec.template.spec;
    const setup = ds.initContainers.find((c: any) => c.name === 'node-setup');
    const env = Object.fromEntries(setup.env.map((e: any) => [e.name, e.value]));
    const parsed = parseNodeSetupConfig(setup.args.slice(1), env);
    if (parsed.help) throw new Error('help');
    t.equal(parsed.config.runtime, 'cri-o');
    const mount = setup.volumeMounts.find((m: any) => m.mountPath === parsed.config.registriesConfDir);
    t.ok(mount, 'the drop-in directory is mounted');
    t.same(ds.volumes.find((v: any) => v.name === mount.name).hostPath, {
      path: '/etc/containers/registries.conf.d',
      type: 'DirectoryOrCreate',
    });
    t.notOk(
      ds.volumes.some((v: any) => v.hostPath?.path?.startsWith('/etc/containerd')),
      'no containerd directory created on the node',
    );
  });
});

t.test(
  'only the proxies reach the cluster proxy port',
  { skip: bin ? false : 'kubectl is not installed' },
  async (t) => {
    for (const target of targets) {
      const objs = render(target);
      const policy = find(objs, 'NetworkPolicy', 'pullthrough-cluster-proxy').spec;
      const workloads = objs.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet');
      const labelsOf = (o: Obj) => o.spec.template.metadata.labels as Record<string, string>;
      t.same(
        workloads.filter((o) => selects(policy.podSelector, labelsOf(o))).map((o) => o.metadata.name),
        ['pullthrough-cluster-proxy'],
        `${target}: the policy applies to the cluster proxy's pods only`,
      );
      t.same(policy.policyTypes, ['Ingress']);
      const proxyRules = policy.ingress.filter((r: any) => r.ports.some((p: any) => p.port === 'proxy'));
      t.equal(proxyRules.length, 1, `${target}: one rule admits the proxy port`);
      const [rule] = proxyRules;
      t.ok(
        rule.from.every((peer: any) => peer.podSelector && !peer.namespaceSelector && !peer.ipBlock),
        `${target}: its peers are pods of this namespace only`,
      );
      const admitted = (o: Obj) => rule.from.some((peer: any) => selects(peer.podSelector, labelsOf(o)));
      t.same(
        workloads
          .filter(admitted)
          .map((o) => o.metadata.name)
          .sort(),
        ['pullthrough-cluster-proxy', 'pullthrough-node-proxy'],
        `${target}: the node proxies and the other replicas, nothing else`,
      );
      const others = policy.ingress.filter((r: any) => r !== rule);
      t.ok(
        others.every((r: any) => r.ports.every((p: any) => p.port === 'metrics')),
        `${target}: any other rule opens the metrics port only`,
      );
      const cluster = find(objs, 'Deployment', 'pullthrough-cluster-proxy');
      const portNames = cluster.spec.template.spec.containers.flatMap((c: any) =>
        (c.ports ?? []).map((p: any) => p.name),
      );
      t.ok(portNames.includes('proxy') && portNames.includes('metrics'), `${target}: both named ports exist`);
    }
  },
);
