/**
 * Which of this host's leases a GC may release: the pure half of GC.
 *
 * CNI SPEC (GC, 1.1): `cni.dev/valid-attachments` lists the still-valid
 * attachments *of the network GC was called for*, and an attachment is keyed
 * by (network name, container id, ifname). Two conflists (say `berth` and
 * `rtcnet`) may lease from one pool on one host; a GC of one must never see
 * the other's attachments as stale just because they are missing from its
 * list. So only bindings recorded with this network are candidates.
 *
 * Bindings written before the network was recorded carry none. Their network
 * is unknown, so the list cannot judge them: they are candidates only on the
 * kernel's word that the attachment is gone (its host veth no longer exists;
 * the veth dies with the pod's netns). gc.ts checks that under the
 * attachment's lock, so an ADD in flight is never mistaken for a leftover.
 */
import type { LeaseView } from '../../common/records';

export interface GcScope {
  /** The host whose leases are candidates (this agent's). */
  host: string;
  /** The network GC was called for (the conflist's name). */
  network: string;
  /** cni.dev/valid-attachments: keep these. */
  valid: readonly { containerId: string; ifName: string }[];
}

export interface GcSelection {
  /** This network's bindings missing from the valid list: release them. */
  stale: LeaseView[];
  /** Bindings with no recorded network, missing from the list: release only if their veth is gone. */
  unknownNetwork: LeaseView[];
}

export function selectForGc(leases: readonly LeaseView[], scope: GcScope): GcSelection {
  const keep = new Set(scope.valid.map((a) => `${a.containerId}\0${a.ifName}`));
  const out: GcSelection = { stale: [], unknownNetwork: [] };
  for (const l of leases) {
    const b = l.binding;
    if (l.state !== 'bound' || !b || b.host !== scope.host) continue;
    if (keep.has(`${b.containerId}\0${b.ifName}`)) continue;
    if (b.network === undefined) out.unknownNetwork.push(l);
    else if (b.network === scope.network) out.stale.push(l);
  }
  return out;
}
