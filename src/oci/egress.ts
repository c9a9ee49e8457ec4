/**
 * Which addresses the proxy may open connections to. Origins are named by whoever writes the pod
 * spec, and redirects and token realms by the origin, so without a check the node proxy would be a
 * way into the node's link-local metadata service, its loopback services and the private network.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, BlockList } from 'node:net';
import { buildConnector } from 'undici';
import { parseRegistryHost } from './reference.js';

const alwaysBlocked = new BlockList();
alwaysBlocked.addSubnet('169.254.0.0', 16, 'ipv4');
alwaysBlocked.addSubnet('0.0.0.0', 8, 'ipv4');
alwaysBlocked.addSubnet('fe80::', 10, 'ipv6');
alwaysBlocked.addAddress('::', 'ipv6');
alwaysBlocked.addAddress('fd00:ec2::254', 'ipv6');

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** RFC 1918, the RFC 6598 shared space (pod and service ranges of some clusters) and IPv6 ULA. */
const privateRanges = new BlockList();
privateRanges.addSubnet('10.0.0.0', 8, 'ipv4');
privateRanges.addSubnet('172.16.0.0', 12, 'ipv4');
privateRanges.addSubnet('192.168.0.0', 16, 'ipv4');
privateRanges.addSubnet('100.64.0.0', 10, 'ipv4');
privateRanges.addSubnet('fc00::', 7, 'ipv6');

/** Where a connection goes, as a URL names it. */
export interface EgressTarget {
  /** Host name (lower case) or IP address; IPv6 without brackets. */
  readonly host: string;
  readonly port: number;
  /** The scheme's port (80 for http, 443 for https): what a host named without a port stands for. */
  readonly defaultPort: number;
}

export function egressTarget(url: {
  readonly protocol: string;
  readonly hostname: string;
  readonly port: string;
}): EgressTarget {
  const defaultPort = url.protocol === 'https:' ? 443 : 80;
  return { host: bare(url.hostname), port: Number(url.port) || defaultPort, defaultPort };
}

/** A connection the policy refuses; `code` is stable for logs and error mapping. */
export class EgressError extends Error {
  readonly code = 'EGRESS_REFUSED';
  constructor(message: string) {
    super(message);
    this.name = 'EgressError';
  }
}

export interface EgressRules {
  /**
   * Host list entries as operators write them (`host`, `host:port`, `host:*`): the only loopback
   * targets. An entry with a `*` in its host names nothing; one without a port names the default
   * port of the scheme.
   */
  readonly named: Iterable<string>;
  /**
   * `any`: private-range addresses may be reached for any host (origins a pod spec names);
   * `named`: only for named targets (where an origin on a public address sends us).
   */
  readonly privateRanges: 'any' | 'named';
}

export interface EgressPolicy {
  /** Throws an EgressError naming the reason when `address` (an IP) may not be reached for `target`. */
  check(target: EgressTarget, address: string): void;
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

function stripV4Mapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address;
}

/** Lower case, without IPv6 brackets, IPv6 in the compressed form URLs use. */
function bare(host: string): string {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  if (isIP(h) !== 6) return h;
  try {
    return new URL(`http://[${h}]/`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return h;
  }
}

interface Named {
  readonly host: string;
  /** undefined: the scheme's default port. */
  readonly port: number | '*' | undefined;
}

function parseNamed(entries: Iterable<string>): Named[] {
  const out: Named[] = [];
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase();
    const anyPort = entry.endsWith(':*');
    const hostPart = anyPort ? entry.slice(0, -2) : entry;
    if (hostPart === '' || hostPart.includes('*')) continue;
    const h = parseRegistryHost(hostPart);
    if (!h) continue;
    out.push({ host: bare(h.host), port: anyPort ? '*' : h.port });
  }
  return out;
}

function internal(address: string): boolean {
  const fam = family(address);
  return loopback.check(address, fam) || privateRanges.check(address, fam);
}

