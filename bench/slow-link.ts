/**
 * The benchmark's remote origin: nginx in front of the origin registry, limiting each response to
 * `rate` bytes/s (nginx limit_rate, per request: with keep-alive, one at a time per connection)
 * after a `delayMs` wait per request (bench/delay-responder.ts, consulted by nginx). nginx relays
 * the bytes from memory buffers, with no temporary file: the link itself should cost the two
 * cores as little as possible, since what it models, a network, costs them nothing.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startChild } from './lib.js';

/** Starts the link; returns the delay responder and nginx's master (the worker is its child). */
export function startSlowLink(o: {
  dir: string;
  port: number;
  delayPort: number;
  upstream: string;
  rate: number;
  delayMs: number;
  root: string;
}): ChildProcess[] {
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
  # Idle upstream connections close before the responder's 60 s keep-alive timeout does.
  upstream delay { server 127.0.0.1:${o.delayPort}; keepalive 64; keepalive_timeout 30s; }
  upstream origin { server ${o.upstream}; keepalive 64; keepalive_timeout 30s; }
  server {
    listen 127.0.0.1:${o.port};
    client_max_body_size 0;
    proxy_http_version 1.1;
    # proxy_set_header is inherited only by a level that sets none: each location sets
    # Connection "" itself, or nginx asks its upstreams to close after every request.
    location / {
      proxy_pass http://delay;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
    location /__origin/ {
      internal;
      rewrite ^/__origin(/.*)$ $1 break;
      proxy_pass http://origin;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      # limit_rate needs buffering; memory buffers only, no temp file: the origin waits instead.
      proxy_buffering on;
      proxy_max_temp_file_size 0;
      proxy_buffer_size 64k;
      proxy_buffers 8 64k;
      limit_rate ${o.rate};
    }
  }
}
`,
  );
  const responder = startChild(
    process.execPath,
    ['--import', 'tsx', join(o.root, 'bench/delay-responder.ts'), String(o.delayPort), String(o.delayMs)],
    join(o.dir, 'delay-responder.log'),
  );
  const nginx = startChild(
    'nginx',
    ['-p', o.dir, '-c', conf, '-e', join(o.dir, 'error.log')],
    join(o.dir, 'nginx.out'),
  );
  return [responder, nginx];
}
