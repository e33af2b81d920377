/**
 * A DEL answered from the agent's own state: no controller round trip, no
 * kernel write. containerd sends two DELs per pod, one at StopPodSandbox
 * (with the netns and the cached prevResult) and one at RemovePodSandbox
 * (CNI_NETNS "", no prevResult), sometimes long after the pod's next
 * sandbox started; the second found nothing to do, at the cost of a
 * controller request (a lease list, then a release) each time.
 *
 * A DEL may skip the controller only when all of this holds (`localDel`):
 *
 *   1. This agent process itself completed a DEL of the same attachment
 *      (pool, containerId, ifName, network) whose release the controller
 *      answered (released, or nothing of that container to release), and no
 *      ADD of that attachment has started since (`ReleasedAttachments`,
 *      in memory: an agent that restarted knows nothing and asks). An ADD
 *      answered but not yet seen by the watch has cleared this, so its
 *      lease is always released.
 *   2. The watch has listed (revision > 0: not mid-relist), has reached the
 *      etcd revision of that release (so it has delivered every binding
 *      made before it), and shows no lease bound on this host to
 *      (containerId, ifName), whatever the network or identity: a binding
 *      the first DEL did not release (it released by identity, and another
 *      identity is bound to the same interface) still goes to the
 *      controller. A binding made after the release can only come from an
 *      ADD, which 1 covers.
 *   3. No host veth of (containerId, ifName) is left: anything still
 *      plumbed is removed the slow way.
 *
 * The runtime's DEL is unconditionally idempotent (SPEC.md DEL), so an
 * answer of "done" is right whenever the first DEL's work is known done.
 * Everything here is a read: the map, the watch's snapshot and one netlink
 * link lookup.
 */
import type { AgentRequest } from '../../common/agent-protocol';
import type { LeaseView } from '../../common/records';

type Att = Pick<AgentRequest, 'pool' | 'containerId' | 'ifName' | 'network'>;

const keyOf = (a: Att) => `${a.pool}\0${a.containerId}\0${a.ifName}\0${a.network}`;

/**
 * Attachments a DEL of this process released, each with the etcd revision
 * of its release (0n when there was nothing to release); at most `cap`, the
 * oldest forgotten first (a forgotten one only costs a controller request).
 */
export class ReleasedAttachments {
  private readonly keys = new Map<string, bigint>();

  constructor(private readonly cap = 4096) {}

  remember(a: Att, revision: bigint): void {
    const k = keyOf(a);
    this.keys.delete(k);
    this.keys.set(k, revision);
    if (this.keys.size > this.cap) this.keys.delete(this.keys.keys().next().value as string);
  }

  forget(a: Att): void {
    this.keys.delete(keyOf(a));
  }

  /** The revision of the attachment's release, or undefined when none is known. */
  releasedAt(a: Att): bigint | undefined {
    return this.keys.get(keyOf(a));
  }

  get size(): number {
    return this.keys.size;
  }
}

/** What the agent knows locally about one attachment, gathered by reads only. */
export interface LocalEvidence {
  /** 1: the revision of the release a DEL of this process made, no ADD since; undefined: none. */
  releasedAt: bigint | undefined;
  /** 2: this host's bound leases as the watch shows them, and the revision it reached (0n: not listed). */
  watch: { leases: LeaseView[]; revision: bigint } | undefined;
  /** 3: the host veth of (containerId, ifName) exists. */
  vethPresent: boolean;
}

/** Pure: may this DEL be answered without the controller? Returns why not, or undefined when it may. */
export function localDelRefusal(req: Att, host: string, e: LocalEvidence): string | undefined {
  if (e.releasedAt === undefined) return 'no release of this attachment known to this agent since its last ADD';
  if (!e.watch || e.watch.revision <= 0n) return 'the watch has not listed';
  if (e.watch.revision < e.releasedAt) return 'the watch has not reached the release';
  const bound = e.watch.leases.some((l) => l.state === 'bound' && l.binding?.host === host && l.binding.containerId === req.containerId && l.binding.ifName === req.ifName);
  if (bound) return 'the watch shows a lease bound to this attachment';
  if (e.vethPresent) return 'its veth is still there';
  return undefined;
}
