/**
 * The records Berth keeps in etcd and passes over its APIs. The controller
 * writes pools and leases, agents write hosts; everybody reads all three.
 * Values are JSON; the etcd mod revision of a lease travels beside it as its
 * fencing token (`revision`), never inside the stored value.
 */

export interface Pool {
  name: string;
  /** IPv4 or IPv6 network in CIDR form, e.g. 198.18.0.0/16. */
  cidr: string;
  /** The gateway every container uses; reserved, never leased. */
  gateway: string;
  /** Further addresses never leased (network and broadcast are implied). */
  reserved: string[];
  /** How long a released lease stays reserved for its identity. */
  holdSeconds: number;
  /** Which identities the hold applies to (controller/lease-rules.ts holdSecondsFor); absent = 'all'. */
  holdPolicy?: HoldPolicy;
  createdAt: string;
}

/**
 * Where an identity came from (agent/identity.ts): an operator's BERTH_IDENTITY,
 * a Kubernetes pod, a name the runtime gave on one host (podman), or the
 * container id. Decides whether a release holds the address.
 */
export type IdentitySource = 'explicit' | 'k8s' | 'host' | 'container';

/**
 * 'all': every identity but a container id's is held for holdSeconds.
 * 'explicit-only': only BERTH_IDENTITY identities are held; the rest are freed on release.
 */
export type HoldPolicy = 'all' | 'explicit-only';

export type LeaseState = 'bound' | 'held';

export interface Binding {
  host: string;
  containerId: string;
  ifName: string;
  /**
   * The CNI network name (the conflist's `name`) the attachment was made
   * through: with containerId and ifName it keys the attachment (CNI SPEC),
   * and GC only considers its own network's. Absent on bindings written
   * before it was recorded (or by an agent that does not send it).
   */
  network?: string;
  boundAt: string;
}

export interface Lease {
  pool: string;
  ip: string;
  identity: string;
  state: LeaseState;
  /** Pinned leases never expire; only an operator frees them. */
  pinned: boolean;
  /** Present while bound. */
  binding?: Binding;
  /** Present while held and not pinned: when the hold lapses. */
  heldUntil?: string;
  /** The binding before the current one, kept for `leases show`. */
  lastBinding?: Binding;
  /** Source of the identity, set when the lease is created; absent on older leases (see sourceOf). */
  source?: IdentitySource;
  createdAt: string;
  updatedAt: string;
}

/** A lease as read from etcd: the record plus its fencing token. */
export interface LeaseView extends Lease {
  /** etcd mod revision of the lease key: higher means newer binding. */
  revision: string;
}

/**
 * A host's persistent record (/berth/v1/hosts/<host>). The agent writes the
 * first six fields; the controller's host reaper adds `absent` and `dead`
 * while the agent is away, and the agent's next write drops them again.
 */
export interface Host {
  name: string;
  underlayIp: string;
  vtepMac: string;
  vni: number;
  /** The pool the agent serves. */
  pool: string;
  registeredAt: string;
  /** Set by the host reaper while the liveness key is absent: when it saw that, and when it declares the host dead. */
  absent?: { since: string; deadAt: string };
  /** Set when the host is declared dead: its bound leases are being turned held, then the record goes. */
  dead?: { at: string; by: 'reaper' | 'operator'; reason: string };
}

/** The liveness key's value (/berth/v1/alive/<host>, on the agent's etcd lease). */
export interface HostAlive {
  host: string;
  since: string;
  /** When the agent's last reconcile pass finished; refreshed rarely (agent/registration.ts notePass). */
  lastPassAt?: string;
}

export type LeaseEventKind = 'allocated' | 'bound' | 'rebound' | 'moved' | 'released' | 'pinned' | 'unpinned' | 'expired' | 'freed' | 'orphaned';

export interface LeaseEvent {
  at: string;
  kind: LeaseEventKind;
  pool: string;
  ip: string;
  identity: string;
  host?: string;
  containerId?: string;
  oldState: LeaseState | 'free';
  newState: LeaseState | 'free';
  /** Who asked: a host agent, an operator, the expirer, or the host reaper. */
  actor?: string;
  /** Why, when the actor isn't the binding's own agent (e.g. an 'orphaned' lease: its host was declared dead). */
  reason?: string;
}

export interface PoolUsage extends Pool {
  size: number;
  bound: number;
  held: number;
  pinned: number;
  free: number;
}

export const DEFAULT_HOLD_SECONDS = 3600;
export const DEFAULT_VNI = 4242;
export const VXLAN_PORT = 4789;
/** Outer IPv4 + UDP + VXLAN + inner Ethernet headers (RFC 7348). */
export const VXLAN_OVERHEAD = 50;
