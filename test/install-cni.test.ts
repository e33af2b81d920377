/**
 * `berth-agent install-cni` on a simulated node: the command line writes the
 * plugin and conflist into temp bin and conf dirs, and a runtime
 * (demo/runtime.ts, libcni's algorithm) creates and deletes a pod through
 * exactly what was installed, against a real agent, etcd and controller.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniRuntime } from '../demo/runtime';
import { podRoundTrip } from './harness/plugin';
import { startCluster } from '../sim/cluster';
import { AGENT_MAIN } from '../sim/cluster';

function installCniCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(process.execPath, [AGENT_MAIN, 'install-cni', ...args], (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
}

test('a pod is created and deleted through what install-cni installed', async (t) => {
  const c = await startCluster({ hosts: 1, poolCidr: '198.18.40.0/24' });
  t.teardown(() => c.teardown());
  const h = c.hosts[0];
  const binDir = join(c.dir, 'node/opt/cni/bin');
  const confDir = join(c.dir, 'node/etc/cni/net.d');
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const flags = ['--bin-dir', binDir, '--conf-dir', confDir, '--pool', c.pool.name, '--socket', h.socket, '--journal-dir', h.journalDir];
  const inst = await installCniCli(flags);
  t.is(inst.code, 0, inst.stderr);
  t.is(statSync(join(binDir, 'berth')).mode & 0o777, 0o755);
  const conflist = join(confDir, '10-berth.conflist');
  const before = statSync(conflist, { bigint: true });
  t.is((await installCniCli(flags)).code, 0);
  const after = statSync(conflist, { bigint: true });
  t.deepEqual([after.ino, after.mtimeNs], [before.ino, before.mtimeNs], 'a rerun rewrites nothing');

  const rt = new CniRuntime(binDir, conflist);
  const result = await podRoundTrip(t, c, rt, h, 'web-0', 'inst0123456789');
  t.is(result.cniVersion, '1.0.0');
  t.true(String(result.ips[0].address).startsWith('198.18.40.'), result.ips[0].address);

  const un = await installCniCli([...flags, '--uninstall']);
  t.is(un.code, 0, un.stderr);
  t.deepEqual(readdirSync(binDir), []);
  t.deepEqual(readdirSync(confDir), []);
});
