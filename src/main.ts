#!/usr/bin/env node
/**
 * The `pullthrough` command: dispatches to the subcommands of src/cli/, the composition roots that
 * read their configuration and wire their components. Nothing else constructs dependencies;
 * everything below takes them as arguments.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { USAGE } from './cli/usage.js';
import { ConfigError } from './config/flags.js';

export async function main(argv: string[]): Promise<number> {
  // undici parses HTTP with llhttp compiled to WebAssembly, and V8 recompiles hot wasm with
  // TurboFan on a helper thread whose scratch memory then stays in the RSS for good; Liftoff's code
  // is as fast here, since on a body llhttp only counts bytes. It must be set before the first HTTP
  // connection.
  setFlagsFromString('--liftoff-only');
  const [command, ...rest] = argv;
  // Each subcommand's module is loaded only when it runs: loading all of them costs every start
  // (the node-setup init container, the doctor, the gc-runner sidecar) several CPU-seconds.
  try {
    switch (command) {
      case 'proxy':
        return await (await import('./cli/proxy.js')).runProxy(rest);
      case 'webhook':
        return await (await import('./cli/webhook.js')).runWebhookCommand(rest);
      case 'controller':
        return await (await import('./cli/controller.js')).runControllerCommand(rest);
      case 'warm':
        return await (await import('./cli/warm.js')).runWarmCommand(rest);
      case 'node-setup':
        return await (await import('./cli/node-setup.js')).runNodeSetupCommand(rest);
      case 'gc-runner':
        return await (await import('./cli/gc-runner.js')).runGcRunnerCommand(rest);
      case 'doctor':
        return await (await import('./cli/doctor.js')).runDoctorCommand(rest);
      case 'encode':
        return (await import('./cli/encode.js')).runEncode(rest);
      case 'decode':
        return (await import('./cli/encode.js')).runDecode(rest);
      case undefined:
      case '--help':
      case 'help':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`pullthrough ${command}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`pullthrough: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
