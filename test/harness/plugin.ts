/**
 * Installs the bundled `berth` plugin into a sim cluster as a runtime would
 * find it: <dir>/opt/cni/bin/berth and one conflist per host pointing at that
 * host's agent socket and journal. Returns a CNI runtime per host name.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime } from '../../demo/runtime';
import type { Cluster } from '../../sim/cluster';

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
