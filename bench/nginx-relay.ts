/**
 * The benchmark's nginx anchor: a plain nginx `proxy_pass` in front of the origin registry, the relay
 * a user would put there (no response buffering, no access log, keep-alive connections upstream). It
 * is what a cache that only relays should match; the lab's logging proxy writes a JSON line per
 * request and opens an upstream connection per request, so it is not a fair anchor.
 */
import type { ChildProcess } from 'node:child_process';
import { startNginx } from './lib.js';

/** Starts the relay on 127.0.0.1:`port` in front of `upstream` (host:port); returns nginx's master. */
export function startNginxRelay(o: { dir: string; port: number; upstream: string }): ChildProcess {
  return startNginx(
    o.dir,
    `  upstream origin { server ${o.upstream}; keepalive 64; }
  server {
    listen 127.0.0.1:${o.port};
    client_max_body_size 0;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }`,
  );
}
