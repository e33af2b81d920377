/**
 * Withdrawal: a local pod whose lease is no longer bound to this host (it
 * moved to another host while this agent was away, or this host was declared
 * dead or forgotten and its leases turned held) must stop answering for the
 * address, so that two live pods never answer for one address.
 *
 * The route half is the planner's: desiredState() has no local route for
 * such an address (a remote one if it is bound elsewhere). This module does
 * the veth half: it retires the pod's host-side veth (down, off berth0), as
 * DEL does first, so the pod loses carrier and the fast path, which only
 * counts veths that are up on berth0 (agent/fastpath.ts), drops it in the
 * same pass. The veth is not deleted: the runtime's DEL does that, and the
 * pod's netns still holds its side.
 *
 * Which veths: the rule must never touch a pod that a CNI ADD is plugging
 * right now (its veth is up on berth0 before its bind is visible in our etcd
 * view). So a veth is withdrawn only if it is *known*: present when the
 * agent started (the first pass runs before the CNI socket opens, so no ADD
 * is in flight then), or listed as a local attachment by an earlier pass.
 * A known veth that is in service but not in this pass's locals is stale.
 * Once withdrawn it is forgotten, so a later ADD that reuses the pair is
 * never undone by us.
 */
import type { Desired } from './desired';
import { BRIDGE_NAME } from './desired';
import type { LinkView } from './fastpath';
import { nlGone, type Netlink } from './kernel/nl';
import { listLinks } from './kernel';

/** Host-side pod veths are named bth<8 hex> (agent/desired.ts vethNameFor). */
export const POD_VETH_RE = /^bth[0-9a-f]{8}$/;

/** Pure: the veths to retire now, and the known set after this pass. */
export function staleAttachments(
  d: Pick<Desired, 'locals'>,
  links: readonly LinkView[],
  known: ReadonlySet<string>,
): { retire: LinkView[]; known: Set<string> } {
  const bridge = links.find((l) => l.name === BRIDGE_NAME)?.index;
  const wanted = new Set((d.locals ?? []).map((l) => l.veth));
  const retire: LinkView[] = [];
  const next = new Set<string>();
  for (const l of links) {
    if (!POD_VETH_RE.test(l.name)) continue;
    const inService = l.up === true || (l.master !== undefined && l.master !== 0 && l.master === bridge);
    if (wanted.has(l.name)) next.add(l.name);
    else if (known.has(l.name) && inService) retire.push(l);
  }
  for (const v of wanted) next.add(v);
  return { retire, known: next };
}

export interface WithdrawResult {
  ops: number;
  failed: string[];
  retired: string[];
}

/**
 * Tracks known veths across passes and retires stale ones. `seed()` runs at
 * the first pass: every pod veth present then is known.
 */
export class Withdrawer {
  private known: Set<string> | null = null;

  async run(d: Desired, nl: Netlink): Promise<WithdrawResult> {
    const links = (await listLinks(nl)).map((l) => ({ name: l.name, index: l.index, up: l.up, master: l.master }));
    const known = this.known ?? new Set(links.filter((l) => POD_VETH_RE.test(l.name)).map((l) => l.name));
    const { retire, known: next } = staleAttachments(d, links, known);
    const failed: string[] = [];
    const retired: string[] = [];
    for (const l of retire) {
      try {
        await nlGone(`withdraw ${l.name}`, nl.setLink({ index: l.index, flags: {}, change: { up: true } }, { master: 0 }));
        retired.push(l.name);
      } catch (e) {
        failed.push(`${l.name}: ${(e as Error).message}`);
        next.add(l.name); // try again next pass
      }
    }
    this.known = next;
    return { ops: retired.length, failed, retired };
  }
}
