/**
 * Installs the bundled `berth` plugin into a sim cluster as a runtime would
 * find it: <dir>/opt/cni/bin/berth and one conflist per host pointing at that
 * host's agent socket and journal. Returns a CNI runtime per host name.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime } from '../../demo/runtime';
import type { Cluster } from '../../sim/cluster';
import { eventually } from '../../sim/eventually';
import { ip } from '../../sim/netns';

const ROOT = join(__dirname, '../../..');

export function installPlugin(c: Cluster): Map<string, CniRuntime> {
  const binDir = join(c.dir, 'opt/cni/bin');
  mkdirSync(binDir, { recursive: true });
  copyFileSync(join(ROOT, 'dist/bin/berth'), join(binDir, 'berth'));
  const out = new Map<string, CniRuntime>();
  for (const h of c.hosts) {
    const conflist = join(h.dir, '10-berth.conflist');
    writeFileSync(conflist, JSON.stringify({ cniVersion: '1.1.0', name: 'berth', plugins: [{ type: 'berth', pool: c.pool.name, agentSocket: h.socket, journalDir: h.journalDir }] }));
    out.set(h.name, new CniRuntime(binDir, conflist));
  }
  return out;
}

/**
 * One pod's life through a runtime on host h: ADD in a fresh netns, the
 * host reaches the address, DEL, netns gone. Returns the ADD result.
 */
export async function podRoundTrip(
  t: { is(a: unknown, b: unknown, m?: string): void },
  c: Cluster, rt: CniRuntime, h: Cluster['hosts'][number], name: string, containerId: string,
): Promise<any> {
  const pod = c.lab.pod(name);
  const att = { containerId, netns: pod.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'ns1', K8S_POD_NAME: name } };
  const add = await rt.add(att);
  t.is(add.code, 0, JSON.stringify(add.error));
  const podIp = String(add.result?.ips?.[0]?.address).split('/')[0];
  await eventually(() => { if (!c.ping(h.sim, podIp)) throw new Error(`no reply from ${podIp}`); }, { timeoutMs: 10_000, intervalMs: 100 });
  const del = await rt.del(att, add.result);
  t.is(del.code, 0, JSON.stringify(del.error));
  ip('netns', 'del', pod.name);
  return add.result;
}
