/**
 * STATUS (CNI 1.1): can this host serve ADD now? SPEC.md STATUS codes:
 *   50 "the plugin is not available (i.e. cannot service ADD requests)"
 *   51 "the plugin is not available, and existing containers in the network
 *      may have limited connectivity"
 * Berth's mapping:
 *   etcd unreachable      -> 51: ADD can't bind, and the reconciler can't
 *                            follow moving addresses, so routes go stale
 *   berth0 missing        -> 51: local pods are cut off (or not wired yet)
 *   controller unreachable, pool missing, pool full (free == 0)
 *                         -> 50: no ADD possible, existing pods unaffected
 * A full pool is 50 per the spec's "if a plugin has a limited number of
 * resources (e.g. IP addresses) ... it should return an error if those
 * resources are exhausted". (Identities holding a released address can
 * still come back; new ones cannot.)
 */
import type { AgentRequest } from '../../common/agent-protocol';
import { BerthError, castError } from '../../common/errors';
import { BRIDGE_NAME } from '../desired';
import { getLink } from '../kernel/links';
import type { Ctx } from './shared';

export async function status(ctx: Ctx, req: AgentRequest): Promise<void> {
  const { deps } = ctx;
  if (!(await deps.etcdHealthy().catch(() => false))) throw new BerthError('PluginLimited', 'etcd unreachable');
  if (!(await getLink(deps.hostNetlink, BRIDGE_NAME))) throw new BerthError('PluginLimited', `${BRIDGE_NAME} does not exist yet`);
  let usage;
  try {
    usage = await deps.controller.pool(req.pool);
  } catch (e) {
    const err = castError(e);
    if (err.kind === 'PoolNotFound') throw new BerthError('PluginNotAvailable', `pool ${req.pool} does not exist`);
    throw new BerthError('PluginNotAvailable', `controller: ${err.details ?? err.message}`);
  }
  if (usage.free <= 0) {
    throw new BerthError('PluginNotAvailable', `pool ${req.pool} is full: ${usage.bound} bound, ${usage.held} held of ${usage.size}`);
  }
}
