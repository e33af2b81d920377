/**
 * docs/metrics.md lists every Berth metric the daemons register, and the
 * Grafana dashboard only queries metrics that exist.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { AgentMetrics } from '../agent/metrics';
import { ControllerMetrics } from '../controller/metrics';
import type { LeaseStore } from '../controller/store';
import type { ClusterView } from '../controller/view';

const ROOT = join(__dirname, '../..');

function registered(): string[] {
  const c = new ControllerMetrics();
  c.observe({ etcd: {} as Etcd3, view: {} as ClusterView, store: {} as LeaseStore, isLeader: () => false });
  const a = new AgentMetrics();
  a.observe('h', { leases: () => [], journalDepth: async () => 0, fastPathSizes: () => undefined, registered: () => true, registrations: () => 1 });
  return [...c.registry.getMetricsAsArray(), ...a.registry.getMetricsAsArray()].map((m) => m.name).filter((n) => n.startsWith('berth_'));
}

test('docs/metrics.md documents exactly the registered berth_ metrics', (t) => {
  const doc = readFileSync(join(ROOT, 'docs/metrics.md'), 'utf8');
  const documented = new Set([...doc.matchAll(/^\| `(berth_[a-z_]+)` \|/gm)].map((m) => m[1]));
  const names = registered();
  t.true(names.length >= 25);
  t.deepEqual(names.filter((n) => !documented.has(n)), [], 'registered but not documented');
  t.deepEqual([...documented].filter((n) => !names.includes(n)), [], 'documented but not registered');
});

test('the Grafana dashboard queries only registered metrics, and every one of them', (t) => {
  const dash = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/berth.json'), 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  const exprs = dash.panels.flatMap((p) => p.targets ?? []).map((x) => x.expr).join('\n');
  const used = new Set([...exprs.matchAll(/\b(berth_[a-z_]+?)(_bucket|_count|_sum)?\b/g)].map((m) => m[1]));
  const names = registered();
  t.deepEqual([...used].filter((n) => !names.includes(n)), [], 'queried but not registered');
  t.deepEqual(names.filter((n) => !used.has(n)), [], 'registered but on no panel');
});
