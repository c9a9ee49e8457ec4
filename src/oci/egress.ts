/**
 * Which addresses the proxy may open connections to. Origins are named by whoever writes the pod
 * spec (or a token realm an origin hands us), so without a check the node proxy would be a way
 * into the node's link-local metadata service or its loopback services.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, BlockList } from 'node:net';
import { buildConnector, type Dispatcher } from 'undici';

const alwaysBlocked = new BlockList();
alwaysBlocked.addSubnet('169.254.0.0', 16, 'ipv4');
alwaysBlocked.addSubnet('0.0.0.0', 8, 'ipv4');
alwaysBlocked.addSubnet('fe80::', 10, 'ipv6');
alwaysBlocked.addAddress('::', 'ipv6');
alwaysBlocked.addAddress('fd00:ec2::254', 'ipv6');

const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

export interface EgressPolicy {
  /** Throws an Error naming the reason when `address` (an IP) may not be reached for `host`. */
  check(host: string, address: string): void;
}

function family(address: string): 'ipv4' | 'ipv6' {
  return isIP(address) === 6 ? 'ipv6' : 'ipv4';
}

function stripV4Mapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address;
}

/**
 * Link-local and metadata addresses are never reached; loopback only for hosts named explicitly
 * in the configuration (`loopbackHosts`, host names without port).
 */
export function createEgressPolicy(loopbackHosts: Iterable<string>): EgressPolicy {
  // IPv6 hosts may be named with brackets (`[::1]`, as in host lists and URL hostnames).
  const allowed = new Set([...loopbackHosts].map((h) => h.toLowerCase().replace(/^\[|\]$/g, '')));
  return {
    check(host, rawAddress) {
      const address = stripV4Mapped(rawAddress);
      const fam = family(address);
      if (alwaysBlocked.check(address, fam))
        throw new Error(`connections to ${address} (link-local or metadata) are not allowed`);
      if (loopback.check(address, fam) && !allowed.has(host.toLowerCase().replace(/^\[|\]$/g, ''))) {
        throw new Error(
          `connections to loopback ${address} for ${host} are not allowed unless the registry is listed explicitly`,
        );
      }
    },
  };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** An undici connector that applies the policy to literal addresses and to every DNS answer. */
export function guardedConnector(policy: EgressPolicy, opts: { timeoutMs: number }): buildConnector.connector {
  const guardedLookup = (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      try {
        for (const a of addresses) policy.check(hostname, a.address);
      } catch (e) {
        return callback(e as NodeJS.ErrnoException, []);
      }
      if (options.all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
  const connect = buildConnector({ timeout: opts.timeoutMs, lookup: guardedLookup });
  return (options, callback) => {
    const hostname = options.hostname.replace(/^\[|\]$/g, '');
    if (isIP(hostname)) {
      try {
        policy.check(hostname, hostname);
      } catch (e) {
        callback(e as Error, null);
        return;
      }
    }
    connect(options, callback);
  };
}

export type { Dispatcher };
