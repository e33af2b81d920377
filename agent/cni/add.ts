/**
 * ADD: get-or-bind the identity's lease, plumb the veth, report the result.
 *
 *   0. the config's pool must be the one this agent serves (else 7, nothing done)
 *   1. identity from CNI_ARGS (agent/identity.ts)
 *   2. controller.bind (recording the network name in the binding; another
 *      interface of this container already holding the identity's address
 *      is InterfaceConflict): the same identity gets its address back; at the
 *      same time plugVeth: the veth pair into the netns, on berth0, up
 *      (it needs no address, and the two take about as long each)
 *   3. addressPod: <ip>/32, default via gateway onlink, and the host route
 *      <ip>/32 dev berth0 proto 190 (what the reconciler wants for a local
 *      lease, so its next pass changes nothing)
 *   4. markDirty, drop a DEL journalled for this attachment before this ADD
 *
 * Each step pushes its undo; a failure unwinds them in reverse. The bind is
 * undone (released) only when this ADD allocated the lease: a lease found
 * bound to this container already (repeated ADD) or rebound from a held one
 * stays as it is, and the runtime's DEL after the failed ADD releases it.
 *
 * Result: the pod is configured with <ip>/32, and the result reports exactly
 * that (as calico and cilium do), with the pool gateway and a default route.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import type { CniResult } from '../../common/cni-types';
import { parseCidr } from '../../common/cidr';
import { BerthError, castError } from '../../common/errors';
import { identityFor } from '../identity';
import { addressPod, detachPod, plugVeth } from '../kernel/pod';
import { getLink } from '../kernel/links';
import { isOwnNetns, openNetnsFd } from '../kernel/netns';
import { closeSync } from 'node:fs';
import { dropSupersededDel } from './journal';
import { fastPathHook, identityKey, type Ctx } from './shared';

type Undo = { what: string; run: () => Promise<unknown> };

async function unwind(ctx: Ctx, undo: Undo[], req: AgentRequest): Promise<void> {
  for (const u of undo.reverse()) {
    try {
      await u.run();
    } catch (e) {
      // The runtime follows a failed ADD with DEL, which finishes the job.
      ctx.deps.log.warn('ADD rollback step failed', { step: u.what, containerId: req.containerId, error: castError(e).message });
    }
  }
}

/**
 * The agent serves one pool: berth0 carries that pool's gateway and the
 * reconciler routes only its leases. A pod leased from another pool could
 * not reach its gateway, and the next pass would delete its host route, so
 * such an ADD is a configuration error (CNI 7) before anything is bound.
 */
function checkPool(asked: string, served: string): void {
  if (asked !== served) {
    throw new BerthError('InvalidConfig', `pool ${asked} in the network config; this host's agent serves pool ${served}`, "the network config's pool is not the one this host serves");
  }
}

/** Before anything is bound or created: the path is a network namespace (NotFound, InvalidRequest), and not ours. */
function checkNetns(netns: string): void {
  closeSync(openNetnsFd(netns));
  let own: boolean;
  try {
    own = isOwnNetns(netns);
  } catch (e) {
    throw new BerthError('NotFound', `${netns}: ${(e as Error).message}`, 'network namespace does not exist');
  }
  if (own) throw new BerthError('InvalidRequest', netns, "CNI_NETNS is the host's own network namespace");
}

export async function add(ctx: Ctx, req: AgentRequest): Promise<CniResult> {
  const { deps } = ctx;
  checkPool(req.pool, deps.pool);
  // Whatever this ADD comes to, a later DEL of the attachment asks the controller (cni/local-del.ts).
  ctx.released.forget(req);
  const { identity, source } = identityFor(req.args, req.containerId, deps.host);
  if (req.ips && req.ips.length > 1) {
    throw new BerthError('InvalidRequest', `ips: ${req.ips.join(',')}`, 'berth assigns one address per attachment');
  }
  checkNetns(req.netns);
  const started = new Date();
  return ctx.locks.run(identityKey(req.pool, identity), async () => {
    const undo: Undo[] = [];
    try {
      const mtu = req.mtu ?? deps.overlayMtu;
      const known = deps.poolRoute?.();
      const [bind, plug] = await Promise.allSettled([
        deps.controller.bind(req.pool, {
          identity, source, host: deps.host, containerId: req.containerId, ifName: req.ifName, network: req.network, ...(req.ips?.[0] ? { ip: req.ips[0] } : {}),
        }),
        plugVeth(deps.hostNetlink, {
          containerId: req.containerId, ifName: req.ifName, netns: req.netns, mtu, ...(req.mac ? { mac: req.mac } : {}),
          ...(known ? { route: { gateway: known.gateway, poolCidr: known.cidr } } : {}),
        }),
      ]);
      if (bind.status === 'fulfilled' && bind.value.allocated) {
        // discard: the runtime never got this address, so it is freed now, not held (fenced by the controller).
        undo.push({ what: `release ${bind.value.lease.ip}`, run: () => deps.controller.release(req.pool, { identity, containerId: req.containerId, discard: true }) });
      }
      // Once bound, a failure takes the attachment down (the runtime's DEL follows). Unbound, only
      // a pair this ADD created goes: one kept from an earlier ADD still serves that ADD's result.
      if (bind.status === 'fulfilled' || (plug.status === 'fulfilled' && !plug.value.reused)) {
        const ip = bind.status === 'fulfilled' ? bind.value.lease.ip : undefined;
        undo.push({ what: 'detach', run: async () => (await detachPod(deps.hostNetlink, { containerId: req.containerId, ifName: req.ifName, ip })).gone });
      }
      if (bind.status === 'rejected') throw bind.reason;
      if (plug.status === 'rejected') throw plug.reason;
      const bound = bind.value;
      const ip = bound.lease.ip;
      const att = await addressPod(deps.hostNetlink, plug.value, { ip, gateway: bound.gateway, poolCidr: parseCidr(`${ip}/${bound.prefix}`).cidr });
      if (deps.fastPath) {
        const hostIndex = plug.value.hostIndex ?? (await getLink(deps.hostNetlink, plug.value.hostVeth))?.index;
        if (hostIndex !== undefined) fastPathHook(ctx, 'learn', () => deps.fastPath?.learnLocal(ip, plug.value.hostVeth, hostIndex));
      }
      undo.push({ what: 'fast path', run: async () => fastPathHook(ctx, 'forget', () => deps.fastPath?.forgetVeth(plug.value.hostVeth)) });
      // The source check must know the pod before the runtime starts its workload, or its first packets drop.
      undo.push({ what: 'firewall', run: async () => deps.podFirewall?.forget(plug.value.hostVeth) });
      await deps.podFirewall?.admit(plug.value.hostVeth, ip);
      deps.markDirty();
      if (await dropSupersededDel(deps.journalDir, req, started)) {
        deps.log.info('dropped a DEL journalled before this ADD', { containerId: req.containerId, ifName: req.ifName });
      }
      deps.log.info('ADD', { identity, ip, containerId: req.containerId, ifName: req.ifName, allocated: bound.allocated, reused: att.reused });
      return {
        interfaces: [
          { name: att.hostVeth, mac: att.hostMac },
          { name: req.ifName, mac: att.mac, mtu, sandbox: att.sandbox },
        ],
        ips: [{ address: `${ip}/32`, gateway: bound.gateway, interface: 1 }],
        routes: [{ dst: att.routeDst, gw: bound.gateway }],
      };
    } catch (e) {
      await unwind(ctx, undo, req);
      throw e;
    }
  });
}
