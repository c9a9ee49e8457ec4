/**
 * `pullthrough encode` and `pullthrough decode` arguments: one image or reference, and for encode
 * the proxy host the rewritten reference names.
 */
import { helpText, parseFlags, valueOf, type FlagSpec } from './flags.js';

export const encodeFlags: readonly FlagSpec[] = [
  {
    name: 'proxy-host',
    kind: 'string',
    arg: 'HOST:PORT',
    default: 'localhost:7439',
    help: "The host rewritten references point at (the webhook's --proxy-host).",
  },
];

export const ENCODE_HELP = helpText(
  'Usage: pullthrough encode IMAGE [--proxy-host localhost:7439]\n' +
    'Prints the reference the webhook writes into pods for IMAGE.',
  encodeFlags,
);

export const DECODE_HELP = helpText(
  'Usage: pullthrough decode REFERENCE\n' +
    'Prints the origin image a rewritten reference (localhost:7439/<registry>/<repo>...) stands for.',
  [],
);

/** `misuse`: not exactly one argument, so the command prints its help and exits with 2. */
export type ParsedArgs<T> = { readonly help: true; readonly misuse: boolean } | ({ readonly help: false } & T);

export function parseEncodeArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedArgs<{ readonly image: string; readonly proxyHost: string }> {
  const options = { positionals: true, emptyEnvIsUnset: true };
  const { values, positionals, help } = parseFlags(encodeFlags, argv, env, options);
  const [image] = positionals;
  if (help || positionals.length !== 1 || image === undefined) return { help: true, misuse: !help };
  return { help: false, image, proxyHost: valueOf(values, 'proxy-host') };
}

export function parseDecodeArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedArgs<{ readonly reference: string }> {
  const { positionals, help } = parseFlags([], argv, env, { positionals: true });
  const [reference] = positionals;
  if (help || positionals.length !== 1 || reference === undefined) return { help: true, misuse: !help };
  return { help: false, reference };
}
