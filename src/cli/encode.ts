/**
 * `pullthrough encode` and `pullthrough decode`: the webhook's rewrite of an image reference and
 * its inverse, for a person checking what a pod will pull.
 */
import { DECODE_HELP, ENCODE_HELP, parseDecodeArgs, parseEncodeArgs } from '../config/encode.js';
import { decodeImage, encodeImage } from '../oci/encoding.js';
import { formatReference } from '../oci/reference.js';

export function runEncode(argv: readonly string[]): number {
  const args = parseEncodeArgs(argv, process.env);
  if (args.help) {
    process.stdout.write(`${ENCODE_HELP}\n`);
    return args.misuse ? 2 : 0;
  }
  const r = encodeImage(args.image, args.proxyHost);
  if (!r.ok) {
    process.stderr.write(`cannot encode: ${r.reason}\n`);
    return 1;
  }
  process.stdout.write(`${r.value}\n`);
  return 0;
}

export function runDecode(argv: readonly string[]): number {
  const args = parseDecodeArgs(argv, process.env);
  if (args.help) {
    process.stdout.write(`${DECODE_HELP}\n`);
    return args.misuse ? 2 : 0;
  }
  const r = decodeImage(args.reference);
  if (!r.ok) {
    process.stderr.write(`cannot decode: ${r.reason}\n`);
    return 1;
  }
  process.stdout.write(`${formatReference(r.value, { defaultTag: false })}\n`);
  return 0;
}
