/**
 * Allocations per second through the controller (HTTP -> lease store -> etcd
 * transaction) against raw etcd put-transactions per second through etcd3,
 * at the same concurrency, against the same etcd, in the same run.
 *
 * The raw baseline is one "create if absent" transaction per key: the least
 * work a correct allocation could do with one transaction each. The
 * controller can beat it only by group-committing concurrent allocations.
 *
 * Then the cost of metrics: 2000 allocations at concurrency 16, 8 pairs of runs
 * alternately with and without a scraper on its /metrics (bench/scrape-cost.ts).
 *
 *   npm run bench:controller [-- --count 2000]   (env BENCH_SCRAPE_PAIRS (8), BENCH_SCRAPE_MS (250))
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ControllerClient } from '../common/controller-client';
import { freePort, startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { scrapeCost, scrapeCostLine, type ScrapeCost } from './scrape-cost';

const COUNT = Number(process.argv[process.argv.indexOf('--count') + 1]) || 2000;
const LEVELS = [1, 16, 64];
/** Allocations per run of the metrics-cost phase: short runs (about a second), many pairs, so load from elsewhere falls on both halves. */
const SCRAPE_COUNT = 2000;

async function pool<T>(n: number, concurrency: number, job: (i: number) => Promise<T>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < n; i = next++) await job(i);
  }));
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function main(): Promise<void> {
  const etcd = await startEtcd();
  // The controller runs as its own process, as in production; this process only generates load.
  const port = await freePort();
  const metricsPort = await freePort();
  const ctl = spawn(process.execPath, [join(__dirname, '../controller/main.js'), '--etcd-endpoints', etcd.endpoint, '--listen', `127.0.0.1:${port}`,
    '--metrics-listen', `127.0.0.1:${metricsPort}`],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, BERTH_LOG_LEVEL: 'warn' } });
  const client = new ControllerClient({ url: `http://127.0.0.1:${port}` });
  await eventually(() => client.health(), { timeoutMs: 15_000, what: 'controller' });
  const raw = etcd.client();
  const rows: { c: number; n: number; alloc: number; txn: number }[] = [];
  let mc: ScrapeCost | undefined;
  try {
    // Pools may not overlap: one /20 each (4094 addresses).
    for (const [level, c] of LEVELS.entries()) {
      const n = c === 1 ? Math.min(COUNT, 500) : COUNT;
      const poolName = `bench-c${c}`;
      await client.createPool({ name: poolName, cidr: `198.18.${level * 16}.0/20` });
      const allocSecs = await pool(n, c, (i) => client.bind(poolName, { identity: `bench/${c}/${i}`, host: 'bench-host', containerId: `c${i}`, ifName: 'eth0' }));
      const txnSecs = await pool(n, c, (i) => {
        const key = `/bench/raw/${c}/${i}`;
        return raw.if(key, 'Version', '==', 0).then(raw.put(key).value(JSON.stringify({ i, c }))).commit();
      });
      rows.push({ c, n, alloc: n / allocSecs, txn: n / txnSecs });
    }
    mc = await scrapeCost([`http://127.0.0.1:${metricsPort}`], Number(process.env.BENCH_SCRAPE_PAIRS ?? 8), Number(process.env.BENCH_SCRAPE_MS ?? 250), [ctl.pid!], async (run) => {
      const poolName = `bench-m${run}`;
      await client.createPool({ name: poolName, cidr: `198.18.${(LEVELS.length + (run % 2)) * 16}.0/20` });
      const secs = await pool(SCRAPE_COUNT, 16, (i) => client.bind(poolName, { identity: `bench/m${run}/${i}`, host: 'bench-host', containerId: `c${i}`, ifName: 'eth0' }));
      // Untimed: every run starts from the same etcd size (the expirer reads every lease each sweep).
      await client.deletePool(poolName, true);
      return secs;
    });
  } finally {
    client.close();
    ctl.kill('SIGTERM');
    await new Promise((r) => ctl.once('exit', r));
    await etcd.stop();
  }
  console.log('\ncontroller allocations/s vs raw etcd put-transactions/s (same etcd, same run)');
  console.log('concurrency  count  alloc/s  etcd-txn/s  ratio');
  for (const r of rows) {
    console.log(`${String(r.c).padStart(11)}  ${String(r.n).padStart(5)}  ${r.alloc.toFixed(0).padStart(7)}  ${r.txn.toFixed(0).padStart(10)}  ${(r.alloc / r.txn).toFixed(2).padStart(5)}`);
  }
  if (mc) console.log(scrapeCostLine(`${SCRAPE_COUNT} allocations at concurrency 16`, mc));
}

main().catch((e) => { console.error(e); process.exit(1); });
