/**
 * A fake Kubernetes API server for tests. Typical use:
 *
 *   const api = await FakeApiServer.start();
 *   const kubeconfig = await writeKubeconfig(api);
 *   api.addPod({ metadata: { namespace: 'ns', name: 'p' }, spec: { nodeName: 'node-a', containers: [...] } });
 *   ... run the real client against `kubeconfig` ...
 *   api.expireResourceVersions();   // next watch resume gets 410, the informer relists
 *   await api.stop(); await api.restart();
 *   await api.close();
 */
export { FakeApiServer, type FakeApiServerOptions, type RecordedRequest } from './server.js';
export { writeKubeconfig, kubeconfigText, type KubeconfigOptions } from './kubeconfig.js';
export { jsonPatch, mergePatch, PatchError } from './patch.js';
export type { KubeObject, ObjectMeta, StoredEvent } from './store.js';
export { RESOURCES, type ResourceType } from './resources.js';
