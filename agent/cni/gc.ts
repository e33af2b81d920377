/**
 * GC (CNI 1.1): release every lease this host holds in the pool whose
 * (containerId, ifName) is not in cni.dev/valid-attachments, and remove its
 * veth and host route. Only the pool's leases bound to this host are
 * candidates, so another network's attachments (another pool) and other
 * hosts' containers are never touched. Each release is fenced by the
 * containerId it was read with: a lease rebound meanwhile is left alone.
 * Every stale attachment is tried; the first failure is reported after.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import { castError, type BerthError } from '../../common/errors';
import { BRIDGE_NAME, vethNameFor } from '../desired';
import { detachPod } from '../kernel/pod';
import { attachmentKey, fastPathHook, identityKey, type Ctx } from './shared';

export async function gc(ctx: Ctx, req: AgentRequest): Promise<void> {
  const { deps } = ctx;
  const keep = new Set((req.validAttachments ?? []).map((a) => `${a.containerId}\0${a.ifName}`));
  const { leases } = await deps.controller.leases({ pool: req.pool, host: deps.host, state: 'bound' });
  const stale = leases.filter((l) => l.binding && !keep.has(`${l.binding.containerId}\0${l.binding.ifName}`));
  let first: BerthError | undefined;
  let released = 0;
  for (const l of stale) {
    const { containerId, ifName } = l.binding!;
    try {
      await ctx.locks.run(attachmentKey({ pool: req.pool, containerId, ifName }), () =>
        ctx.locks.run(identityKey(req.pool, l.identity), async () => {
          const r = await deps.controller.release(req.pool, { ip: l.ip, containerId });
          if (r.outcome !== 'released') return; // rebound or released by someone else meanwhile
          released++;
          fastPathHook(ctx, 'forget', () => deps.fastPath?.forgetVeth(vethNameFor(containerId, ifName)));
          await (await detachPod(deps.hostNetlink, { containerId, ifName, ip: l.ip, bridge: BRIDGE_NAME })).gone;
        }));
    } catch (e) {
      first ??= castError(e);
      deps.log.warn('GC: could not release a stale lease', { ip: l.ip, containerId, error: castError(e).message });
    }
  }
  if (released > 0) deps.markDirty();
  deps.log.info('GC', { pool: req.pool, bound: leases.length, stale: stale.length, released });
  if (first) throw first;
}
