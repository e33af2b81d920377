/**
 * GC (CNI 1.1): release every lease this host holds in the pool through this
 * network whose (containerId, ifName) is not in cni.dev/valid-attachments,
 * and remove its veth and host route. Which leases are candidates is the
 * pure selectForGc (gc-select.ts): only the pool's leases bound to this host
 * and recorded with this network, so another network's attachments (in
 * another pool or the same one) and other hosts' containers are never
 * touched; a binding with no recorded network only once its veth is gone.
 * Each release is fenced by the containerId and ifName it was read with: a
 * lease rebound meanwhile is left alone. Every stale attachment is tried;
 * the first failure is reported after.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import { castError, type BerthError } from '../../common/errors';
import { BRIDGE_NAME, vethNameFor } from '../desired';
import { getLink } from '../kernel/links';
import { detachPod } from '../kernel/pod';
import { selectForGc } from './gc-select';
import { attachmentKey, fastPathHook, identityKey, type Ctx } from './shared';

export async function gc(ctx: Ctx, req: AgentRequest): Promise<void> {
  const { deps } = ctx;
  const { leases } = await deps.controller.leases({ pool: req.pool, host: deps.host, state: 'bound' });
  const { stale, unknownNetwork } = selectForGc(leases, { host: deps.host, network: req.network, valid: req.validAttachments ?? [] });
  let first: BerthError | undefined;
  let released = 0;
  const candidates = [...stale.map((l) => ({ l, onlyIfVethGone: false })), ...unknownNetwork.map((l) => ({ l, onlyIfVethGone: true }))];
  for (const { l, onlyIfVethGone } of candidates) {
    const { containerId, ifName } = l.binding!;
    const veth = vethNameFor(containerId, ifName);
    try {
      await ctx.locks.run(attachmentKey({ pool: req.pool, containerId, ifName }), () =>
        ctx.locks.run(identityKey(req.pool, l.identity), async () => {
          if (onlyIfVethGone && (await getLink(deps.hostNetlink, veth))) return; // in use, by some network
          const r = await deps.controller.release(req.pool, { ip: l.ip, containerId, ifName });
          if (r.outcome !== 'released') return; // rebound or released by someone else meanwhile
          released++;
          fastPathHook(ctx, 'forget', () => deps.fastPath?.forgetVeth(veth));
          deps.podFirewall?.forget(veth);
          await (await detachPod(deps.hostNetlink, { containerId, ifName, ip: l.ip, bridge: BRIDGE_NAME })).gone;
        }));
    } catch (e) {
      first ??= castError(e);
      deps.log.warn('GC: could not release a stale lease', { ip: l.ip, containerId, error: castError(e).message });
    }
  }
  if (released > 0) deps.markDirty();
  deps.log.info('GC', { pool: req.pool, network: req.network, bound: leases.length, stale: stale.length, unknownNetwork: unknownNetwork.length, released });
  if (first) throw first;
}
