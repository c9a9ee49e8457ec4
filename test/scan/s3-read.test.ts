/**
 * The scan's reads of the cache registry on object storage: distribution on S3 answers blob GETs
 * with a 307 to a presigned URL, and an index the cache holds as a blob (its platforms not all
 * cached) is read through that redirect. On the lab's radosgw, with the scan account's Basic
 * credential on the registry.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { registryPullCredentials } from '../../src/scan/pull-credential.js';
import { Lab, type Image } from '../helpers/lab.js';
import { onS3Flags, startS3 } from '../helpers/s3-lab.js';

/** s3-up.sh takes S3..S3+12. */
const S3 = 15670;
const REGISTRY = 15683;
const USER = 'scan';
const PASSWORD = 'scan-secret';
const REPO = 'team/app';

const lab = new Lab('scan-s3-read');
let s3Up = false;
let registryUrl = '';
let image: Image;

t.teardown(async () => {
  await lab.down('cache');
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

t.before(async () => {
  const keys = await startS3(lab, S3);
  s3Up = true;
  registryUrl = (
    await lab.registry(
      'cache',
      REGISTRY,
      onS3Flags(`http://127.0.0.1:${S3}`, keys, '/scan', '--htpasswd', `${USER}:${PASSWORD}`),
    )
  ).url;
  image = await lab.image(`127.0.0.1:${REGISTRY}`, REPO, 'v1', ['--layers', '1', '--creds', `${USER}:${PASSWORD}`]);
});

t.test('a blob read follows the registry redirect into the bucket', async (t) => {
  const access = registryPullCredentials({ registryUrl, username: USER, password: PASSWORD });
  const manifest = await access.read(REPO, `manifests/${image.digest}`);
  t.ok(manifest, 'the manifest is read from the registry');
  const config = (JSON.parse(String(manifest)) as { config: { digest: string } }).config.digest;

  const direct = await request(`${registryUrl}/v2/${REPO}/blobs/${config}`, {
    headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` },
  });
  await direct.body.dump();
  t.equal(direct.statusCode, 307, 'the registry redirects blob GETs to the object store');

  const blob = await access.read(REPO, `blobs/${config}`);
  t.ok(blob, 'the blob is read through the redirect');
  t.equal(blob && `sha256:${createHash('sha256').update(blob).digest('hex')}`, config, 'its bytes are the blob');
});
