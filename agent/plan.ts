/**
 * Pure planning: given the kernel state Berth wants and the state it found,
 * list the smallest set of changes that turns one into the other.
 *
 * The shape covers only what Berth owns (see docs/dataplane.md): routes with
 * rtm_protocol BERTH_RT_PROTO in the main table, and permanent neighbour and
 * FDB entries on the VXLAN device. Foreign routes never reach the planner,
 * so it can never delete them. planChanges(x, x) is always [].
 */

export interface RouteSpec {
  /** Destination in CIDR form, e.g. "198.18.3.7/32". One route per dst. */
  dst: string;
  dev: string;
  /** Next hop; absent for a device (scope link) route. */
  via?: string;
  /** RTNH_F_ONLINK: the next hop needs no covering route on dev. */
  onlink?: boolean;
  /** Preferred source for traffic the host itself sends along this route. */
  src?: string;
}

/** A permanent ARP entry: next hop ip on dev resolves to mac. */
export interface NeighSpec {
  dev: string;
  ip: string;
  mac: string;
}

/** A permanent VXLAN FDB entry: frames for mac go to underlay address dst. */
export interface FdbSpec {
  dev: string;
  mac: string;
  dst: string;
}

export interface KernelState {
  routes: RouteSpec[];
  neighs: NeighSpec[];
  fdbs: FdbSpec[];
}

export type Op =
  | { op: 'replace'; kind: 'route'; route: RouteSpec }
  | { op: 'delete'; kind: 'route'; route: RouteSpec }
  | { op: 'replace'; kind: 'neigh'; neigh: NeighSpec }
  | { op: 'delete'; kind: 'neigh'; neigh: NeighSpec }
  | { op: 'replace'; kind: 'fdb'; fdb: FdbSpec }
  | { op: 'delete'; kind: 'fdb'; fdb: FdbSpec };

export const emptyState = (): KernelState => ({ routes: [], neighs: [], fdbs: [] });

// Identity keys: what the kernel treats as "the same object" under REPLACE.
export const routeKey = (r: RouteSpec) => r.dst;
export const neighKey = (n: NeighSpec) => `${n.dev} ${n.ip}`;
export const fdbKey = (f: FdbSpec) => `${f.dev} ${f.mac}`;

export function sameRoute(a: RouteSpec, b: RouteSpec): boolean {
  return a.dst === b.dst && a.dev === b.dev && a.via === b.via && !!a.onlink === !!b.onlink && a.src === b.src;
}
const sameNeigh = (a: NeighSpec, b: NeighSpec) => neighKey(a) === neighKey(b) && a.mac === b.mac;
const sameFdb = (a: FdbSpec, b: FdbSpec) => fdbKey(a) === fdbKey(b) && a.dst === b.dst;

function diff<T>(want: T[], have: T[], key: (x: T) => string, same: (a: T, b: T) => boolean) {
  const haveBy = new Map<string, T[]>();
  for (const h of have) haveBy.set(key(h), [...(haveBy.get(key(h)) ?? []), h]);
  const wantBy = new Map(want.map((w) => [key(w), w]));
  const replace: T[] = [];
  const remove: T[] = [];
  for (const [k, w] of wantBy) {
    const hs = haveBy.get(k) ?? [];
    // Keep one matching copy; every other copy under the same key is stale.
    // With no match and one copy, REPLACE overwrites it in place; with
    // several, which one REPLACE hits is up to the kernel, so drop them all.
    const match = hs.find((h) => same(h, w));
    if (!match) replace.push(w);
    if (match || hs.length > 1) for (const h of hs) if (h !== match) remove.push(h);
  }
  for (const [k, hs] of haveBy) if (!wantBy.has(k)) remove.push(...hs);
  return { replace, remove };
}

/**
 * Ordering: deletes first, so a stale route can't shadow a new one; then
 * FDB and neighbour entries before the routes that rely on them, so a new
 * remote route never points at an unresolvable next hop.
 */
export function planChanges(desired: KernelState, actual: KernelState): Op[] {
  const r = diff(desired.routes, actual.routes, routeKey, sameRoute);
  const n = diff(desired.neighs, actual.neighs, neighKey, sameNeigh);
  const f = diff(desired.fdbs, actual.fdbs, fdbKey, sameFdb);
  const byKey = <T>(key: (x: T) => string) => (a: T, b: T) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
  return [
    ...r.remove.sort(byKey(routeKey)).map((route): Op => ({ op: 'delete', kind: 'route', route })),
    ...n.remove.sort(byKey(neighKey)).map((neigh): Op => ({ op: 'delete', kind: 'neigh', neigh })),
    ...f.remove.sort(byKey(fdbKey)).map((fdb): Op => ({ op: 'delete', kind: 'fdb', fdb })),
    ...f.replace.sort(byKey(fdbKey)).map((fdb): Op => ({ op: 'replace', kind: 'fdb', fdb })),
    ...n.replace.sort(byKey(neighKey)).map((neigh): Op => ({ op: 'replace', kind: 'neigh', neigh })),
    ...r.replace.sort(byKey(routeKey)).map((route): Op => ({ op: 'replace', kind: 'route', route })),
  ];
}

/** The pure model of apply(): what the kernel holds after ops run. Used by tests. */
export function simulate(actual: KernelState, ops: Op[]): KernelState {
  const routes = new Map<string, RouteSpec[]>();
  for (const x of actual.routes) routes.set(routeKey(x), [...(routes.get(routeKey(x)) ?? []), x]);
  const neighs = new Map(actual.neighs.map((x) => [neighKey(x), x]));
  const fdbs = new Map(actual.fdbs.map((x) => [fdbKey(x), x]));
  for (const o of ops) {
    if (o.kind === 'route') {
      const k = routeKey(o.route);
      const copies = routes.get(k) ?? [];
      const i = copies.findIndex((x) => sameRoute(x, o.route));
      if (o.op === 'delete') routes.set(k, i < 0 ? copies : copies.filter((_, j) => j !== i)); // one copy per delete
      else routes.set(k, [o.route, ...copies.slice(1)]); // REPLACE overwrites one copy
    } else if (o.kind === 'neigh') {
      if (o.op === 'delete') neighs.delete(neighKey(o.neigh));
      else neighs.set(neighKey(o.neigh), o.neigh);
    } else {
      if (o.op === 'delete') fdbs.delete(fdbKey(o.fdb));
      else fdbs.set(fdbKey(o.fdb), o.fdb);
    }
  }
  return { routes: [...routes.values()].flat(), neighs: [...neighs.values()], fdbs: [...fdbs.values()] };
}
