/**
 * The seam between the agent daemon and its CNI request handlers: the daemon
 * owns the process, registration and the reconcile loop; the handlers own
 * what one CNI verb does. Handlers get everything they touch through CniDeps,
 * so tests drive them with a real controller and a real host namespace
 * without running the daemon.
 */
import type { AgentRequest, AgentResponse } from '../common/agent-protocol';
import type { ControllerClient } from '../common/controller-client';
import type { Logger } from '../common/log';
import type { LeaseView } from '../common/records';
import type { Netlink } from './kernel/nl';

export interface CniDeps {
  /** This host's name, as registered in etcd. */
  host: string;
  /** The one pool this host's agent serves (its berth0 gateway, its routes): ADD refuses any other. */
  pool: string;
  controller: ControllerClient;
  /** A netlink socket in the host's network namespace (the agent's own), shared by concurrent requests. */
  hostNetlink: Netlink;
  /**
   * Opens a fresh socket in the same namespace, for dumps. netlink 0.3.0 ends a
   * multipart dump early when another request's reply interleaves on the same
   * socket, so a dump must not share the socket concurrent requests use.
   */
  openHostNetlink(): Netlink;
  /**
   * The served pool's CIDR and gateway as the agent last saw them (undefined
   * before it knows): ADD sets the pod's route while the controller binds.
   */
  poolRoute?(): { cidr: string; gateway: string } | undefined;
  /** MTU for pod interfaces when the config sets none: underlay MTU - 50. */
  overlayMtu: number;
  /** Reachability of etcd, for STATUS. */
  etcdHealthy(): Promise<boolean>;
  /** Asks the reconcile loop for a pass soon (after ADD/DEL); never waits for it. */
  markDirty(): void;
  /** Directory of the plugin's DEL journal, replayed when the agent starts. */
  journalDir: string;
  /** The fast path's per-pod hooks, when it runs (agent --fast-path). */
  fastPath?: PodFastPath;
  /**
   * This pool's leases as the agent's watch shows them, and the etcd revision
   * it reached (0n while it has not listed). Without it, every DEL asks the
   * controller (agent/cni/local-del.ts).
   */
  watchedLeases?(): { leases: LeaseView[]; revision: bigint } | undefined;
  /** The source check's per-pod hooks, when isolation is on (docs/dataplane.md "Isolation"). */
  podFirewall?: PodFirewall;
  log: Logger;
}

/** What CNI verbs tell the fast path at once, rather than at the next reconcile pass. */
export interface PodFastPath {
  /** ADD: ip now lives behind this host veth. */
  learnLocal(ip: string, veth: string, index: number): void;
  /** DEL/GC: stop redirecting anything into this host veth. */
  forgetVeth(veth: string): void;
}

/** What CNI verbs tell the source check at once, rather than when the watch shows the lease. */
export interface PodFirewall {
  /** ADD: the pod behind veth may send as ip; resolves once the kernel lets it (bounded, never throws). */
  admit(veth: string, ip: string): Promise<void>;
  /** DEL, or a failed ADD: forget what admit() let through. */
  forget(veth: string): void;
}

export type CniHandler = (req: AgentRequest) => Promise<AgentResponse>;

export interface CniServer {
  socketPath: string;
  close(): Promise<void>;
}
