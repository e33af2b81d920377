/**
 * One reconcile pass at scale: 10,000 remote endpoints on 100 synthetic
 * hosts, against the real kernel of a scratch namespace. Prints the time
 * of desiredState, of the first pass (observe + plan + apply of 10k routes
 * plus 100 neighbour and FDB entries), of a steady-state pass (observe +
 * plan, nothing to apply), of a pass after one lease moved, and the RSS.
 * Figures only; compare within one run. Target: a 10k pass under 1 s.
 */
import { silentLogger } from '../common/log';
import type { Host, LeaseView } from '../common/records';
import { desiredState, vtepMacFor } from '../agent/desired';
import { ensureBridge, ensureVxlan, openNetlinkIn, warmThreadPool } from '../agent/kernel';
import { Reconciler } from '../agent/reconciler';
import { Lab, UNDERLAY_MTU } from '../sim/netns';

const ENDPOINTS = Number(process.env.BENCH_ENDPOINTS ?? 10_000);
const HOSTS = 100;
const pool = { name: 'bench', cidr: '198.18.0.0/16', gateway: '198.18.0.1' };

function synth(): { hosts: Host[]; leases: LeaseView[] } {
  const hosts: Host[] = [{ name: 'self', underlayIp: '198.19.0.11', vtepMac: vtepMacFor('self'), vni: 4242, pool: pool.name, registeredAt: '' }];
  for (let i = 0; i < HOSTS; i++) {
    hosts.push({ name: `h${i}`, underlayIp: `198.19.${1 + (i >> 8)}.${i & 255}`, vtepMac: vtepMacFor(`h${i}`), vni: 4242, pool: pool.name, registeredAt: '' });
  }
  const leases: LeaseView[] = [];
  for (let i = 0; i < ENDPOINTS; i++) {
    const n = 0xc6120002 + i; // 198.18.0.2 upwards
    const ip = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    leases.push({
      pool: pool.name, ip, identity: `pod-${i}`, state: 'bound', pinned: false,
      binding: { host: `h${i % HOSTS}`, containerId: `c${i}`, ifName: 'eth0', boundAt: '' }, createdAt: '', updatedAt: '', revision: String(100 + i),
    });
  }
  return { hosts, leases };
}

const mb = (n: number) => `${Math.round(n / 1048576)} MiB`;

async function main(): Promise<void> {
  await warmThreadPool();
  const lab = new Lab();
  try {
    const ns = lab.host('bench');
    const nl = openNetlinkIn(ns.path);
    const view = synth();
    const input = () => ({ self: 'self', hosts: view.hosts, leases: view.leases, pool, underlayMtu: UNDERLAY_MTU });
    const t = performance.now();
    const d0 = desiredState(input());
    const desiredMs = performance.now() - t;
    await ensureBridge(nl, d0.devices!.bridge);
    await ensureVxlan(nl, { ...d0.devices!.vxlan, local: ns.underlayIp });
    const r = new Reconciler({
      netlink: nl, log: silentLogger,
      desired: () => {
        const d = desiredState(input());
        return { ...d, devices: undefined }; // devices are ensured above; time routes only
      },
    });
    const rss0 = process.memoryUsage().rss;
    const first = await r.runPass('first');
    const steady = await r.runPass('steady');
    const moved = view.leases[17];
    moved.binding = { ...moved.binding!, host: 'h42' };
    moved.revision = '999999';
    const one = await r.runPass('one move');
    const steady2 = await r.runPass('steady');
    const rss = process.memoryUsage().rss;
    console.log(`agent-reconcile: ${ENDPOINTS} remote endpoints on ${HOSTS} hosts (real kernel, scratch netns)`);
    console.log(`  desiredState                 ${desiredMs.toFixed(1)} ms`);
    console.log(`  first pass (apply all)       ${first.ms.toFixed(1)} ms  ops=${first.ops} failed=${first.failed}`);
    console.log(`  steady pass (nothing to do)  ${steady.ms.toFixed(1)} ms  ops=${steady.ops}`);
    console.log(`  pass after one lease moved   ${one.ms.toFixed(1)} ms  ops=${one.ops}`);
    console.log(`  steady pass again            ${steady2.ms.toFixed(1)} ms  ops=${steady2.ops}`);
    console.log(`  RSS before first pass ${mb(rss0)}, after ${mb(rss)}; heap used ${mb(process.memoryUsage().heapUsed)}`);
    nl.socket.close();
  } finally {
    lab.teardown();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
