/**
 * node-setup and the doctor run in a pod with the node's root under --host-root, while containerd's
 * config_path names node paths: both compare the hosts directory as the node sees it.
 */
import t from 'tap';
import { parseDoctorConfig } from '../../src/config/doctor.js';
import { checkContainerdConfig, nodePath } from '../../src/nodesetup/index.js';

const config = '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n';

t.test('nodePath strips the host root, and only a whole leading directory of it', async (t) => {
  t.equal(nodePath('/host/etc/containerd/certs.d', '/host'), '/etc/containerd/certs.d');
  t.equal(nodePath('/etc/containerd/certs.d', undefined), '/etc/containerd/certs.d');
  t.equal(nodePath('/hostile/etc/containerd/certs.d', '/host'), '/hostile/etc/containerd/certs.d');
});

t.test('the doctor reads --host-root and judges config_path on node paths', async (t) => {
  const parsed = parseDoctorConfig(['--hosts-dir=/host/etc/containerd/certs.d', '--host-root=/host/'], {});
  if (parsed.help) throw new Error('help');
  t.equal(parsed.config.hostRoot, '/host', 'a trailing slash is dropped');
  t.notOk(checkContainerdConfig(config, parsed.config.hostsDir).ok, 'the pod path is not what containerd reads');
  t.ok(checkContainerdConfig(config, nodePath(parsed.config.hostsDir, parsed.config.hostRoot)).ok, 'the node path is');
  const without = parseDoctorConfig(['--hosts-dir=/etc/containerd/certs.d'], {});
  if (without.help) throw new Error('help');
  t.equal(without.config.hostRoot, undefined, 'no host root: paths are the node paths');
});
