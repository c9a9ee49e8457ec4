/**
 * What the commands share: the top-level usage text and the wait for the signal that stops a
 * long-running command.
 */
export const USAGE = `Usage: pullthrough <command> [flags]

Commands:
  proxy       the node proxy (serves pulls from the cache, fills it from origins)
  webhook     the admission webhook that rewrites pod images to the node proxy
  controller  keeps a CachedImage for every image pods use (one leader at a time)
  gc-runner   runs the cache registry's garbage-collect for the controller (the registry's sidecar)
  warm        creates CachedImages from a list of images, so the controller fetches them
  node-setup  write containerd hosts.toml for the fallback chain (the DaemonSet's init step)
  doctor      check that this node can pull through pullthrough (exit 1 when it cannot)
  encode      print the rewritten reference for an image
  decode      print the origin image a rewritten reference stands for

Run "pullthrough <command> --help" for the flags of a command.
`;

/** Resolves with the name of the first SIGTERM or SIGINT. */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}
