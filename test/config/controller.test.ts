/** `pullthrough controller` settings: defaults, the environment, and refusals. */
import t from 'tap';
import { parseControllerConfig } from '../../src/config/controller.js';
import { ConfigError } from '../../src/config/flags.js';

const config = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  const parsed = parseControllerConfig(argv, env);
  if (parsed.help) throw new Error('unexpected help');
  return parsed.config;
};

t.test('defaults: the Lease in the pod namespace, identity from POD_NAME', async (t) => {
  const c = config([], { POD_NAME: 'pullthrough-controller-abc', POD_NAMESPACE: 'pt' });
  t.match(c, {
    namespace: 'pt',
    leaseName: 'pullthrough-controller',
    identity: 'pullthrough-controller-abc',
    leaseDurationMs: 15_000,
    renewDeadlineMs: 10_000,
    retryPeriodMs: 2_000,
    expireAfterMs: 30 * 86_400_000,
    statusWritesPerSecond: 5,
    syncIntervalMs: 1_000,
  });
  t.equal(config([]).namespace, 'pullthrough');
  t.ok(config([]).identity.length > 0, 'the host name without POD_NAME');
});

t.test('flags and PULLTHROUGH_* variables', async (t) => {
  const c = config(['--expire-after=7d', '--status-writes-per-second=0.5'], { PULLTHROUGH_LEASE_NAME: 'l' });
  t.equal(c.expireAfterMs, 7 * 86_400_000);
  t.equal(c.statusWritesPerSecond, 0.5);
  t.equal(c.leaseName, 'l');
  t.equal(parseControllerConfig(['--help']).help, true);
});

t.test('refusals', async (t) => {
  const refused = (argv: string[], message: RegExp) => {
    try {
      config(argv);
      t.fail(`${argv.join(' ')}: accepted`);
    } catch (err) {
      t.ok(err instanceof ConfigError && message.test(err.message), `${argv.join(' ')}: ${String(err)}`);
    }
  };
  refused(['--renew-deadline=15s'], /--renew-deadline must be shorter than --lease-duration/);
  refused(['--status-writes-per-second=0'], /--status-writes-per-second/);
  refused(['--status-writes-per-second=many'], /--status-writes-per-second/);
  refused(['--expire-after=soon'], /--expire-after: not a duration/);
  refused(['--identity= '], /--identity: empty/);
  refused(['--no-such-flag'], /no-such-flag/);
});
