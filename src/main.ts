#!/usr/bin/env node
/**
 * The `pullthrough` command: dispatches to the subcommands of src/cli/, the composition roots that
 * read their configuration and wire their components. Nothing else constructs dependencies;
 * everything below takes them as arguments.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runControllerCommand } from './cli/controller.js';
import { runDoctorCommand } from './cli/doctor.js';
import { runDecode, runEncode } from './cli/encode.js';
import { runGcRunnerCommand } from './cli/gc-runner.js';
import { runNodeSetupCommand } from './cli/node-setup.js';
import { runProxy } from './cli/proxy.js';
import { USAGE } from './cli/usage.js';
import { runWarmCommand } from './cli/warm.js';
import { runWebhookCommand } from './cli/webhook.js';
import { ConfigError } from './config/flags.js';

export async function main(argv: string[]): Promise<number> {
  // undici parses HTTP with llhttp compiled to WebAssembly, and V8 recompiles hot wasm with
  // TurboFan on a helper thread whose scratch memory then stays in the RSS for good; Liftoff's code
  // is as fast here, since on a body llhttp only counts bytes. It must be set before the first HTTP
  // connection.
  setFlagsFromString('--liftoff-only');
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'proxy':
        return await runProxy(rest);
      case 'webhook':
        return await runWebhookCommand(rest);
      case 'controller':
        return await runControllerCommand(rest);
      case 'warm':
        return await runWarmCommand(rest);
      case 'node-setup':
        return await runNodeSetupCommand(rest);
      case 'gc-runner':
        return await runGcRunnerCommand(rest);
      case 'doctor':
        return await runDoctorCommand(rest);
      case 'encode':
        return runEncode(rest);
      case 'decode':
        return runDecode(rest);
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
