/**
 * What every CNI verb handler shares: the per-request context, the keyed
 * mutex that serializes work on one attachment or one identity, and the
 * lookups of this host's leases.
 *
 * Locks (in-process; one agent per host): a verb first takes the lock of its
 * attachment (pool, containerId, ifName), then, once it knows it, the lock of
 * the identity (pool, identity). Always in that order, so they cannot
 * deadlock. The identity lock keeps a DEL of an old container from deleting
 * the host route that an ADD of the same identity (a restarted pod) has just
 * installed for the same address.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import type { LeaseView } from '../../common/records';
import { castError } from '../../common/errors';
import type { CniDeps } from '../cni-api';
import type { ReleasedAttachments } from './local-del';

export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Keys with a holder or waiters (for tests). */
  get size(): number {
    return this.tails.size;
  }
}

export interface Ctx {
  deps: CniDeps;
  locks: KeyedMutex;
  /** Attachments a DEL of this process released since their last ADD (agent/cni/local-del.ts). */
  released: ReleasedAttachments;
}

export const attachmentKey = (r: Pick<AgentRequest, 'pool' | 'containerId' | 'ifName'>) => `a\0${r.pool}\0${r.containerId}\0${r.ifName}`;
export const identityKey = (pool: string, identity: string) => `i\0${pool}\0${identity}`;

/** This host's lease bound to (containerId, ifName), found by binding: for a DEL or CHECK without usable CNI_ARGS. */
export async function findBoundLease(deps: CniDeps, pool: string, containerId: string, ifName: string): Promise<LeaseView | undefined> {
  const { leases } = await deps.controller.leases({ pool, host: deps.host, state: 'bound' });
  return leases.find((l) => l.binding?.containerId === containerId && l.binding.ifName === ifName);
}

/** The fast path is a shortcut: its failure never fails a verb, and the reconcile pass retries it. */
export function fastPathHook(ctx: Ctx, what: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    ctx.deps.log.warn('fast path update failed; the next reconcile pass retries', { what, error: castError(e).message });
  }
}
