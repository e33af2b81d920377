/**
 * The controller's HTTP API vocabulary: routes, request and response bodies.
 * The server (controller/api), the agent and berthctl all import these.
 *
 *   GET    /healthz                                  {ok, etcd}
 *   POST   /v1/pools                     CreatePool  -> PoolUsage (201)
 *   GET    /v1/pools                                 -> {pools: PoolUsage[]}
 *   GET    /v1/pools/:pool                           -> PoolUsage
 *   PATCH  /v1/pools/:pool               UpdatePool  -> PoolUsage      (hold, hold policy; live)
 *   DELETE /v1/pools/:pool[?force=1]                 -> DeletePoolResponse (refused while a lease is bound or pinned)
 *   POST   /v1/pools/:pool/bind          BindRequest -> BindResponse   (allocate or rebind)
 *   POST   /v1/pools/:pool/release       ReleaseRequest -> ReleaseResponse (fenced by containerId)
 *   POST   /v1/pools/:pool/pin           PinRequest  -> LeaseView
 *   DELETE /v1/pools/:pool/leases/:ip[?force=1]      -> {freed: LeaseView}  (operator release)
 *   GET    /v1/leases?pool=&host=&state=&identity=&limit=&continue=  -> {leases: LeaseView[], continue?}
 *   GET    /v1/leases/:ip[?pool=]                    -> LeaseView
 *   GET    /v1/history?ip=&identity=&at=&since=&until=&limit=&continue=  -> {events: LeaseEvent[], continue?}
 *   GET    /v1/hosts                                 -> {hosts: HostView[]}  (records with liveness)
 *   DELETE /v1/hosts/:host[?force=1]                 -> ForgetResponse  (declare dead now; refused while alive)
 *   GET    /v1/status                                -> ClusterStatus  (berthctl status: hosts, pools, leases needing attention)
 *
 * Paging: a list answers at most `limit` items (leases: default 1000, max
 * 10000; history: the newest `limit`, default 1000) and, when there is more,
 * an opaque `continue` token; pass it back unchanged (with the same filters)
 * for the next page. Lease pages are read at the revision of the first one.
 *
 * Errors: {error: ErrorBody} with the status from common/errors.ts.
 *
 * Reading your own writes: a GET carrying `berth-min-revision: <rev>` (the
 * newest `revision` a write answered with) is answered once the replica's
 * watch-fed view has reached that etcd revision, or after
 * MIN_REVISION_WAIT_MS, whichever comes first. Any replica, the same or
 * another, then shows the write. Every answer carries `berth-revision`,
 * the revision the replica's view had reached. After a write it counts as
 * one of the write's revisions: pool, host-forget and free answers come
 * once the view shows the write (waiting at most 2 s for it), so the
 * header covers them. After a read, a
 * client whose remembered revision is ahead of it after the wait (etcd
 * restored from a snapshot goes back in revisions) lowers it, so it waits
 * once, not on every read.
 */
import type { HoldPolicy, Host, IdentitySource, LeaseEvent, LeaseState, LeaseView, Pool, PoolUsage } from './records';

/** Request header of a read that must see writes up to this etcd revision. */
export const MIN_REVISION_HEADER = 'berth-min-revision';
/** The longest a read waits for its replica's view to reach that revision. */
export const MIN_REVISION_WAIT_MS = 2000;
/** Response header: the revision the answering replica's view had reached. */
export const REVISION_HEADER = 'berth-revision';

export interface CreatePool {
  name: string;
  cidr: string;
  gateway?: string;
  reserved?: string[];
  holdSeconds?: number;
  holdPolicy?: HoldPolicy;
}

/** The settings a live pool can change; absent fields stay as they are. */
export interface UpdatePool {
  holdSeconds?: number;
  holdPolicy?: HoldPolicy;
}

export interface DeletePoolResponse {
  deleted: Pool;
  /** Leases (bound, held or pinned) removed with the pool; non-zero only with force or held leases. */
  removedLeases: number;
}

export interface BindRequest {
  identity: string;
  host: string;
  containerId: string;
  ifName: string;
  /** The CNI network name of the attachment; recorded in the binding. */
  network?: string;
  /** Ask for a specific address (CNI `ips` capability); must be free or already this identity's. */
  ip?: string;
  /** Where the identity came from; stored on a new lease, decides the hold (absent: inferred, see sourceOf). */
  source?: IdentitySource;
}

