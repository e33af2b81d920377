/**
 * A plugin chain as a runtime runs it: berth -> portmap -> bandwidth (Debian's
 * containernetworking-plugins, which speak up to 1.0.0) for ADD, CHECK and
 * DEL, against the real agent handlers, controller and etcd. Every plugin is
 * exec'd with `ip netns exec <simulated host>`, so portmap's iptables rules
 * and bandwidth's qdiscs land in the simulated host, never in the root
 * namespace. After DEL nothing of the container may remain there.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { silentLogger } from '../common/log';
import { startController, type RunningController } from '../controller/app';
import { warmThreadPool } from '../agent/kernel/netns';
import { BIN, ensureRelay, execWithStdin, type ExecResult } from '../sim/exec';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { startSite, type Site } from './harness/cni-site';
import { nsExec, type Netns } from '../sim/netns';
import { eventually } from '../sim/eventually';

const CNI_DIR = '/usr/lib/cni';
const VERSION = '1.0.0';
const usable = process.getuid?.() === 0 && ['portmap', 'bandwidth'].every((p) => existsSync(`${CNI_DIR}/${p}`));

let etcd: EtcdServer;
let ctl: RunningController;

test.before(async () => {
  if (!usable) return;
  await warmThreadPool();
  await ensureRelay();
  etcd = await startEtcd();
  ctl = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', log: silentLogger });
});

test.after.always(async () => {
  await ctl?.stop();
  await etcd?.stop();
});

interface Env { verb: string; cid: string; pod: Netns }

/** Runs one plugin of the chain inside the simulated host, as libcni would. */
function runIn(host: Netns, bin: string, e: Env, conf: object): Promise<ExecResult> {
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: e.verb, CNI_CONTAINERID: e.cid, CNI_NETNS: e.pod.path, CNI_IFNAME: 'eth0',
    CNI_ARGS: `K8S_POD_NAMESPACE=web;K8S_POD_NAME=${e.cid}`, CNI_PATH: CNI_DIR,
  };
  return execWithStdin('ip', ['netns', 'exec', host.name, bin], env, conf);
}

const PORTMAP_V6_CHECK_BUG = /could not check ipv6 dnat/;
const PORTS = [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }];
const BANDWIDTH = { ingressRate: 8_000_000, ingressBurst: 800_000, egressRate: 8_000_000, egressBurst: 800_000 };

/** The three plugin configs of the conflist, with runtimeConfig as libcni injects it for each capability. */
function chain(s: Site) {
  const base = { cniVersion: VERSION, name: 'berth-net' };
  return [
    { bin: BIN, conf: { ...s.conf(VERSION), ...base } },
    { bin: `${CNI_DIR}/portmap`, conf: { ...base, type: 'portmap', snat: true, capabilities: { portMappings: true }, runtimeConfig: { portMappings: PORTS } } },
    { bin: `${CNI_DIR}/bandwidth`, conf: { ...base, type: 'bandwidth', capabilities: { bandwidth: true }, runtimeConfig: { bandwidth: BANDWIDTH } } },
  ];
}

function leftovers(s: Site, ip: string): string[] {
  const out: string[] = [];
  const nat = nsExec(s.host, 'iptables-save', '-t', 'nat');
  if (nat.includes(ip)) out.push(`iptables nat mentions ${ip}`);
  if (/CNI-DN-/.test(nat)) out.push('a per-container CNI-DN- chain remains');
  const qdiscs = nsExec(s.host, 'tc', 'qdisc', 'show').split('\n').filter((l) => /tbf|ingress|clsact/.test(l));
  if (qdiscs.length) out.push(`qdiscs: ${qdiscs.join(' | ')}`);
  const ifbs = nsExec(s.host, 'ip', '-o', 'link', 'show', 'type', 'ifb').trim();
  if (ifbs) out.push(`ifb devices: ${ifbs}`);
  const veths = nsExec(s.host, 'ip', '-o', 'link', 'show', 'type', 'veth').trim();
  if (veths) out.push(`veths: ${veths}`);
  if (nsExec(s.host, 'ip', 'route', 'show', 'proto', '190').includes(ip)) out.push(`host route to ${ip}`);
  return out;
}

test('berth -> portmap -> bandwidth: ADD, CHECK and DEL in the simulated host leave nothing behind', async (t) => {
  if (!usable) return t.pass('needs root and /usr/lib/cni/{portmap,bandwidth}');
  const s = await startSite(t, ctl.url);
  const pod = s.lab.pod('pod');
  const e = { cid: 'chain-1', pod };
  const plugins = chain(s);

  // ADD: each plugin gets the previous one's result.
  let prev: unknown;
  for (const p of plugins) {
    const r = await runIn(s.host, p.bin, { ...e, verb: 'ADD' }, prev === undefined ? p.conf : { ...p.conf, prevResult: prev });
    t.is(r.code, 0, `${p.bin} ADD: ${r.stdout}${r.stderr}`);
    prev = r.json;
  }
  const final = prev as { ips: { address: string }[]; interfaces: { name: string }[] };
  const ip = final.ips[0].address.split('/')[0];
  t.regex(nsExec(s.host, 'iptables-save', '-t', 'nat'), new RegExp(`${ip.replace(/\./g, '\\.')}:80`), 'portmap DNATs to the pod');
  t.regex(nsExec(s.host, 'tc', 'qdisc', 'show', 'dev', final.interfaces[0].name), /tbf/, 'bandwidth shapes the host veth');

  // CHECK: every plugin with the cached result.
  for (const p of plugins) {
    const r = await runIn(s.host, p.bin, { ...e, verb: 'CHECK' }, { ...p.conf, prevResult: final });
    if (r.code !== 0 && PORTMAP_V6_CHECK_BUG.test(r.stdout)) {
      // containernetworking/plugins#819: portmap <= 1.2 CHECK demands ip6tables
      // chains that its ADD never makes for an IPv4-only result (Debian ships 1.1.1).
      t.log(`known upstream portmap CHECK bug (#819): ${r.json?.msg}`);
      continue;
    }
    t.is(r.code, 0, `${p.bin} CHECK: ${r.stdout}${r.stderr}`);
  }

  // DEL: reverse order, cached result.
  for (const p of [...plugins].reverse()) {
    const r = await runIn(s.host, p.bin, { ...e, verb: 'DEL' }, { ...p.conf, prevResult: final });
    t.is(r.code, 0, `${p.bin} DEL: ${r.stdout}${r.stderr}`);
  }
  // berth's DEL retires its veth at once and deletes it in the background (agent/kernel/pod.ts).
  await eventually(() => {
    const left = leftovers(s, ip);
    if (left.length) throw new Error(left.join('; '));
  }, { what: 'no leftovers after DEL' }).catch(() => undefined);
  t.deepEqual(leftovers(s, ip), []);
  t.false(nsExec(pod, 'ip', '-o', 'link', 'show').includes('eth0'));
});
