/**
 * Cross-host TCP throughput with iperf3, seven ways between the same two
 * simulated hosts, in one run:
 *   underlay       host A ns -> host B ns over the underlay bridge (no encapsulation)
 *   hand VXLAN     `ip link add ... type vxlan` built by hand inside the same host
 *                  namespaces (VNI 99, port 4790, same MTU); endpoints are the host
 *                  namespaces themselves, so no veth hop at either end
 *   hand pod path  the data path Berth builds, built by hand with `ip` between two extra
 *                  pod namespaces on the same hosts: pod eth0 <ip>/32 + "default via
 *                  <gw> onlink", host-side veth holding <gw>/32 (no bridge: the minimal
 *                  form), "<ip>/32 dev <veth>", and a second VXLAN device (VNI 98, port
 *                  4791, nolearning, same MTU) with neigh + FDB per peer and
 *                  "<peer ip>/32 via <peer underlay> onlink", as the agent programs
 *   overlay, fast  pod on host A -> pod on host B through Berth with the agents' fast
 *                  path (agent --fast-path: BPF on berth.vxlan and the host veths
 *                  skips the host stacks, docs/dataplane.md "Fast path")
 *   overlay, routes the same pods with both agents stopped: their programs go with
 *                  them and the kernel routes they programmed carry the traffic (veth,
 *                  berth0, routing, berth.vxlan): Berth's path without the fast path
 *   fast, no isol.  as "overlay, fast", with the agents restarted with isolation off
 *   routes, no isol. as "overlay, routes", with the tables the agents left isolation off
 *                  (docs/dataplane.md "Isolation": the bridge table's source check,
 *                  the VXLAN input filter and the fast path's source check are gone;
 *                  egress masquerade stays, pod-to-pod traffic never reaches it)
 * The paths are interleaved within each round and the order rotates from round to
 * round, so drift on the machine hits every path alike. Mean and median per path.
 *
 * Ratios:
 *   overlay / hand VXLAN        the issue's target, strict: >= 0.95 (fast path, and routes)
 *   overlay / hand pod path     what Berth costs over the same hand-built data path
 *   hand pod path / hand VXLAN  what the pod's veth hop at each end costs (no Berth code)
 *   overlay / no isol.          what isolation costs, paired per round (1.000 = nothing)
 *
 * Figures only. Needs iperf3 and ping (scripts/bench-agent.sh installs iperf3).
 * BENCH_SECONDS sets the length of one iperf3 run (default 4), BENCH_ROUNDS the number
 * of rounds (default 3). Everything lives in the cluster's lab namespaces, which the
 * cluster teardown deletes (and with them every link and route made here).
 */
import { execFileSync, spawn } from 'node:child_process';
import { overlayMtu } from '../agent/desired';
import { startCluster } from '../sim/cluster';
import { nftPath } from '../agent/kernel/firewall';
import { UNDERLAY_MTU, nsExec, nsTry, type Netns, type SimHost } from '../sim/netns';

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${process.env[name]}`);
  return v;
}

const SECONDS = envInt('BENCH_SECONDS', 4);
const ROUNDS = envInt('BENCH_ROUNDS', 3);
const TARGET = 0.95;

/** Hand-built VXLAN between the host namespaces (endpoints in the hosts). */
const HAND_VX = { dev: 'hand.vx', vni: '99', port: '4790', a: '198.18.250.1', b: '198.18.250.2' };
/** Hand-built pod path: gateway and pod addresses, outside the pool (198.18.40.0/24). */
const HAND_POD = {
  vx: 'hand2.vx', vni: '98', port: '4791', veth: 'hpod0', gateway: '198.18.251.1',
  a: { ip: '198.18.251.11', vtepMac: '0e:98:00:00:00:0a' },
  b: { ip: '198.18.251.12', vtepMac: '0e:98:00:00:00:0b' },
};

async function iperf(server: Netns, serverIp: string, client: Netns, port: number): Promise<number> {
  const srv = spawn('ip', ['netns', 'exec', server.name, 'iperf3', '-s', '-1', '-B', serverIp, '-p', String(port)], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      try {
        const out = execFileSync('ip', ['netns', 'exec', client.name, 'iperf3', '-J', '-c', serverIp, '-p', String(port), '-t', String(SECONDS)], {
          encoding: 'utf8', timeout: (SECONDS + 30) * 1000, killSignal: 'SIGKILL',
        });
        return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
      } catch (e) {
        if (i > 50) throw e;
        await new Promise((r) => setTimeout(r, 50)); // server not listening yet
      }
    }
  } finally {
    if (srv.exitCode === null && srv.signalCode === null) srv.kill('SIGKILL');
  }
}

/** A few pings (the first may wait for ARP); throws when ip stays unreachable from ns. */
async function reachable(from: Netns, ip: string, what: string): Promise<void> {
  for (let i = 0; i < 5; i++) {
    if (nsTry(from, 'ping', '-c1', '-W1', '-q', ip)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: ${ip} unreachable from ${from.name}`);
}

