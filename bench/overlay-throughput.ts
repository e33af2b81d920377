/**
 * Cross-host TCP throughput with iperf3, three ways between the same two
 * simulated hosts, in one run:
 *   underlay   host A ns -> host B ns over the underlay bridge (no encapsulation)
 *   hand VXLAN two namespaces' worth of `ip link add ... type vxlan` built by hand
 *              inside the same host namespaces (VNI 99, port 4790, same MTU)
 *   overlay    pod on host A -> pod on host B through Berth (veth, berth0, routing,
 *              berth.vxlan), programmed by real agents
 * Figures only. Target: overlay >= 0.95x hand VXLAN. Needs iperf3
 * (scripts/bench-agent.sh installs it). BENCH_SECONDS sets the run length.
 */
import { execFileSync, spawn } from 'node:child_process';
import { overlayMtu } from '../agent/desired';
import { startCluster } from '../test/harness/cluster';
import { UNDERLAY_MTU, nsExec, type Netns } from '../test/harness/netns';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);

async function iperf(server: Netns, serverIp: string, client: Netns, port: number): Promise<number> {
  const srv = spawn('ip', ['netns', 'exec', server.name, 'iperf3', '-s', '-1', '-B', serverIp, '-p', String(port)], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      try {
        const out = execFileSync('ip', ['netns', 'exec', client.name, 'iperf3', '-J', '-c', serverIp, '-p', String(port), '-t', String(SECONDS)], { encoding: 'utf8' });
        return (JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
      } catch (e) {
        if (i > 50) throw e;
        await new Promise((r) => setTimeout(r, 50)); // server not listening yet
      }
    }
  } finally {
    if (srv.exitCode === null) srv.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  execFileSync('iperf3', ['--version'], { stdio: 'ignore' });
  const c = await startCluster({ hosts: 2, poolCidr: '198.18.40.0/24', agentEnv: { BERTH_LOG_LEVEL: 'warn' } });
  try {
    const [a, b] = c.hosts;
    const pa = await c.plumbPod(a, 'iperf-a');
    const pb = await c.plumbPod(b, 'iperf-b');
    await c.waitConverged();
    // Hand-built VXLAN between the same host namespaces, same MTU as the overlay.
    const mtu = String(overlayMtu(UNDERLAY_MTU));
    for (const [h, peer, addr] of [[a, b, '198.18.250.1/24'], [b, a, '198.18.250.2/24']] as const) {
      nsExec(h.sim, 'ip', 'link', 'add', 'hand.vx', 'type', 'vxlan', 'id', '99', 'local', h.sim.underlayIp, 'remote', peer.sim.underlayIp, 'dstport', '4790', 'nolearning');
      nsExec(h.sim, 'ip', 'link', 'set', 'hand.vx', 'mtu', mtu, 'up');
      nsExec(h.sim, 'ip', 'addr', 'add', addr, 'dev', 'hand.vx');
    }
    const runs: Record<string, number[]> = { underlay: [], 'hand VXLAN': [], overlay: [] };
    let port = 5301;
    for (let r = 0; r < ROUNDS; r++) {
      runs.underlay.push(await iperf(b.sim, b.sim.underlayIp, a.sim, port++));
      runs['hand VXLAN'].push(await iperf(b.sim, '198.18.250.2', a.sim, port++));
      runs.overlay.push(await iperf(pb.ns, pb.ip, pa.ns, port++));
    }
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    console.log(`overlay-throughput: iperf3 TCP, ${SECONDS} s x ${ROUNDS} rounds, MTU underlay ${UNDERLAY_MTU} / overlay ${mtu}`);
    for (const [k, xs] of Object.entries(runs)) console.log(`  ${k.padEnd(11)} ${mean(xs).toFixed(2)} Gbit/s  (${xs.map((x) => x.toFixed(2)).join(', ')})`);
    console.log(`  overlay / hand VXLAN = ${(mean(runs.overlay) / mean(runs['hand VXLAN'])).toFixed(3)}; overlay / underlay = ${(mean(runs.overlay) / mean(runs.underlay)).toFixed(3)}`);
  } finally {
    await c.teardown();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
