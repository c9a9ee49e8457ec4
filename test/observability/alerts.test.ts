/**
 * The shipped alerts, checked by Prometheus' own tool: `promtool check rules` accepts the
 * PrometheusRule's groups, and `promtool test rules` runs alerts.promtool.yaml, where each alert
 * fires on its condition (with its runbook) and stays silent without it.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { promtoolAvailable, ruleGroups } from './rules.js';

const unitTests = fileURLToPath(new URL('alerts.promtool.yaml', import.meta.url));
const skip = promtoolAvailable() ? false : 'promtool is not installed (Debian: prometheus)';

function promtool(args: string[], cwd: string): { code: number; out: string } {
  try {
    return { code: 0, out: execFileSync('promtool', args, { cwd, encoding: 'utf8', stdio: 'pipe' }) };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { code: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

t.test('promtool checks the rules and runs their unit tests', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pt-alerts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'rules.yaml'), stringify(ruleGroups()));
  copyFileSync(unitTests, join(dir, 'alerts.promtool.yaml'));

  const check = promtool(['check', 'rules', 'rules.yaml'], dir);
  t.equal(check.code, 0, `promtool check rules: ${check.out}`);
  const alerts = ruleGroups().groups.flatMap((g) => g.rules);
  t.match(check.out, `SUCCESS: ${alerts.length} rules found`);

  const run = promtool(['test', 'rules', 'alerts.promtool.yaml'], dir);
  t.equal(run.code, 0, `promtool test rules: ${run.out}`);

  // Every alert has a test where it fires and one where it stays silent.
  const tests = (
    parse(readFileSync(unitTests, 'utf8')) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    }
  ).tests.flatMap((x) => x.alert_rule_test);
  for (const { alert } of alerts) {
    const cases = tests.filter((c) => c.alertname === alert);
    t.ok(
      cases.some((c) => c.exp_alerts.length > 0),
      `${alert} is tested firing`,
    );
    t.ok(
      cases.some((c) => c.exp_alerts.length === 0),
      `${alert} is tested silent`,
    );
  }
  for (const a of alerts) {
    t.ok(a.annotations?.summary && a.annotations.runbook, `${a.alert} has a summary and a runbook`);
    t.ok(a.labels?.severity, `${a.alert} has a severity`);
  }
});

t.test('promtool rejects a broken rule file (the check is not vacuous)', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pt-alerts-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: [{ name: 'x', rules: [{ alert: 'X', expr: 'sum(' }] }] }));
  t.not(promtool(['check', 'rules', 'rules.yaml'], dir).code, 0);
});
