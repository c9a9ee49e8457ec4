/**
 * The benchmark's remote origin: nginx in front of the origin registry, limiting each response to
 * `rate` bytes/s (nginx limit_rate, per request: with keep-alive, one at a time per connection)
 * after a `delayMs` wait per request (bench/delay-responder.ts, consulted by nginx). nginx relays
 * the bytes from memory buffers, with no temporary file: the link itself should cost the two
 * cores as little as possible, since what it models, a network, costs them nothing.
 */
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startChild, startNginx } from './lib.js';

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
  const nginx = startNginx(
    o.dir,
    `  # Idle upstream connections close before the responder's 60 s keep-alive timeout does.
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
  }`,
  );
  // After nginx, which makes the folder; nginx asks the responder only once requests come.
  const responder = startChild(
    process.execPath,
    ['--import', 'tsx', join(o.root, 'bench/delay-responder.ts'), String(o.delayPort), String(o.delayMs)],
    join(o.dir, 'delay-responder.log'),
  );
  return [responder, nginx];
}
