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
 *
 *   npm run bench:controller [-- --count 2000] [--only throughput|scale|leader] [--leases 100000] [--rest-s 60]
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ControllerClient } from '../common/controller-client';
import { freePort, startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { benchLeaderLoss, benchScale } from './controller-scale';

const flag = (name: string) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : undefined; };
const COUNT = Number(flag('--count')) || 2000;
const ONLY = flag('--only');
const LEVELS = [1, 16, 64];

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
  const ctl = spawn(process.execPath, [join(__dirname, '../controller/main.js'), '--etcd-endpoints', etcd.endpoint, '--listen', `127.0.0.1:${port}`],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, BERTH_LOG_LEVEL: 'warn' } });
  const client = new ControllerClient({ url: `http://127.0.0.1:${port}` });
  await eventually(() => client.health(), { timeoutMs: 15_000, what: 'controller' });
  const raw = etcd.client();
  const rows: { c: number; n: number; alloc: number; txn: number }[] = [];
  try {
    for (const c of LEVELS) {
      const n = c === 1 ? Math.min(COUNT, 500) : COUNT;
      const poolName = `bench-c${c}`;
      await client.createPool({ name: poolName, cidr: '198.18.0.0/16' });
      const allocSecs = await pool(n, c, (i) => client.bind(poolName, { identity: `bench/${c}/${i}`, host: 'bench-host', containerId: `c${i}`, ifName: 'eth0' }));
      const txnSecs = await pool(n, c, (i) => {
        const key = `/bench/raw/${c}/${i}`;
        return raw.if(key, 'Version', '==', 0).then(raw.put(key).value(JSON.stringify({ i, c }))).commit();
      });
      rows.push({ c, n, alloc: n / allocSecs, txn: n / txnSecs });
      // Pools may not overlap: the next level's pool takes the same range once this one is gone.
      await client.deletePool(poolName, true);
    }
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
}

main().catch((e) => { console.error(e); process.exit(1); });