/**
 * One end of the hand pod path on host h: a veth to pod namespace `pod`, and
 * hand2.vx towards `peer`, whose pod has `peerPod.ip` behind VTEP `peerPod.vtepMac`.
 */
function handPodEnd(h: SimHost, pod: Netns, self: { ip: string; vtepMac: string }, peer: SimHost, peerPod: { ip: string; vtepMac: string }, mtu: string): void {
  const p = HAND_POD;
  // Pod side: what agent/kernel/pod.ts does, with `ip`.
  nsExec(h, 'ip', 'link', 'add', p.veth, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.name);
  nsExec(pod, 'ip', 'addr', 'add', `${self.ip}/32`, 'dev', 'eth0');
  nsExec(pod, 'ip', 'link', 'set', 'eth0', 'up');
  nsExec(pod, 'ip', 'route', 'add', 'default', 'via', p.gateway, 'dev', 'eth0', 'onlink');
  // Host side, no bridge: the veth itself holds the gateway address (so it answers
  // the pod's ARP for it) and the pod's /32 points straight at it.
  nsExec(h, 'ip', 'addr', 'add', `${p.gateway}/32`, 'dev', p.veth);
  nsExec(h, 'ip', 'link', 'set', p.veth, 'up');
  nsExec(h, 'ip', 'route', 'add', `${self.ip}/32`, 'dev', p.veth);
  // VXLAN: what agent/desired.ts asks for, on a device of its own.
  nsExec(h, 'ip', 'link', 'add', p.vx, 'address', self.vtepMac, 'mtu', mtu, 'type', 'vxlan', 'id', p.vni, 'local', h.underlayIp, 'dstport', p.port, 'nolearning');
  nsExec(h, 'ip', 'link', 'set', p.vx, 'up');
  nsExec(h, 'ip', 'neigh', 'replace', peer.underlayIp, 'lladdr', peerPod.vtepMac, 'dev', p.vx, 'nud', 'permanent');
  nsExec(h, 'bridge', 'fdb', 'append', peerPod.vtepMac, 'dev', p.vx, 'dst', peer.underlayIp);
  nsExec(h, 'ip', 'route', 'add', `${peerPod.ip}/32`, 'via', peer.underlayIp, 'dev', p.vx, 'onlink', 'src', h.underlayIp);
}

const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/**
 * Waits until a's echo to ip comes back with TTL 64: no host stack forwarded
 * it, so both agents' fast path programs are attached and their maps filled.
 */
