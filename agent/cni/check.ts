/**
 * CHECK: is the attachment still what ADD made? Verifies, and reports every
 * mismatch at once as CheckFailed (113) with details naming each:
 *   - the lease: bound, to this host, this container and this ifName (and
 *     this network, when the binding records one), and
 *     the address prevResult reported;
 *   - inside the netns: the interface exists, is up, has <ip>/32, the MTU
 *     (prevResult's, else the configured one) and prevResult's MAC, and the
 *     default route via the gateway;
 *   - on the host: the veth is up on berth0 and <ip>/32 dev berth0 proto 190.
 * The controller unreachable is 11 (try again later), not a mismatch.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import { BerthError } from '../../common/errors';
import type { LeaseView } from '../../common/records';
import { identityFor } from '../identity';
import { BRIDGE_NAME } from '../desired';
import { getLink, listAddresses, vethNameFor } from '../kernel/links';
import { withNetns } from '../kernel/netns';
import { listRoutes } from '../kernel/routes';
import { findBoundLease, type Ctx } from './shared';

function leaseProblems(l: LeaseView | undefined, req: AgentRequest, host: string, identity: string): string[] {
  if (!l) return [`no lease for ${identity} or for container ${req.containerId} in pool ${req.pool}`];
  if (l.state !== 'bound' || !l.binding) return [`lease ${l.ip} is ${l.state}, not bound`];
  const b = l.binding;
  const out: string[] = [];
  if (b.host !== host) out.push(`lease ${l.ip} is bound to host ${b.host}, not ${host}`);
  if (b.containerId !== req.containerId) out.push(`lease ${l.ip} is bound to container ${b.containerId}`);
  if (b.ifName !== req.ifName) out.push(`lease ${l.ip} is bound to interface ${b.ifName}`);
  if (b.network !== undefined && b.network !== req.network) out.push(`lease ${l.ip} is bound through network ${b.network}, not ${req.network}`);
  return out;
}

export async function check(ctx: Ctx, req: AgentRequest): Promise<void> {
  const { deps } = ctx;
  const { identity } = identityFor(req.args, req.containerId, deps.host);
  const byIdentity = (await deps.controller.leases({ pool: req.pool, identity })).leases[0];
  const lease = byIdentity ?? (await findBoundLease(deps, req.pool, req.containerId, req.ifName));
  const problems = leaseProblems(lease, req, deps.host, identity);
  if (!lease) throw new BerthError('CheckFailed', problems.join('; '));
  const ip = lease.ip;
  const { gateway } = await deps.controller.pool(req.pool);

  const prev = req.prevResult;
  const prevIps = (prev?.ips ?? []).map((c) => c.address.split('/')[0]);
  if (prevIps.length > 0 && !prevIps.includes(ip)) problems.push(`prevResult reports ${prevIps.join(',')}, the lease is ${ip}`);
  const prevIf = prev?.interfaces?.find((i) => i.name === req.ifName && i.sandbox !== undefined);
  const wantMtu = prevIf?.mtu ?? req.mtu ?? deps.overlayMtu;

  try {
    await withNetns(req.netns, async (pod) => {
      const eth = await getLink(pod, req.ifName);
      if (!eth) return void problems.push(`${req.ifName} is missing in ${req.netns}`);
      if (!eth.up) problems.push(`${req.ifName} is down`);
      if (eth.mtu !== wantMtu) problems.push(`${req.ifName} has MTU ${eth.mtu}, want ${wantMtu}`);
      if (prevIf?.mac && eth.mac !== prevIf.mac.toLowerCase()) problems.push(`${req.ifName} has MAC ${eth.mac}, prevResult says ${prevIf.mac}`);
      const addrs = (await listAddresses(pod, eth.index)).map((a) => a.cidr);
      if (!addrs.includes(`${ip}/32`)) problems.push(`${req.ifName} lacks ${ip}/32 (has ${addrs.join(',') || 'none'})`);
      const routes = await listRoutes(pod, { protocol: 'any', dev: req.ifName });
      // The route ADD reported (0.0.0.0/0, or the pool for a second interface; kernel/pod.ts addressPod).
      // Found by its gateway: later plugins in the chain may have added routes of their own.
      const wantDst = prev?.routes?.find((r) => r.gw === gateway)?.dst ?? '0.0.0.0/0';
      if (!routes.some((r) => r.dst === wantDst && r.via === gateway)) problems.push(`no ${wantDst === '0.0.0.0/0' ? 'default route' : `route to ${wantDst}`} via ${gateway} on ${req.ifName}`);
    });
  } catch (e) {
    problems.push(`cannot inspect ${req.netns}: ${(e as Error).message}`);
  }

  const hostVeth = vethNameFor(req.containerId, req.ifName);
  const hv = await getLink(deps.hostNetlink, hostVeth);
  const bridge = await getLink(deps.hostNetlink, BRIDGE_NAME);
  if (!hv) problems.push(`host veth ${hostVeth} is missing`);
  else {
    if (!hv.up) problems.push(`host veth ${hostVeth} is down`);
    if (!bridge || hv.master !== bridge.index) problems.push(`host veth ${hostVeth} is not on ${BRIDGE_NAME}`);
  }
  const dumpSock = deps.openHostNetlink();
  const hostRoutes = await listRoutes(dumpSock, { dev: BRIDGE_NAME }).finally(() => dumpSock.socket.close());
  if (!hostRoutes.some((r) => r.dst === `${ip}/32` && !r.via)) problems.push(`host route ${ip}/32 dev ${BRIDGE_NAME} proto 190 is missing`);

  if (problems.length > 0) throw new BerthError('CheckFailed', problems.join('; '));
}
