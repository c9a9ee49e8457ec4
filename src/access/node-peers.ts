/**
 * Whether a request comes from the node itself: its peer address is one of this network
 * namespace's own addresses (loopback, or an address of a local interface). Under hostNetwork
 * that is the node, containerd included; a pod on the pod network has an address of its own.
 * The kernel drops packets that arrive from outside with one of our own addresses as their source
 * (a martian source), so a remote peer cannot pass for a local one.
 */
import { networkInterfaces } from 'node:os';

/** Decides which peers may be served private content; see AccessControlOptions.peers. */
export interface PeerPolicy {
  isNode(address: string | undefined): boolean;
}

/** The addresses of this namespace's interfaces, as `os.networkInterfaces()` lists them. */
export type InterfaceAddresses = () => Iterable<string>;

const readInterfaces: InterfaceAddresses = () =>
  Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));

export class LocalPeers implements PeerPolicy {
  private readonly read: InterfaceAddresses;
  private readonly refreshMs: number;
  private readonly now: () => number;
  private addresses = new Set<string>();
  private readAt = Number.NEGATIVE_INFINITY;

  /** `refreshMs`: an unknown address re-reads the interfaces at most this often (they can change). */
  constructor(opts: { read?: InterfaceAddresses; refreshMs?: number; now?: () => number } = {}) {
    this.read = opts.read ?? readInterfaces;
    this.refreshMs = opts.refreshMs ?? 1000;
    this.now = opts.now ?? Date.now;
  }

  isNode(address: string | undefined): boolean {
    if (address === undefined) return false;
    const a = normalize(address);
    if (isLoopback(a)) return true;
    if (this.addresses.has(a)) return true;
    const now = this.now();
    if (now - this.readAt < this.refreshMs) return false;
    this.readAt = now;
    this.addresses = new Set([...this.read()].map(normalize));
    return this.addresses.has(a);
  }
}

/** IPv4-mapped IPv6 (`::ffff:10.0.0.1`, how a dual-stack socket reports IPv4) as plain IPv4; no zone. */
function normalize(address: string): string {
  const a = address.toLowerCase().replace(/%.*$/, '');
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** The whole of 127.0.0.0/8 is loopback, though `lo` lists only 127.0.0.1. */
function isLoopback(a: string): boolean {
  return a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}
