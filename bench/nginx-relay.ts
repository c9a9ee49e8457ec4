/**
 * The benchmark's nginx anchor: a plain nginx `proxy_pass` in front of the origin registry, the relay
 * a user would put there (no response buffering, no access log, keep-alive connections upstream). It
 * is what a cache that only relays should match; the lab's logging proxy writes a JSON line per
 * request and opens an upstream connection per request, so it is not a fair anchor.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startChild } from './lib.js';

/** Starts the relay on 127.0.0.1:`port` in front of `upstream` (host:port); returns nginx's master. */
export function startNginxRelay(o: { dir: string; port: number; upstream: string }): ChildProcess {
  mkdirSync(join(o.dir, 'tmp'), { recursive: true });
  const conf = join(o.dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
worker_processes 1;
pid ${o.dir}/nginx.pid;
error_log ${o.dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${o.dir}/tmp/body; proxy_temp_path ${o.dir}/tmp/proxy; fastcgi_temp_path ${o.dir}/tmp/fcgi;
  uwsgi_temp_path ${o.dir}/tmp/uwsgi; scgi_temp_path ${o.dir}/tmp/scgi;
  upstream origin { server ${o.upstream}; keepalive 64; }
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
  }
}
`,
  );
  return startChild('nginx', ['-p', o.dir, '-c', conf, '-e', join(o.dir, 'error.log')], join(o.dir, 'nginx.out'));
}
