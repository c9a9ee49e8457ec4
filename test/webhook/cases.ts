/** Image cases shared by the unit and the HTTPS tests: image as written -> expected image. */
export const PROXY = 'localhost:7439';
const D = 'sha256:' + 'ab'.repeat(32);
export const DIGEST = D;

export const rewriteCases: [string, string][] = [
  ['nginx', 'localhost:7439/docker.io/library/nginx:latest'],
  ['nginx:1.27', 'localhost:7439/docker.io/library/nginx:1.27'],
  ['index.docker.io/library/alpine', 'localhost:7439/docker.io/library/alpine:latest'],
  ['localhost:5000/foo', 'localhost:7439/localhost_5000/foo:latest'],
  ['myreg:5000/team/app:1', 'localhost:7439/myreg_5000/team/app:1'],
  [`10.0.0.5:5000/app@${D}`, `localhost:7439/10.0.0.5_5000/app@${D}`],
  [`ghcr.io/o/a:v1@${D}`, `localhost:7439/ghcr.io/o/a:v1@${D}`],
  ['quay.io/org/app:1', 'localhost:7439/quay.io/org/app:1'],
  ['localhost/foo', 'localhost:7439/localhost/foo:latest'],
];

/** Images left alone whatever the settings, with a fragment of the stated reason. */
export const unencodable: [string, RegExp][] = [
  ['[::1]:5000/app:1', /IPv6/],
  ['Not A Ref', /not a valid image reference/],
  ['localhost:7439/foo', /names no encoded registry/],
];
