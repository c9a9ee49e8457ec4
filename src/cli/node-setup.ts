/**
 * `pullthrough node-setup`: reads the configuration and writes containerd's hosts.toml files once
 * (the DaemonSet's init step). With --node-name it also tells the cluster whether the node can be
 * served (a label, and a Warning Event when it cannot). It exits 0 either way: the node proxy must
 * start, and is harmless on a node whose runtime does not use it.
 */
import { NODE_SETUP_HELP, parseNodeSetupConfig } from '../config/node-setup.js';

export async function runNodeSetupCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseNodeSetupConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(`${NODE_SETUP_HELP}\n`);
    return 0;
  }
  const config = parsed.config;
  const { runNodeSetup } = await import('../nodesetup/index.js');
  const line = (level: string) => (obj: object, msg: string) => console.log(JSON.stringify({ level, msg, ...obj }));
  const log = { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
  const nodeName = config.nodeName;
  const report = nodeName
    ? async (readiness: { ready: boolean; problems: string[] }) => {
        const kube = await import('../kube/index.js');
        try {
          const client = kube.createKubeClient(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {});
          await kube.reportNodeReadiness(client, nodeName, readiness, log);
        } catch (err) {
          // KubeConfigError only (reportNodeReadiness logs API failures itself).
          log.error({ node: nodeName, err: (err as Error).message }, 'node readiness not reported');
        }
      }
    : undefined;
  await runNodeSetup(config, report ? { report } : {});
  return 0;
}
