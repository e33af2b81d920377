/**
 * The controller at scale (issue 12, item 6) and under etcd leader loss
 * (item 5); run from bench/controller.ts. Every figure is measured here, in
 * this run: nothing is assumed or hard-coded.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { ControllerClient } from '../common/controller-client';
import { silentLogger } from '../common/log';
import { startController } from '../controller/app';
import { startEtcd, startEtcdCluster } from '../sim/etcd';
import { eventually } from '../sim/eventually';
import { freePort } from '../sim/etcd';
import { seedLeases } from '../sim/seed';

const CONTROLLER = join(__dirname, '../controller/main.js');
const BERTHCTL = join(__dirname, '../controller/cli/main.js');
const TICKS_PER_S = 100; // USER_HZ on Linux

/** Records only: 198.18.0.0/15 split so no pool covers the simulated underlay 198.19.0.0/24. */
const POOLS = [
  { pool: 'scale-a', cidr: '198.18.0.0/16', share: 0.6 },
  { pool: 'scale-b', cidr: '198.19.128.0/17', share: 0.25 },
  { pool: 'scale-c', cidr: '198.19.64.0/18', share: 0.15 },
];
const HELD_EVERY = 20;

const ms = (since: bigint) => Number(process.hrtime.bigint() - since) / 1e6;
const sleep = (n: number) => new Promise((r) => setTimeout(r, n));

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_S;
}

function memoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** Sum of a Prometheus counter (all label sets) from etcd's /metrics on its client URL. */
async function etcdMetric(endpoint: string, name: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`)).text();
  let sum = 0, seen = false;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) { sum += Number(line.slice(line.lastIndexOf(' ') + 1)); seen = true; }
  }
  if (!seen) throw new Error(`etcd has no metric ${name}`);
  return sum;
}

function berthctl(url: string, args: string[]): Promise<{ ms: number; code: number | null; lines: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(process.execPath, [BERTHCTL, '--controller', url, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let lines = 0, stderr = '';
    child.stdout.on('data', (d: Buffer) => { for (const b of d) if (b === 10) lines++; });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ ms: ms(t0), code, lines, stderr }));
  });
}

async function timed<T>(n: number, fn: () => Promise<T>): Promise<{ median: number; max: number }> {
  const all: number[] = [];
  for (let i = 0; i < n; i++) { const t0 = process.hrtime.bigint(); await fn(); all.push(ms(t0)); }
  all.sort((a, b) => a - b);
  return { median: all[Math.floor(all.length / 2)], max: all[all.length - 1] };
}

export async function benchScale(o: { leases: number; restSeconds: number }): Promise<void> {
  const etcd = await startEtcd({ maxTxnOps: 1024 });
  const seeder: Etcd3 = etcd.client();
  const rows: [string, string, string][] = [];
  const hosts = Array.from({ length: 100 }, (_, i) => `node-${String(i).padStart(3, '0')}`);
  let ctlPid = 0;
  let stopCtl = async () => {};
  try {
    const t0 = process.hrtime.bigint();
    let seeded = 0;
    for (const p of POOLS) {
      seeded += await seedLeases(seeder, {
        pool: p.pool, cidr: p.cidr, count: Math.round(o.leases * p.share), hosts, heldEvery: HELD_EVERY, holdSeconds: 86_400, opsPerTxn: 1000, concurrency: 4,
      });
    }
    const seedMs = ms(t0);
    const events = seeded + Math.ceil(seeded / HELD_EVERY);
    console.log(`\nseeded ${seeded} leases and ${events} events (each also indexed by identity) in ${(seedMs / 1000).toFixed(1)} s`);

    // Cold start: spawn to the first healthy answer (the view is loaded before the API listens).
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const api = new ControllerClient({ url, timeoutMs: 30_000 });
    const started = process.hrtime.bigint();
    const ctl = spawn(process.execPath, [CONTROLLER, '--etcd-endpoints', etcd.endpoint, '--listen', `127.0.0.1:${port}`, '--metrics-listen', '127.0.0.1:0'],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, BERTH_LOG_LEVEL: 'warn' } });
    ctlPid = ctl.pid as number;
    const exited = new Promise((r) => ctl.once('exit', r));
    stopCtl = async () => { ctl.kill('SIGTERM'); await exited; };
    await eventually(() => api.health(), { timeoutMs: 120_000, intervalMs: 10, what: 'controller ready' });
    const readyMs = ms(started);
    const memReady = memoryMb(ctlPid);
    rows.push([`cold start at ${seeded} leases: spawn to ready`, `${(readyMs / 1000).toFixed(2)} s`, '< 5 s']);
    rows.push(['controller RSS when ready (peak during start)', `${memReady.rss.toFixed(0)} MB (${memReady.peak.toFixed(0)} MB)`, '< 300 MB']);

    // At rest: nothing but the controller talks to etcd (the seeder and this client are idle).
    await sleep(3000);
    const bytes0 = await etcdMetric(etcd.endpoint, 'etcd_network_client_grpc_sent_bytes_total');
    const ranges0 = await etcdMetric(etcd.endpoint, 'etcd_debugging_mvcc_range_total');
    const cpu0 = cpuSeconds(ctlPid);
    await sleep(o.restSeconds * 1000);
    const perMin = 60 / o.restSeconds;
    const bytes = ((await etcdMetric(etcd.endpoint, 'etcd_network_client_grpc_sent_bytes_total')) - bytes0) * perMin;
    const ranges = ((await etcdMetric(etcd.endpoint, 'etcd_debugging_mvcc_range_total')) - ranges0) * perMin;
    const cpu = (cpuSeconds(ctlPid) - cpu0) * perMin;
    rows.push(['etcd bytes sent per minute at rest', `${(bytes / 1024).toFixed(1)} KB (${ranges} range reads)`, '< 1 MB']);
    rows.push(['controller CPU per minute at rest', `${cpu.toFixed(2)} s`, '< 1 s']);
    const memRest = memoryMb(ctlPid);
    rows.push(['controller RSS after a minute at rest', `${memRest.rss.toFixed(0)} MB`, '< 300 MB']);

    const ls = await berthctl(url, ['leases', 'ls']);
    if (ls.code !== 0) throw new Error(`leases ls failed: ${ls.stderr}`);
    rows.push([`berthctl leases ls, all ${ls.lines - 1} leases, paged`, `${(ls.ms / 1000).toFixed(2)} s`, '< 3 s']);

    // A held lease in the middle of the biggest pool: two events (allocated, released).
    const heldId = `seed/scale-a/${HELD_EVERY * Math.floor((o.leases * POOLS[0].share) / HELD_EVERY / 2)}`;
    const showApi = await timed(20, () => api.leases({ identity: heldId }));
    const histApi = await timed(20, () => api.history({ identity: heldId }));
    const histIpApi = await timed(20, async () => {
      const { leases } = await api.leases({ identity: heldId });
      return api.history({ ip: leases[0].ip });
    });
    const showCli = await berthctl(url, ['leases', 'show', heldId]);
    const histCli = await berthctl(url, ['leases', 'history', heldId]);
    if (showCli.code !== 0 || histCli.code !== 0) throw new Error(`show/history failed: ${showCli.stderr}${histCli.stderr}`);
    rows.push(['leases show <identity>: API median (max of 20)', `${showApi.median.toFixed(1)} ms (${showApi.max.toFixed(1)})`, '< 100 ms']);
    rows.push(['leases history <identity>: API median (max of 20)', `${histApi.median.toFixed(1)} ms (${histApi.max.toFixed(1)})`, '< 100 ms']);
    rows.push(['show <identity> then history <its ip>: API median', `${histIpApi.median.toFixed(1)} ms`, '']);
    rows.push(['berthctl leases show | history <identity> (whole process)', `${showCli.ms.toFixed(0)} | ${histCli.ms.toFixed(0)} ms`, '']);

    // Binds while an operator lists everything and reads history, over and over.
    let operatorRounds = 0;
    let operatorErrors = 0;
    let binding = true;
    const operator = (async () => {
      while (binding) {
        try {
          let token: string | undefined;
          do { token = (await api.leases({ limit: 1000, continue: token })).continue; } while (token !== undefined && binding);
          for (let i = 0; i < 5; i++) await api.history({ identity: `seed/scale-b/${i * HELD_EVERY}` });
          operatorRounds++;
        } catch { operatorErrors++; }
      }
    })();
    const N = 3000;
    let next = 0, failed = 0;
    const b0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = next++; i < N; i = next++) {
        await api.bind('scale-a', { identity: `bench-live/${i}`, host: hosts[i % hosts.length], containerId: `live-${i}`, ifName: 'eth0' }).catch(() => { failed++; });
      }
    }));
    const bindSecs = ms(b0) / 1000;
    binding = false;
    await operator;
    rows.push([`binds while an operator lists all and reads history (${operatorRounds} rounds)`, `${N - failed}/${N} ok, ${(N / bindSecs).toFixed(0)}/s; operator errors ${operatorErrors}`, 'all ok']);
    api.close();
  } finally {
    await stopCtl();
    await etcd.stop();
  }
  console.log(`\ncontroller at ${o.leases} leases`);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const [what, got, target] of rows) console.log(`${what.padEnd(w)}  ${got.padEnd(34)}  ${target}`);
}

interface Op { start: number; end: number; ok: boolean }

/**
 * Binds and releases in a loop against a controller on a 3-member etcd, the
 * leader killed (SIGKILL, by PID) in the middle. The stall is the longest
 * operation among those in flight at the kill or started after it.
 */
export async function benchLeaderLoss(): Promise<void> {
  const results: string[] = [];
  for (const [label, attemptTimeoutMs] of [['one 5 s deadline per call (before)', 5000], ['1.5 s attempts + retry (now)', undefined]] as const) {
    const cluster = await startEtcdCluster(3);
    const ctl = await startController({ etcd: { endpoints: cluster.endpoints, attemptTimeoutMs }, listen: '127.0.0.1:0', log: silentLogger, sweepMs: 200 });
    const api = new ControllerClient({ url: ctl.url, timeoutMs: 30_000 });
    const ops: Op[] = [];
    let running = true;
    try {
      await api.createPool({ name: 'failover', cidr: '198.18.0.0/20', holdSeconds: 0 });
      const workers = Array.from({ length: 4 }, async (_, w) => {
        for (let k = 0; running; k++) {
          const start = Date.now();
          const id = `failover/${w}`;
          const p = k % 2 === 0
            ? api.bind('failover', { identity: id, host: 'node-a', containerId: `w${w}-${k}`, ifName: 'eth0' })
            : api.release('failover', { identity: id, containerId: `w${w}-${k - 1}` });
          const ok = await p.then(() => true, () => false);
          ops.push({ start, end: Date.now(), ok });
        }
      });
      await sleep(2000);
      const leader = await cluster.leader();
      const killAt = Date.now();
      await leader.kill();
      // When the survivors agree on a new leader.
      let electedMs = NaN;
      await eventually(async () => { const l = await cluster.leader(); if (l === leader) throw new Error('old leader'); electedMs = Date.now() - killAt; }, { timeoutMs: 20_000, intervalMs: 50 });
      await sleep(7000);
      running = false;
      await Promise.all(workers);
      const around = ops.filter((op) => op.end >= killAt);
      const stall = Math.max(...around.map((op) => op.end - Math.max(op.start, killAt)));
      const worst = Math.max(...around.map((op) => op.end - op.start));
      const failedOps = around.filter((op) => !op.ok).length;
      const before = ops.filter((op) => op.end < killAt);
      const normal = before.length ? before.reduce((s, op) => s + op.end - op.start, 0) / before.length : NaN;
      results.push(`${label.padEnd(36)}  new leader seen after ${String(electedMs).padStart(5)} ms; calls stalled up to ${String(stall).padStart(5)} ms after the kill (longest call ${worst} ms); ${failedOps} of ${around.length} failed; normal call ${normal.toFixed(1)} ms`);
    } finally {
      running = false;
      api.close();
      await ctl.stop();
      await cluster.stop();
    }
  }
  console.log('\netcd leader killed (3 members, 4 bind/release loops)');
  for (const r of results) console.log(r);
}
