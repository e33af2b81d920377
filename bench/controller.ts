/**
 * Allocations per second through the controller (HTTP -> lease store -> etcd
 * transaction) against raw etcd put-transactions per second through etcd3,
 * at the same concurrency, against the same etcd, in the same run.
 *
 * The raw baseline is one "create if absent" transaction per key: the least
 * work a correct allocation could do with one transaction each. The
 * controller can beat it only by group-committing concurrent allocations.
 *
 * Then the controller at scale (issue 12, item 6), against its own etcd
 * seeded with 100,000 leases and their history (sim/seed.ts writes the
 * controller's own records in large transactions; records only, no agent or
 * kernel state, addresses in 198.18.0.0/15 outside the underlay /24):
 * cold start to ready and RSS; etcd bytes sent and controller CPU during a
 * minute at rest; `berthctl leases ls` of all 100k; `leases show|history
 * <identity>` (API and CLI); binds while an operator lists and reads history.
 * Last, the stall of calls in flight when the etcd leader of a 3-member
 * cluster is killed, with one 5 s attempt deadline (as before) and with the
 * default short attempts.
 * Then the cost of metrics: 20000 binds, each released at once, at concurrency 16 in one run,
 * with a scraper on the controller's /metrics switched on and off every half
 * second (bench/scrape-cost.ts).
 *
 *   npm run bench:controller [-- --count 2000] [--only throughput|scale|leader] [--leases 100000] [--rest-s 60]
 *   (env BENCH_SCRAPE_MS (250))
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ControllerClient } from '../common/controller-client';
import { freePort, startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { benchLeaderLoss, benchScale } from './controller-scale';
import { scrapeCost, scrapeCostLine, type ScrapeCost } from './scrape-cost';

const flag = (name: string) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : undefined; };
const COUNT = Number(flag('--count')) || 2000;
const ONLY = flag('--only');
const LEVELS = [1, 16, 64];
/** Bind + release pairs of the metrics-cost run: tens of seconds, dozens of half-second slices. */
const SCRAPE_COUNT = 20_000;

async function pool<T>(n: number, concurrency: number, job: (i: number) => Promise<T>): Promise<number> {
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < n; i = next++) await job(i);
  }));
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function main(): Promise<void> {
  if (ONLY === undefined || ONLY === 'throughput') await benchThroughput();
  if (ONLY === undefined || ONLY === 'scale') await benchScale({ leases: Number(flag('--leases')) || 100_000, restSeconds: Number(flag('--rest-s')) || 60 });
  if (ONLY === undefined || ONLY === 'leader') await benchLeaderLoss();
}

async function benchThroughput(): Promise<void> {
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
    // One long run at concurrency 16, the scraper switched on and off in slices (bench/scrape-cost.ts).
    // Each op binds and releases into a pool without hold, so etcd does not grow between slices.
    for (const c of LEVELS) await client.deletePool(`bench-c${c}`, true);
    await client.createPool({ name: 'bench-metrics', cidr: '198.18.64.0/18', holdSeconds: 0 });
    mc = await scrapeCost({ urls: [`http://127.0.0.1:${metricsPort}`], everyMs: Number(process.env.BENCH_SCRAPE_MS ?? 250), sliceMs: 500, cpuPids: [ctl.pid!] },
      async (done) => {
        await pool(SCRAPE_COUNT, 16, async (i) => {
          await client.bind('bench-metrics', { identity: `bench/m/${i}`, host: 'bench-host', containerId: `c${i}`, ifName: 'eth0' });
          await client.release('bench-metrics', { identity: `bench/m/${i}`, containerId: `c${i}` });
          done();
        });
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
  if (mc) console.log(scrapeCostLine(`${SCRAPE_COUNT} bind+release at concurrency 16`, mc));
}

main().catch((e) => { console.error(e); process.exit(1); });