function describeTarget(t: EgressTarget): string {
  const host = isIP(t.host) === 6 ? `[${t.host}]` : t.host;
  return `${host}:${t.port}`;
}

/**
 * Link-local and metadata addresses are never reached; loopback only for targets named in the
 * configuration, with their port; private ranges as `rules.privateRanges` says.
 */
export function createEgressPolicy(rules: EgressRules): EgressPolicy {
  const named = parseNamed(rules.named);
  const isNamed = (t: EgressTarget): boolean =>
    named.some(
      (n) =>
        n.host === t.host &&
        (n.port === '*' || n.port === t.port || (n.port === undefined && t.port === t.defaultPort)),
    );
  return {
    check(target, rawAddress) {
      const address = stripV4Mapped(rawAddress);
      const fam = family(address);
      if (alwaysBlocked.check(address, fam))
        throw new EgressError(`connections to ${address} (link-local or metadata) are not allowed`);
      if (loopback.check(address, fam) && !isNamed(target)) {
        throw new EgressError(
          `connections to loopback ${address} for ${describeTarget(target)} are not allowed ` +
            'unless that host:port is listed explicitly',
        );
      }
      if (rules.privateRanges === 'named' && privateRanges.check(address, fam) && !isNamed(target)) {
        throw new EgressError(
          `connections to private-range ${address} for ${describeTarget(target)} are not allowed here ` +
            'unless that host:port is listed explicitly',
        );
      }
    },
  };
}

/**
 * The targets last connected to on loopback or private-range addresses: an origin there is an
 * in-cluster or on-premises registry, whose redirects and token realm live on such addresses too.
 */
export class InternalTargets {
  private readonly seen = new Map<string, boolean>();

  constructor(private readonly max = 4096) {}

  note(target: EgressTarget, addresses: readonly string[]): void {
    const key = describeTarget(target);
    this.seen.delete(key);
    // Oldest first out: the map keeps insertion order.
    if (this.seen.size >= this.max) this.seen.delete(this.seen.keys().next().value as string);
    this.seen.set(
      key,
      addresses.some((a) => internal(stripV4Mapped(a))),
    );
  }

  has(target: EgressTarget): boolean {
    return this.seen.get(describeTarget(target)) ?? false;
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

export interface GuardOptions {
  readonly timeoutMs: number;
  /** Told the addresses of every connection the policy let through. */
  readonly onConnect?: (target: EgressTarget, addresses: readonly string[]) => void;
}

/** An undici connector that applies the policy to literal addresses and to every DNS answer. */
export function guardedConnector(policy: EgressPolicy, opts: GuardOptions): buildConnector.connector {
  // The DNS answer is checked for the target's port, so each port gets its own lookup (and
  // connector); a process talks to a handful of ports.
  const byPort = new Map<string, buildConnector.connector>();
  const connectorFor = (protocol: string, port: number): buildConnector.connector => {
    const key = `${protocol}${port}`;
    let connect = byPort.get(key);
    if (connect) return connect;
    const guardedLookup = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
      const target = egressTarget({ protocol, hostname, port: String(port) });
      dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return callback(err, []);
        try {
          for (const a of addresses) policy.check(target, a.address);
        } catch (e) {
          return callback(e as NodeJS.ErrnoException, []);
        }
        opts.onConnect?.(
          target,
          addresses.map((a) => a.address),
        );
        if (options.all) return callback(null, addresses);
        const first = addresses[0];
        if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
        callback(null, first.address, first.family);
      });
    };
    connect = buildConnector({ timeout: opts.timeoutMs, lookup: guardedLookup });
    byPort.set(key, connect);
    return connect;
  };
  return (options, callback) => {
    const target = egressTarget({ protocol: options.protocol, hostname: options.hostname, port: options.port });
    if (isIP(target.host)) {
      try {
        policy.check(target, target.host);
      } catch (e) {
        callback(e as Error, null);
        return;
      }
      opts.onConnect?.(target, [target.host]);
    }
    connectorFor(options.protocol, target.port)(options, callback);
  };
}