async function fastPathBack(from: Netns, ip: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      if (/ttl=64\b/.test(nsExec(from, 'ping', '-c', '1', '-W', '1', ip))) return;
    } catch { /* not yet */ }
    if (i > 100) throw new Error(`fast path to ${ip} did not come back`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
  const env: Record<string, string> = { BERTH_LOG_LEVEL: 'warn', BERTH_FAST_PATH: '1' };
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.40.0/24', resyncMs: 500, agentEnv: env });
  const nft = nftPath();
  if (!nft) throw new Error('needs nft (Debian nftables)');
  try {
    const [a, b] = c.hosts;
    const pa = await c.plumbPod(a, 'iperf-a');
    const pb = await c.plumbPod(b, 'iperf-b');
    await c.waitConverged();
    const mtu = String(overlayMtu(UNDERLAY_MTU));

    // Hand-built VXLAN between the same host namespaces, same MTU as the overlay.
    for (const [h, peer, addr] of [[a, b, HAND_VX.a], [b, a, HAND_VX.b]] as const) {
      nsExec(h.sim, 'ip', 'link', 'add', HAND_VX.dev, 'type', 'vxlan', 'id', HAND_VX.vni, 'local', h.sim.underlayIp, 'remote', peer.sim.underlayIp, 'dstport', HAND_VX.port, 'nolearning');
      nsExec(h.sim, 'ip', 'link', 'set', HAND_VX.dev, 'mtu', mtu, 'up');
      nsExec(h.sim, 'ip', 'addr', 'add', `${addr}/24`, 'dev', HAND_VX.dev);
    }

    // Hand-built pod path: two more pod namespaces (lab namespaces, deleted by teardown).
    const hpa = c.lab.pod('hpa');
    const hpb = c.lab.pod('hpb');
    handPodEnd(a.sim, hpa, HAND_POD.a, b.sim, HAND_POD.b, mtu);
    handPodEnd(b.sim, hpb, HAND_POD.b, a.sim, HAND_POD.a, mtu);

    await reachable(a.sim, b.sim.underlayIp, 'underlay');
    await reachable(a.sim, HAND_VX.b, 'hand VXLAN');
    await reachable(hpa, HAND_POD.b.ip, 'hand pod path');
    await reachable(pa.ns, pb.ip, 'overlay');

    /** Restarts both agents with isolation on or off and waits until their tables and the fast path say so. */
    const isolation = async (on: boolean) => {
      env.BERTH_ISOLATION = on ? '1' : '0';
      for (const h of [a, b]) await c.restartAgent(h);
      for (let i = 0; ; i++) {
        if ([a, b].every((h) => nsExec(h.sim, nft, 'list', 'ruleset').includes('table bridge berth') === on)) break;
        if (i > 100) throw new Error(`isolation did not turn ${on ? 'on' : 'off'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await fastPathBack(pa.ns, pb.ip);
    };

    type Path = { name: string; run: (port: number) => Promise<number>; xs: number[] };
    const paths: Path[] = [
      { name: 'underlay', run: (p) => iperf(b.sim, b.sim.underlayIp, a.sim, p), xs: [] },
      { name: 'hand VXLAN', run: (p) => iperf(b.sim, HAND_VX.b, a.sim, p), xs: [] },
      { name: 'hand pod path', run: (p) => iperf(hpb, HAND_POD.b.ip, hpa, p), xs: [] },
      { name: 'overlay, fast', run: (p) => iperf(pb.ns, pb.ip, pa.ns, p), xs: [] },
      {
        name: 'overlay, routes',
        run: async (p) => {
          for (const h of [a, b]) await c.stopAgent(h);
          try {
            return await iperf(pb.ns, pb.ip, pa.ns, p);
          } finally {
            for (const h of [a, b]) await c.startAgent(h);
            await fastPathBack(pa.ns, pb.ip);
          }
        },
        xs: [],
      },
      {
        name: 'fast, no isol.',
        run: async (p) => {
          await isolation(false);
          try {
            return await iperf(pb.ns, pb.ip, pa.ns, p);
          } finally {
            await isolation(true);
          }
        },
        xs: [],
      },
      {
        name: 'routes, no isol.',
        run: async (p) => {
          await isolation(false);
          for (const h of [a, b]) await c.stopAgent(h);
          try {
            return await iperf(pb.ns, pb.ip, pa.ns, p);
          } finally {
            for (const h of [a, b]) await c.startAgent(h);
            await isolation(true);
          }
        },
        xs: [],
      },
    ];
    const [underlay, handVx, handPod, overlay, routed, fastOpen, routedOpen] = paths;
    await fastPathBack(pa.ns, pb.ip);
    let port = 5301;
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < paths.length; i++) {
        const p = paths[(r + i) % paths.length];
        p.xs.push(await p.run(port++));
      }
    }

    const f2 = (x: number) => x.toFixed(2);
    const f3 = (x: number) => x.toFixed(3);
    console.log(`overlay-throughput: iperf3 TCP, ${SECONDS} s x ${ROUNDS} rounds (interleaved, order rotating), MTU underlay ${UNDERLAY_MTU} / overlay ${mtu}`);
    console.log(`  ${'path'.padEnd(16)} ${'mean'.padStart(6)} ${'median'.padStart(7)}  Gbit/s per round`);
    for (const p of paths) console.log(`  ${p.name.padEnd(16)} ${f2(mean(p.xs)).padStart(6)} ${f2(median(p.xs)).padStart(7)}  ${p.xs.map(f2).join(', ')}`);
    const ratio = (num: Path, den: Path, note: string) => {
      const perRound = num.xs.map((x, i) => x / den.xs[i]);
      const label = `${num.name} / ${den.name}`;
      console.log(`  ${label.padEnd(34)} mean ${f3(mean(num.xs) / mean(den.xs))}  median ${f3(median(num.xs) / median(den.xs))}  per round ${perRound.map(f3).join(', ')}${note ? `  ${note}` : ''}`);
    };
    console.log('  ratios (of means, of medians, and per round: same round, paired):');
    const strict = mean(overlay.xs) / mean(handVx.xs);
    const strictRouted = mean(routed.xs) / mean(handVx.xs);
    ratio(overlay, handVx, `<- the issue's strict target >= ${TARGET} (${strict >= TARGET ? 'met' : 'NOT met'} on means)`);
    ratio(routed, handVx, `<- same, without the fast path (${strictRouted >= TARGET ? 'met' : 'NOT met'} on means)`);
    ratio(overlay, handPod, '<- Berth (fast path) vs the veth data path built by hand');
    ratio(routed, handPod, '<- Berth (routes) vs the veth data path built by hand');
    ratio(handPod, handVx, '<- cost of the pod veth hop at each end, no Berth code');
    ratio(overlay, underlay, '');
    ratio(overlay, fastOpen, '<- isolation on / off, fast path (1.000 = no cost)');
    ratio(routed, routedOpen, '<- isolation on / off, routes (1.000 = no cost)');
  } finally {
    await c.teardown();
  }
}

// Exit explicitly once teardown has resolved (namespaces deleted, agents, controller
// and etcd stopped): now and then a stray timer from the stopped cluster keeps the
// event loop alive for good, and a finished bench should not hang.
main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
