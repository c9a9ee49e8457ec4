/**
 * `pullthrough node-setup`: reads the configuration and writes containerd's hosts.toml files once
 * (the DaemonSet's init step).
 */
import { NODE_SETUP_HELP, parseNodeSetupConfig } from '../config/node-setup.js';

export async function runNodeSetupCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseNodeSetupConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(`${NODE_SETUP_HELP}\n`);
    return 0;
  }
  const { runNodeSetup } = await import('../nodesetup/index.js');
  await runNodeSetup(parsed.config);
  return 0;
}
