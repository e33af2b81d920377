/**
 * CNI plugin latency and throughput, against a reference, in one run:
 *
 *   1. VERSION     dist/bin/berth (the static relay) and the reference
 *                  `bridge`, exec'd directly, sequential
 *   2. berth       ADD then DEL, one fresh pod netns per pod, against a real
 *                  agent (startCluster, 1 simulated host)
 *   3. reference   Debian's /usr/lib/cni/bridge + host-local IPAM
 *   4. pods/s      8-way concurrency, 240 pods each: ADD all, then DEL all (a window of about
 *                  2 s: at 80 pods, 0.5 s, the ratio moved by ±6 % between runs)
 *   2b/3b. second DEL  containerd's RemovePodSandbox DEL: for each pod of 2 and 3,
 *                  once all of them are done, DEL again with CNI_NETNS "" (berth
 *                  answers it from the agent's state, agent/cni/local-del.ts)
 *
 * Both plugins are exec'd the same way, as a runtime does (env + conf on
 * stdin), through `ip netns exec <simulated host ns>`: the reference needs
 * that for its bridge to land in a simulated host, and berth pays the same
 * (`ip netns exec <ns> true` is timed and shown). Where berth's time goes
 * comes from the agent's own per-request timing (its debug log line
 * "cni relay request"): the agent's share, the rest being exec, relay and
 * socket. Pod namespaces are made with `ip netns add` outside the timed
 * region. No child has NODE_EXTRA_CA_CERTS. Figures only: the issue's
 * targets are printed, nothing is asserted.
 *
 *   BENCH_CNI_N (100), BENCH_CNI_FLOOR_N (30, exec floors), BENCH_CNI_PAR_PODS (240), BENCH_CNI_PAR (8),
 *   BENCH_CNI_PLUGIN (another build of the plugin, for what-if runs)
 *   5. metrics     one berth 8-way ADD+DEL run of 600 pods with a scraper on the agent's and
 *                  controller's /metrics switched on and off every second (bench/scrape-cost.ts):
 *                  BENCH_SCRAPE_PODS (600), BENCH_SCRAPE_MS (250)
 */
import { execFileSync } from 'node:child_process';
import { execWithStdin } from '../sim/exec';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startCluster, type Cluster } from '../sim/cluster';
import { randomTag } from '../sim/netns';
import { scrapeCost, scrapeCostLine } from './scrape-cost';

const N = Number(process.env.BENCH_CNI_N ?? 100);
const FLOOR_N = Number(process.env.BENCH_CNI_FLOOR_N ?? 30);
const PAR_PODS = Number(process.env.BENCH_CNI_PAR_PODS ?? 240);
const PAR = Number(process.env.BENCH_CNI_PAR ?? 8);
const WARMUP = 3;
/** Pods of the metrics phase's one 8-way run (ADD all, then DEL all): tens of one-second slices. */
const SCRAPE_PODS = Number(process.env.BENCH_SCRAPE_PODS ?? 600);

/** dist/bench/cni.js -> dist/bin/berth, unless BENCH_CNI_PLUGIN names another build */
const BERTH = process.env.BENCH_CNI_PLUGIN ?? resolve(__dirname, '../bin/berth');
const CNI_DIR = '/usr/lib/cni';
const BRIDGE = `${CNI_DIR}/bridge`;
const REF_SUBNET = '198.18.200.0/22';

// ---------------------------------------------------------------- processes

interface Run { ms: number; code: number | null; stdout: string; stderr: string }

function baseEnv(): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  // Explicitly never NODE_EXTRA_CA_CERTS: real nodes don't set it (~80 ms per node start).
  return env;
}

/** Spawns cmd, feeds stdin, times spawn -> close. */
async function timed(cmd: string, args: string[], env: Record<string, string>, stdin = ''): Promise<Run> {
  const t0 = performance.now();
  const r = await execWithStdin(cmd, args, env, stdin);
  return { ms: performance.now() - t0, code: r.code, stdout: r.stdout, stderr: r.stderr };
}

function must(r: Run, what: string): Run {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r;
}

// ---------------------------------------------------------------- namespaces

const prefix = `bthb-${randomTag()}`;
const namespaces = new Set<string>();

function nsAdd(label: string): { name: string; path: string } {
  const name = `${prefix}-${label}-${randomTag(3)}`;
  execFileSync('ip', ['netns', 'add', name], { stdio: 'ignore' });
  namespaces.add(name);
  return { name, path: `/run/netns/${name}` };
}

function nsDel(name: string): void {
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' }); } catch { /* gone */ }
  namespaces.delete(name);
}

