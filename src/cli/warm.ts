/**
 * `pullthrough warm FILE|-`: creates a CachedImage per image reference read, and says per line what
 * became of it. Exit 0 when every reference was created or already there, 1 otherwise.
 */
import { readFile } from 'node:fs/promises';
import { text } from 'node:stream/consumers';
import { parseWarmArgs, WARM_HELP } from '../config/warm.js';

export async function runWarmCommand(argv: readonly string[]): Promise<number> {
  const args = parseWarmArgs(argv, process.env);
  if (args.help) {
    process.stdout.write(`${WARM_HELP}\n`);
    return args.misuse ? 2 : 0;
  }
  const input = args.file === '-' ? await text(process.stdin) : await readFile(args.file, 'utf8');
  const { createKubeClient, createCachedImageApi } = await import('../kube/index.js');
  const { createCachedImages, readWarmList } = await import('../controller/warm-list.js');
  const client = createKubeClient(args.kubeconfig !== undefined ? { kubeconfig: args.kubeconfig } : {});
  const outcomes = await createCachedImages(createCachedImageApi(client), readWarmList(input), {
    ...(args.retain ? { retain: true } : {}),
    ...(args.platforms ? { platforms: args.platforms } : {}),
    ...(args.pullSecret ? { pullSecretRef: args.pullSecret } : {}),
  });
  let failed = 0;
  for (const o of outcomes) {
    if (typeof o.result === 'string') {
      process.stdout.write(`${o.result} ${o.name ?? ''} ${o.input}\n`);
    } else {
      failed++;
      process.stderr.write(`line ${String(o.line)}: ${o.input}: ${o.result.error}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}
