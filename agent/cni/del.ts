/**
 * DEL: release the lease this container holds, remove its veth, and remove
 * the host route only when this DEL released the address (never a route for
 * an address that now belongs to another container). Succeeds when things
 * are already gone, with or without CNI_NETNS (SPEC.md DEL: "should
 * generally complete ... without error even if some resources are missing").
 *
 * Finding the lease: by identity when CNI_ARGS name one; when the release
 * finds nothing under that identity (no CNI_ARGS on DEL, as some runtimes
 * send it, or different ones than ADD had), by binding: this host's bound
 * lease with this (containerId, ifName). Release is fenced by containerId
 * and ifName, so it can never take an address from a newer container, nor
 * from another interface of this one (whose veth and route it leaves alone).
 *
 * Controller unreachable (every replica: the client fails over first, see
 * common/controller-client.ts): the veth is removed anyway (the container is
 * going), and the DEL is written to the DEL journal, the one the plugin
 * writes while the agent is down, and succeeds: a failing DEL blocks pod
 * teardown. The agent replays the journal (agent/journal-replay.ts) until
 * the release goes through; replay calls this with `replay` set, so a
 * failure there stays a failure and the entry stays. An ADD of the same
 * attachment later drops the entry, as it drops the plugin's. Until the
 * replay, the lease stays bound to this host. Only when the journal can't
 * take the entry does DEL fail with 11, for the runtime to retry.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import type { ReleaseResponse } from '../../common/api';
import { appendDel } from '../../common/del-journal';
import { castError, type BerthError } from '../../common/errors';
import { tryIdentityFor } from '../identity';
import { detachPod, hostLinkIndex } from '../kernel/pod';
import { deleteRoute } from '../kernel/routes';
import { BRIDGE_NAME, vethNameFor } from '../desired';
import { fastPathHook, findBoundLease, identityKey, type Ctx } from './shared';
import { getLink } from '../kernel/links';
import { localDelRefusal } from './local-del';

/** Controller answers that mean "nothing of ours to release". */
const NOTHING_TO_RELEASE = new Set(['PoolNotFound', 'LeaseNotFound', 'NotFound']);
/** Failures that mean no controller replica could be asked (a TLS failure too: a rotation fixes it): the DEL is journalled. */
const CONTROLLER_UNREACHABLE = new Set(['TryAgainLater', 'StoreUnavailable', 'TlsFailed']);

async function release(ctx: Ctx, req: AgentRequest): Promise<ReleaseResponse> {
  const { deps } = ctx;
  const id = tryIdentityFor(req.args, req.containerId, deps.host);
  if (id) {
    const r = await ctx.locks.run(identityKey(req.pool, id.identity), () => releaseAndUnroute(ctx, req, { identity: id.identity }));
    if (r.outcome !== 'not-found') return r;
  }
  const lease = await findBoundLease(deps, req.pool, req.containerId, req.ifName);
  if (!lease) return { outcome: 'not-found' };
  return ctx.locks.run(identityKey(req.pool, lease.identity), () => releaseAndUnroute(ctx, req, { ip: lease.ip }));
}

async function releaseAndUnroute(ctx: Ctx, req: AgentRequest, by: { identity?: string; ip?: string }): Promise<ReleaseResponse> {
  // Fenced by interface too: a DEL of net1 never releases the address eth0 holds.
  const r = await ctx.deps.controller.release(req.pool, { ...by, containerId: req.containerId, ifName: req.ifName });
  if (r.outcome === 'released' && r.lease) {
    // Ours until a moment ago and now held by nobody: the route can go now
    // rather than at the reconciler's next pass.
    await deleteRoute(ctx.deps.hostNetlink, await hostLinkIndex(ctx.deps.hostNetlink, BRIDGE_NAME), { dst: `${r.lease.ip}/32`, dev: BRIDGE_NAME });
  }
  return r;
}

/**
 * A repeated DEL of an attachment this agent already released, with nothing
 * of it left: done, from local state alone (the rules: cni/local-del.ts).
 * Called under the attachment lock, so no ADD of it runs meanwhile.
 */
async function alreadyGone(ctx: Ctx, req: AgentRequest): Promise<boolean> {
  const releasedAt = ctx.released.releasedAt(req);
  if (releasedAt === undefined || !ctx.deps.watchedLeases) return false;
  const refusal = localDelRefusal(req, ctx.deps.host, {
    releasedAt,
    watch: ctx.deps.watchedLeases(),
    vethPresent: (await getLink(ctx.deps.hostNetlink, vethNameFor(req.containerId, req.ifName))) !== undefined,
  });
  if (refusal) ctx.deps.log.debug('DEL asks the controller', { containerId: req.containerId, ifName: req.ifName, why: refusal });
  return refusal === undefined;
}

export async function del(ctx: Ctx, req: AgentRequest, o: { replay?: boolean } = {}): Promise<void> {
  const { deps } = ctx;
  if (!o.replay && (await alreadyGone(ctx, req))) {
    deps.log.info('DEL', { containerId: req.containerId, ifName: req.ifName, outcome: 'already-gone' });
    return;
  }
  let outcome: ReleaseResponse | undefined;
  let failure: BerthError | undefined;
  // The release (controller round trip, then the host route on berth0) and
  // taking the veth out of service touch nothing of each other's, so they
  // run together. The veth itself is deleted in the background (see
  // kernel/pod.ts): the kernel's RCU wait would otherwise be DEL's latency.
  // The attachment lock (cni-handlers.ts) is held throughout, and the veth
  // goes even when the release fails.
  // The veth is named after (containerId, ifName): removing it never touches another container.
  const onReapError = (e: unknown) =>
    deps.log.warn('veth deletion failed; it is down and off the bridge, and goes with the pod netns', { containerId: req.containerId, ifName: req.ifName, error: castError(e).message });
  fastPathHook(ctx, 'forget', () => deps.fastPath?.forgetVeth(vethNameFor(req.containerId, req.ifName)));
  deps.podFirewall?.forget(vethNameFor(req.containerId, req.ifName));
  const [rel, det] = await Promise.allSettled([
    release(ctx, req),
    detachPod(deps.hostNetlink, { containerId: req.containerId, ifName: req.ifName }, onReapError),
  ]);
  if (rel.status === 'fulfilled') {
    outcome = rel.value;
  } else {
    const err = castError(rel.reason);
    if (!NOTHING_TO_RELEASE.has(err.kind)) failure = err;
  }
  if (det.status === 'rejected') throw det.reason;
  deps.markDirty();
  if (failure && !o.replay && CONTROLLER_UNREACHABLE.has(failure.kind)) {
    try {
      const entry = await appendDel(deps.journalDir, { ...req, prevResult: undefined });
      deps.log.warn('controller unreachable; DEL journalled for replay', { containerId: req.containerId, ifName: req.ifName, entry: entry.id, error: failure.details });
      return;
    } catch (e) {
      deps.log.warn('controller unreachable and the DEL journal refused the entry', { containerId: req.containerId, error: castError(e).message });
    }
  }
  deps.log.info('DEL', { containerId: req.containerId, ifName: req.ifName, outcome: outcome?.outcome, ip: outcome?.lease?.ip, error: failure?.kind });
  if (failure) throw failure;
  // The controller answered: nothing of this attachment is bound any more.
  ctx.released.remember(req, outcome?.outcome === 'released' && outcome.lease ? BigInt(outcome.lease.revision) : 0n);
}