function nsCleanup(): void {
  for (const n of [...namespaces]) nsDel(n);
}

// ---------------------------------------------------------------- stats

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
interface Stat { p50: number; p95: number; n: number }
function stat(xs: number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: pct(s, 50), p95: pct(s, 95), n: s.length };
}

async function pool<T>(items: T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

// ---------------------------------------------------------------- subjects

/** One CNI plugin under test: how to run a verb for one pod. */
interface Subject {
  name: string;
  run(verb: 'ADD' | 'DEL', cid: string, netns: string): Promise<Run>;
}

function cniEnv(verb: string, cid: string, netns: string): Record<string, string> {
  return {
    ...baseEnv(),
    CNI_COMMAND: verb, CNI_CONTAINERID: cid, CNI_NETNS: netns, CNI_IFNAME: 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${cid}`, CNI_PATH: CNI_DIR,
  };
}

function berthSubject(c: Cluster): Subject {
  const conf = JSON.stringify({
    cniVersion: '1.0.0', name: 'berth-net', type: 'berth', pool: c.pool.name, agentSocket: c.hosts[0].socket,
    journalDir: join(c.dir, 'plugin-journal'),
  });
  return { name: 'berth', run: (verb, cid, netns) => timed('ip', ['netns', 'exec', c.hosts[0].sim.name, BERTH], cniEnv(verb, cid, netns), conf) };
}

function bridgeSubject(hostNs: string, dataDir: string): Subject {
  const conf = JSON.stringify({
    cniVersion: '1.0.0', name: 'ref-net', type: 'bridge', bridge: 'cniref0', isGateway: true, ipMasq: false, mtu: 1450,
    ipam: { type: 'host-local', ranges: [[{ subnet: REF_SUBNET }]], routes: [{ dst: '0.0.0.0/0' }], dataDir },
  });
  return { name: 'reference', run: (verb, cid, netns) => timed('ip', ['netns', 'exec', hostNs, BRIDGE], cniEnv(verb, cid, netns), conf) };
}

interface Seq { add: number[]; del: number[]; cids: string[] }

/** Sequential ADD then DEL per pod; the netns is made and deleted outside the clock. */
async function sequential(s: Subject, n: number, tag: string): Promise<Seq> {
  const out: Seq = { add: [], del: [], cids: [] };
  for (let i = 0; i < WARMUP + n; i++) {
    const cid = `${tag}-s${i}`;
    const ns = nsAdd(`${tag}${i}`);
    const a = must(await s.run('ADD', cid, ns.path), `${s.name} ADD ${cid}`);
    const d = must(await s.run('DEL', cid, ns.path), `${s.name} DEL ${cid}`);
    nsDel(ns.name);
    if (i >= WARMUP) { out.add.push(a.ms); out.del.push(d.ms); }
    out.cids.push(cid);
  }
  return out;
}

/** containerd's second DEL (RemovePodSandbox): the same container again, CNI_NETNS "", no prevResult; warm-up pods dropped. */
async function secondDels(s: Subject, cids: string[]): Promise<number[]> {
  const xs: number[] = [];
  for (const [i, cid] of cids.entries()) {
    const r = must(await s.run('DEL', cid, ''), `${s.name} second DEL ${cid}`);
    if (i >= WARMUP) xs.push(r.ms);
  }
  return xs;
}

interface Par { addPerS: number; totalPerS: number; addMs: number; delMs: number; addCpu: Record<string, number> }

/** CPU ms (user + system) of a process, and of its reaped children, from /proc/<pid>/stat (clock ticks of 10 ms). */
function cpuMs(pid: number | 'self'): { own: number; children: number } {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    const tick = 10; // sysconf(_SC_CLK_TCK) = 100 on Linux
    return { own: (Number(f[11]) + Number(f[12])) * tick, children: (Number(f[13]) + Number(f[14])) * tick };
  } catch {
    return { own: 0, children: 0 };
  }
}

/** Who burns the CPU while fn runs: the agent, etcd, this process (controller in-process) and the plugin execs (reaped children). */
async function cpuDuring(c: Cluster | undefined, fn: () => Promise<void>): Promise<Record<string, number>> {
  const agentPid = c?.hosts[0].pid;
  const snap = () => ({ agent: agentPid ? cpuMs(agentPid).own : 0, etcd: c ? cpuMs(c.etcd.pid).own : 0, self: cpuMs('self') });
  const a = snap();
  await fn();
  const b = snap();
  return { agent: b.agent - a.agent, etcd: b.etcd - a.etcd, 'bench+controller': b.self.own - a.self.own, 'plugin execs': b.self.children - a.self.children };
}

async function parallel(s: Subject, pods: number, width: number, tag: string, c?: Cluster): Promise<Par> {
  const list = Array.from({ length: pods }, (_, i) => ({ cid: `${tag}-p${i}`, ns: nsAdd(`${tag}p${i}`) }));
  try {
    const t0 = performance.now();
    const addCpu = await cpuDuring(c, () => pool(list, width, async (p) => { must(await s.run('ADD', p.cid, p.ns.path), `${s.name} ADD ${p.cid}`); }));
    const t1 = performance.now();
    await pool(list, width, async (p) => { must(await s.run('DEL', p.cid, p.ns.path), `${s.name} DEL ${p.cid}`); });
    const t2 = performance.now();
    return { addPerS: pods / ((t1 - t0) / 1000), totalPerS: pods / ((t2 - t0) / 1000), addMs: t1 - t0, delMs: t2 - t1, addCpu };
  } finally {
    for (const p of list) nsDel(p.ns.name);
  }
}

async function times(cmd: string, args: string[], n: number, env: Record<string, string> = {}, stdin = ''): Promise<number[]> {
  const xs: number[] = [];
  for (let i = 0; i < WARMUP + n; i++) {
    const r = must(await timed(cmd, args, { ...baseEnv(), ...env }, stdin), [cmd, ...args].join(' '));
    if (i >= WARMUP) xs.push(r.ms);
  }
  return xs;
}

/** The agent's own time per request (its debug line "cni relay request"), for container ids starting with `prefix`. */
function agentTimes(c: Cluster, prefix: string): Record<'ADD' | 'DEL', number[]> {
  const out: Record<'ADD' | 'DEL', number[]> = { ADD: [], DEL: [] };
  for (const l of c.logs(c.hosts[0], 'cni relay request')) {
    const x = l as unknown as { verb?: string; containerId?: string; ms?: number };
    if ((x.verb === 'ADD' || x.verb === 'DEL') && typeof x.ms === 'number' && x.containerId?.startsWith(prefix)) out[x.verb].push(x.ms);
  }
  return out;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  delete process.env.NODE_EXTRA_CA_CERTS; // the agents inherit process.env
  if (!existsSync(BERTH)) throw new Error(`${BERTH} missing: npm run build`);
  if (!existsSync(BRIDGE) || !existsSync(`${CNI_DIR}/host-local`)) throw new Error(`${BRIDGE} or host-local missing: apt-get install containernetworking-plugins`);
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'berth-bench-cni-'));
  let c: Cluster | undefined;
  const onSignal = () => { void cleanup().finally(() => process.exit(130)); };
  const cleanup = async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await c?.teardown().catch(() => undefined);
    nsCleanup();
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    c = await startCluster({ hosts: 1, poolCidr: '198.18.64.0/18', agentEnv: { BERTH_LOG_LEVEL: 'debug' } });
    const refHost = nsAdd('refhost');
    execFileSync('ip', ['netns', 'exec', refHost.name, 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
    const berth = berthSubject(c);
    const ref = bridgeSubject(refHost.name, join(dir, 'host-local'));

    const bare = stat(await times('true', [], FLOOR_N));
    const nsxRaw = stat(await times('ip', ['netns', 'exec', refHost.name, 'true'], FLOOR_N));
    const verB = stat(await times(BERTH, [], FLOOR_N, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}'));
    const verR = stat(await times(BRIDGE, [], FLOOR_N, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}'));
    const bs = await sequential(berth, N, 'b');
    const agentSeq = agentTimes(c, 'b-s');
    const logsBefore = c.logs(c.hosts[0]).length;
    const bDel2 = stat(await secondDels(berth, bs.cids));
    const local = c.logs(c.hosts[0]).slice(logsBefore).filter((l) => l.msg === 'DEL' && l.outcome === 'already-gone').length;
    const rs = await sequential(ref, N, 'r');
    const rDel2 = stat(await secondDels(ref, rs.cids));
    const bp = await parallel(berth, PAR_PODS, PAR, 'b', c);
    const rp = await parallel(ref, PAR_PODS, PAR, 'r');
    // Metrics cost: one long 8-way run of the plugin, the scraper switched on and off in slices (bench/scrape-cost.ts).
    const mc = await scrapeCost({
      urls: [c.hosts[0].metricsUrl, c.controller.metricsUrl!], everyMs: Number(process.env.BENCH_SCRAPE_MS ?? 250), sliceMs: 1000, cpuPids: [c.hosts[0].pid!],
    }, async (done) => {
      const counted: Subject = { name: berth.name, run: async (verb, cid, netns) => { const r = await berth.run(verb, cid, netns); done(); return r; } };
      await parallel(counted, SCRAPE_PODS, PAR, 'm');
    });

    const bAdd = stat(bs.add), bDel = stat(bs.del), rAdd = stat(rs.add), rDel = stat(rs.del);
    const f = (x: number) => `${x.toFixed(1)}`.padStart(7);
    const row = (name: string, x: Stat) => console.log(`  ${name.padEnd(44)}${f(x.p50)}${f(x.p95)}   ${String(x.n).padStart(3)}`);
    console.log(`cni bench: sequential N=${N} (exec floors N=${FLOOR_N}), ${WARMUP} warm-up runs dropped, fresh pod netns each`);
    console.log(`  ${'sequential latency (ms)'.padEnd(44)}${'p50'.padStart(7)}${'p95'.padStart(7)}     n`);
    row('true (bare spawn)', bare);
    row('ip netns exec <host> true', nsxRaw);
    row('berth VERSION (exec, direct)', verB);
    row('reference bridge VERSION (exec, direct)', verR);
    row('berth ADD', bAdd);
    row('reference bridge+host-local ADD', rAdd);
    row('berth DEL', bDel);
    row('reference bridge+host-local DEL', rDel);
    row(`berth second DEL, CNI_NETNS "" (${local}/${bs.cids.length} local)`, bDel2);
    row('reference second DEL, CNI_NETNS ""', rDel2);
    console.log('  where berth\'s time goes (p50 ms): exec + relay + socket = total - agent');
    for (const verb of ['ADD', 'DEL'] as const) {
      const ag = stat(agentSeq[verb]);
      const total = verb === 'ADD' ? bAdd : bDel;
      console.log(`    ${verb}: total ${total.p50.toFixed(1)} = ip netns exec ${nsxRaw.p50.toFixed(1)} + relay exec ${verB.p50.toFixed(1)} + agent ${ag.p50.toFixed(1)} (n=${ag.n}) + rest ${(total.p50 - nsxRaw.p50 - verB.p50 - ag.p50).toFixed(1)}`);
    }
    const g = (x: number) => x.toFixed(1).padStart(8);
    console.log(`  ${`${PAR}-way, ${PAR_PODS} pods: ADD all then DEL all`.padEnd(44)}${'ADD/s'.padStart(8)}${'ADD+DEL/s'.padStart(10)}${'ADD ms'.padStart(8)}${'DEL ms'.padStart(8)}`);
    for (const [name, p] of [['berth', bp], ['reference', rp]] as const) {
      console.log(`  ${name.padEnd(44)}${g(p.addPerS)}${g(p.totalPerS).padStart(10)}${p.addMs.toFixed(0).padStart(8)}${p.delMs.toFixed(0).padStart(8)}`);
    }
    console.log(`  CPU per pod in the ${PAR}-way ADD phase (ms; 2 cores = ${(2000 / PAR_PODS * (bp.addMs / 1000)).toFixed(1)} ms/pod of berth's wall time)`);
    for (const [name, p] of [['berth', bp], ['reference', rp]] as const) {
      console.log(`    ${name.padEnd(10)} ${Object.entries(p.addCpu).map(([k, v]) => `${k} ${(v / PAR_PODS).toFixed(1)}`).join(', ')}`);
    }
    const r1 = bAdd.p50 / rAdd.p50;
    const r2 = bDel.p50 / rDel.p50;
    const r3 = bp.addPerS / rp.addPerS;
    const ok = (b: boolean) => (b ? 'met' : 'MISSED');
    console.log('targets (issue 9):');
    console.log(`  ADD p50, berth / reference              ${r1.toFixed(2)}   (target <= 1.0: ${ok(r1 <= 1.0)})`);
    console.log(`  DEL p50, berth / reference              ${r2.toFixed(2)}   (target <= 1.0: ${ok(r2 <= 1.0)})`);
    console.log(`  second DEL p50, berth / reference       ${(bDel2.p50 / rDel2.p50).toFixed(2)}   (issue 10: was ~3.5)`);
    console.log(`  ${PAR}-way ADD pods/s, berth / reference     ${r3.toFixed(2)}   (target >= 1.0: ${ok(r3 >= 1.0)})`);
    console.log(`  VERSION exec p50                        ${verB.p50.toFixed(2)} ms (target <= 2 ms: ${ok(verB.p50 <= 2)})`);
    console.log(scrapeCostLine(`berth ${PAR}-way ADD+DEL of ${SCRAPE_PODS} pods`, mc));
    console.log(`  (whole bench ${((performance.now() - started) / 1000).toFixed(0)} s; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')})`);
  } finally {
    await cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
