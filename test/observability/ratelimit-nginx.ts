/**
 * A lab registry behind nginx that adds Docker Hub's rate-limit headers to every answer, as
 * registry-1.docker.io sends them (`ratelimit-limit: 100;w=21600`), so the proxy reads them off a
 * real registry's answers. nginx writes its pid file in the lab's directory, so `lab.down(name)`
 * (registry-down.sh) stops it like the lab's own proxies.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Lab } from '../helpers/lab.js';
import { eventually } from '../helpers/wait.js';

export interface RateLimitHeaders {
  readonly limit: number;
  readonly remaining: number;
  readonly windowSeconds: number;
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** nginx on 127.0.0.1:port forwarding to `upstream`, adding the headers to every answer; its host:port. */
export async function rateLimitedFront(
  lab: Lab,
  name: string,
  port: number,
  upstream: string,
  h: RateLimitHeaders,
): Promise<string> {
  const dir = join(lab.dir, name);
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  access_log off;
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    proxy_buffering off; proxy_http_version 1.1;
    location / {
      proxy_pass ${upstream};
      proxy_set_header Host $http_host;
      proxy_set_header Connection "";
      add_header ratelimit-limit "${h.limit};w=${h.windowSeconds}" always;
      add_header ratelimit-remaining "${h.remaining};w=${h.windowSeconds}" always;
      add_header docker-ratelimit-source "127.0.0.1" always;
    }
  }
}
`,
  );
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  await eventually(() => listening(port), `nginx on ${port}`, 15_000);
  return `127.0.0.1:${port}`;
}
