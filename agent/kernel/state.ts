/**
 * The shell around the pure planner: observe() reads the kernel into the
 * shape planChanges() consumes, apply() executes the ops it returns.
 * Together with agent/desired.ts this is one reconcile pass:
 *   observe -> desired -> planChanges -> apply.
 */
import { BRIDGE_NAME, VXLAN_NAME } from '../desired';
import type { KernelState, Op } from '../plan';
import type { Netlink } from './nl';
import {
  deleteFdb, deleteNeigh, deleteRoute, linkIndex, listFdbs, listNeighs, listRoutes, replaceFdb, replaceNeigh, replaceRoute,
} from './routes';

export interface Devices {
  bridge: string;
  vxlan: string;
}
export const DEFAULT_DEVICES: Devices = { bridge: BRIDGE_NAME, vxlan: VXLAN_NAME };

/** Berth-owned state only: routes marked with BERTH_RT_PROTO, entries on the VXLAN device. */
export async function observe(sock: Netlink, dev: Devices = DEFAULT_DEVICES): Promise<KernelState> {
  // One dump at a time: a netlink socket refuses a second concurrent dump with EBUSY.
  const routes = await listRoutes(sock);
  const neighs = await listNeighs(sock, dev.vxlan);
  const fdbs = await listFdbs(sock, dev.vxlan);
  return { routes, neighs, fdbs };
}

export interface ApplyResult {
  applied: number;
  /** Ops the kernel refused; the next pass observes and retries them. */
  failed: { op: Op; error: Error }[];
}

/**
 * Runs ops in order. One refusal doesn't stop the pass: the rest still
 * apply, and the next observe -> plan sees whatever is still missing.
 */
export async function apply(sock: Netlink, ops: Op[]): Promise<ApplyResult> {
  const result: ApplyResult = { applied: 0, failed: [] };
  if (ops.length === 0) return result;
  const links = await linkIndex(sock);
  for (const op of ops) {
    try {
      await applyOne(sock, links, op);
      result.applied++;
    } catch (error) {
      result.failed.push({ op, error: error as Error });
    }
  }
  return result;
}

function applyOne(sock: Netlink, links: Map<string, number>, o: Op): Promise<void> {
  switch (o.kind) {
    case 'route':
      return o.op === 'replace' ? replaceRoute(sock, links, o.route) : deleteRoute(sock, links, o.route);
    case 'neigh':
      return o.op === 'replace' ? replaceNeigh(sock, links, o.neigh) : deleteNeigh(sock, links, o.neigh);
    case 'fdb':
      return o.op === 'replace' ? replaceFdb(sock, links, o.fdb) : deleteFdb(sock, links, o.fdb);
  }
}