export interface BindResponse {
  lease: LeaseView;
  /** True when this call created the lease rather than finding it. */
  allocated: boolean;
  gateway: string;
  prefix: number;
}

export interface ReleaseRequest {
  /** One of identity or ip names the lease. */
  identity?: string;
  ip?: string;
  /** Fencing: only the container that holds the binding can release it. */
  containerId: string;
  /**
   * Fencing by interface too, when given: a binding of the same container on
   * another interface is left alone (outcome 'stale'). A DEL of one interface
   * never releases the address another interface holds.
   */
  ifName?: string;
  /**
   * The ADD that bound it failed: free the address now instead of holding it,
   * if the lease was created by this binding (never released before, not pinned).
   * Otherwise it is an ordinary release.
   */
  discard?: boolean;
}

export interface ReleaseResponse {
  /** 'released' when this call released it; otherwise why nothing changed. */
  outcome: 'released' | 'already-held' | 'stale' | 'not-found';
  lease?: LeaseView;
  /** True when the release freed the address at once (no hold): its lease and identity keys are gone. */
  freed?: boolean;
}

export interface PinRequest {
  identity: string;
  ip?: string;
}

export interface LeaseFilter {
  pool?: string;
  host?: string;
  state?: LeaseState | 'pinned';
  identity?: string;
  /** Page size. */
  limit?: number;
  /** Token from the previous page's reply. */
  continue?: string;
}

export interface LeasePage {
  leases: LeaseView[];
  /** Present when more leases may follow: pass it as `continue`. */
  continue?: string;
}

export interface HistoryQuery {
  ip?: string;
  identity?: string;
  /** Return the event in force at this instant (the last one at or before it). */
  at?: string;
  since?: string;
  until?: string;
  limit?: number;
  /** Token from the previous page's reply: the next older events. */
  continue?: string;
}

export interface HistoryPage {
  /** Oldest first. */
  events: LeaseEvent[];
  /** Present when older events remain: pass it as `continue`. */
  continue?: string;
}

export interface HostView extends Host {
  leases: number;
  /** The host's alive key exists: its agent is running and reaches etcd. */
  alive: boolean;
}

export interface ForgetResponse {
  host: string;
  /** Bound leases turned held (pinned ones included). */
  orphaned: number;
  /** Of those, pinned: held-pinned, never expire. */
  pinned: number;
  /** Bound leases freed instead (their hold is 0: container identities, explicit-only pools). */
  freed?: number;
  /** True when the host's agent came back midway: the rest of its leases stay bound. */
  interrupted: boolean;
}

/** One host in `GET /v1/status`. */
export interface HostStatus {
  name: string;
  pool: string;
  underlayIp: string;
  /** The agent holds its alive key. */
  alive: boolean;
  /** alive; absent (alive key gone, not yet declared dead); dead (being declared dead). */
  liveness: 'alive' | 'absent' | 'dead';
  /** Set by the host reaper while absent: when the host will be declared dead. */
  deadAt?: string;
  /** The agent's last reconcile pass as it last published it (refreshed at most every --status-every seconds). */
  lastPassAt?: string;
  /** Controller clock minus lastPassAt, whole seconds. */
  lastPassAgeSeconds?: number;
  /** Leases bound on this host. */
  leases: number;
}

/** Why a lease is listed under "needs attention" in `GET /v1/status`. */
export type LeaseAttention = 'host-absent' | 'host-dead' | 'host-unknown' | 'host-serves-other-pool' | 'hold-lapsed';

export interface LeaseNeedingAttention {
  pool: string;
  ip: string;
  identity: string;
  state: LeaseState;
  pinned?: boolean;
  /** The host it is bound on (bound leases). */
  host?: string;
  reason: LeaseAttention;
}

export interface ClusterStatus {
  at: string;
  hosts: HostStatus[];
  pools: PoolUsage[];
  /** At most STATUS_ATTENTION_MAX entries, worst first; attentionTotal counts them all. */
  attention: LeaseNeedingAttention[];
  attentionTotal: number;
}

export interface Health {
  ok: boolean;
  etcd: boolean;
  version: string;
}

export type { HoldPolicy, IdentitySource, LeaseEvent, LeaseView, Pool, PoolUsage };
