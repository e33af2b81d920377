/**
 * One simulated host running the agent's CNI side, for integration tests:
 * a Lab namespace with berth0 (the "host"), a pool of its own on a shared
 * controller, the real handlers behind a real startCniServer socket, a DEL
 * journal directory, and a helper that execs the `berth` relay binary as
 * a runtime does. The test process stays in the root netns and reaches the
 * host only through a netlink socket opened inside it.
 */
import type { ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControllerClient } from '../../common/controller-client';
import { silentLogger } from '../../common/log';
import { startCniServer } from '../../agent/cni-server';
import { createCniHandler } from '../../agent/cni-handlers';
import type { CniDeps, CniHandler, CniServer } from '../../agent/cni-api';
import { ensureBridge } from '../../agent/kernel/links';
import { openNetlinkIn, warmThreadPool } from '../../agent/kernel/netns';
import { startController, type RunningController } from '../../controller/app';
import { startEtcd, type EtcdServer } from '../../sim/etcd';
import type { Netlink } from '../../agent/kernel/nl';
import { ensureRelay, execPlugin, type ExecResult } from '../../sim/exec';
import { Lab, randomTag, type Netns } from '../../sim/netns';

export interface Site {
  lab: Lab;
  host: Netns;
  hostNl: Netlink;
  pool: string;
  gateway: string;
  hostName: string;
  cidr: string;
  deps: CniDeps;
  handler: CniHandler;
  server: CniServer;
  dir: string;
  journalDir: string;
  dirty: { n: number };
  conf(version: string, extra?: Record<string, unknown>): Record<string, unknown>;
  /** Runs the real plugin; env defaults to an ADD-shaped CNI_* set for (cid, eth0, pod). */
  cni(verb: string, cid: string, pod: Netns | undefined, o?: { version?: string; args?: string; ifName?: string; extra?: Record<string, unknown> }): Promise<ExecResult>;
}

let siteCount = 0;

/** Call warmThreadPool() once before the first site (openNetlinkIn needs it). */
export async function startSite(t: ExecutionContext, controllerUrl: string, o: { cidr?: string } = {}): Promise<Site> {
  const admin = new ControllerClient({ url: controllerUrl });
  t.teardown(() => admin.close());
  const lab = new Lab();
  const dir = mkdtempSync(join(tmpdir(), 'berth-agent-cni-'));
  t.teardown(() => {
    lab.teardown();
    rmSync(dir, { recursive: true, force: true });
  });
  const host = lab.netns('h');
  const hostNl = openNetlinkIn(host.path);
  t.teardown(() => hostNl.socket.close());
  // Pools may not overlap: each site gets its own /24 unless told.
  const cidr = o.cidr ?? `198.18.${100 + (siteCount++ % 150)}.0/24`;
  const gateway = cidr.replace(/\.0\/\d+$/, '.1');
  await ensureBridge(hostNl, { name: 'berth0', address: `${gateway}/32`, mtu: 1450 });
  const pool = `p-${randomTag()}`;
  await admin.createPool({ name: pool, cidr, gateway });
  const dirty = { n: 0 };
  const journalDir = join(dir, 'journal');
  const hostName = `node-${randomTag()}`;
  const controller = new ControllerClient({ url: controllerUrl });
  t.teardown(() => controller.close());
  const deps: CniDeps = {
    host: hostName, pool, controller, hostNetlink: hostNl, openHostNetlink: () => openNetlinkIn(host.path), overlayMtu: 1450, journalDir, log: silentLogger,
    etcdHealthy: async () => true,
    markDirty: () => void dirty.n++,
  };
  const handler = createCniHandler(deps);
  const server = await startCniServer(join(dir, 'run', 'agent.sock'), handler, silentLogger);
  t.teardown(() => server.close());
  const conf = (version: string, extra: Record<string, unknown> = {}) => ({
    cniVersion: version, name: 'berth-net', type: 'berth', pool, agentSocket: server.socketPath, journalDir, agentTimeoutMs: 20_000, ...extra,
  });
  const cni: Site['cni'] = (verb, cid, pod, x = {}) => execPlugin({
    CNI_COMMAND: verb, CNI_CONTAINERID: cid, CNI_NETNS: pod?.path ?? '', CNI_IFNAME: x.ifName ?? 'eth0',
    CNI_ARGS: x.args ?? `K8S_POD_NAMESPACE=web;K8S_POD_NAME=${cid}`, CNI_PATH: '/usr/lib/cni',
  }, conf(x.version ?? '1.1.0', x.extra));
  return { lab, host, hostNl, pool, gateway, hostName, cidr, deps, handler, server, dir, journalDir, dirty, conf, cni };
}


/** What CNI integration tests share: a real etcd and one controller on it, and an admin client. */
export interface CniBackend {
  etcd: EtcdServer;
  ctl: RunningController;
  admin: ControllerClient;
  stop(): Promise<void>;
}

/** Starts the backend; also warms the thread pool and builds the relay binary if needed. */
export async function startCniBackend(): Promise<CniBackend> {
  await warmThreadPool();
  await ensureRelay();
  const etcd = await startEtcd();
  const ctl = await startController({ etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', log: silentLogger }).catch(async (e) => {
    await etcd.stop();
    throw e;
  });
  const admin = new ControllerClient({ url: ctl.url });
  return {
    etcd, ctl, admin,
    async stop() {
      admin.close();
      await ctl.stop();
      await etcd.stop();
    },
  };
}
