/**
 * What the observability tests read from the shipped manifests: the PrometheusRule's groups as a
 * plain Prometheus rule file, the dashboard's PromQL, and the metric names an expression uses.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const overlay = fileURLToPath(new URL('../../manifests/overlays/prometheus-operator/', import.meta.url));

export interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** The `spec` of the PrometheusRule: `groups:`, exactly what a Prometheus rule file holds. */
export function ruleGroups(): { groups: { name: string; rules: Rule[] }[] } {
  const doc = parse(readFileSync(`${overlay}prometheusrule.yaml`, 'utf8')) as {
    kind: string;
    spec: { groups: { name: string; rules: Rule[] }[] };
  };
  if (doc.kind !== 'PrometheusRule') throw new Error(`prometheusrule.yaml holds a ${doc.kind}`);
  return doc.spec;
}

export interface DashboardQuery {
  panel: string;
  expr: string;
}

interface Panel {
  type: string;
  title: string;
  targets?: { expr: string }[];
  panels?: Panel[];
}

export function dashboard(): { text: string; queries: DashboardQuery[] } {
  const text = readFileSync(`${overlay}dashboard.json`, 'utf8');
  const json = JSON.parse(text) as { panels: Panel[] };
  const walk = (panels: Panel[]): DashboardQuery[] =>
    panels.flatMap((p) => [
      ...(p.targets ?? []).map((q) => ({ panel: p.title, expr: q.expr })),
      ...walk(p.panels ?? []),
    ]);
  return { text, queries: walk(json.panels) };
}

/** Grafana's variables as a query sent straight to Prometheus needs them. */
export function asPromQL(expr: string): string {
  return expr.replaceAll('$__rate_interval', '1m').replaceAll('$__range', '5m');
}

/** The series names an expression reads: pullthrough's own, and `up` (Prometheus' own per target). */
export function metricNames(expr: string): string[] {
  return [...new Set(expr.match(/\b(?:pullthrough_[a-z0-9_]+|up)\b(?=\s*[{[)])/g) ?? [])];
}

export function promtoolAvailable(): boolean {
  try {
    execFileSync('promtool', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
