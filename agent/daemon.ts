/**
 * One host's agent: wires registration, devices, the etcd source, the
 * reconcile loop and the CNI socket. It runs inside the host's network
 * namespace and programs only that namespace; etcd and the controller may
 * be reached over unix sockets, which no namespace boundary hides.
 *
 * Start order, and why:
 *   1. underlay address and MTU (netlink, own netns)
 *   2. list + watch etcd; wait for the pool record (gateway, cidr)
 *   3. devices and sysctls: berth0 must exist before any CNI ADD
 *   4. register: alive key on an etcd lease (keepalive), host record if needed
 *   5. first reconcile pass, awaited: a restart with nothing to do logs ops 0;
 *      it also withdraws local pods whose lease moved away meanwhile
 *      (agent/withdraw.ts), so they stop answering before CNI is served
 *   6. CNI socket, then one replay of the DEL journal
 * With cniConf (--cni-conf-dir), the conflist is in the runtime's conf dir
 * exactly while readiness() holds (agent/conflist-publish.ts): published
 * after 6, withdrawn first thing in stop() and whenever a check fails.
 * stop() undoes 6..2 but never revokes the host lease (see registration.ts)
 * and never removes devices or routes: pods keep their network while the
 * agent restarts.
 */
import type { Etcd3 } from 'etcd3';
import { ControllerClient, type ClientTlsFiles } from '../common/controller-client';
import { BerthError, castError } from '../common/errors';
import { openEtcd, type EtcdConnection } from '../common/etcd';
import { keys } from '../common/keys';
import { journalDepth } from '../common/del-journal';
import type { Logger } from '../common/log';
import { startMetricsServer, type MetricsServer } from '../common/metrics-http';
import type { Host, LeaseView, Pool } from '../common/records';
import { DEFAULT_VNI } from '../common/records';
import type { CniServer } from './cni-api';
import { createCniHandler } from './cni-handlers';
import { ConflistPublisher } from './conflist-publish';
import { startCniServer } from './cni-server';
import { desiredState, localEndpoints, overlayMtu, vtepMacFor, type Desired, type LocalEndpoint } from './desired';
import { fastPathWant, type LinkView } from './fastpath';
import { firewallWant, withAdmitted, type FirewallWant } from './firewall';
import { FirewallLoop, type FirewallPass } from './firewall-loop';
import { FastPath } from './kernel/fastpath';
import { FirewallSync } from './kernel/firewall';
import { NftSetSocket } from './kernel/nft-setelem';
import { Activity } from './activity';
import { startJournalReplay, type JournalReplayer } from './journal-replay';
import { drainReaping, getLink, listAddresses, listLinks, openNetlink, warmThreadPool, type Netlink } from './kernel';
import { AgentMetrics } from './metrics';
import { Reconciler, ensureDevices, ensureSysctls, type PassResult } from './reconciler';
import { Registration } from './registration';
import { Withdrawer } from './withdraw';
import { EtcdSource } from './source';

export interface AgentOptions {
  etcd: EtcdConnection;
  /** http(s)://host:port or unix:///path/controller.sock; several (replicas): calls fail over between them. */
  controllerUrl: string | string[];
  /** --ca, --cert, --key for an https:// controller (common/controller-client.ts). */
  controllerTls?: ClientTlsFiles;
  token?: string;
  host: string;
  /** Own underlay address; found on underlayDev when absent. */
  underlayIp?: string;
  /** Underlay interface (its MTU sets the overlay MTU); found by underlayIp when absent. */
  underlayDev?: string;
  pool: string;
  socketPath: string;
  journalDir: string;
  vni?: number;
  resyncMs?: number;
  hostTtlSeconds?: number;
  /** Give up (StoreUnavailable) when etcd can't be listed within this time at start; default: retry for ever. */
  etcdWaitMs?: number;
  /** Pod-to-pod fast path (BPF, tcx): bypasses host netfilter for that traffic; docs/dataplane.md. */
  fastPath?: boolean;
  /** Destinations pods reach with their own source (no SNAT); docs/dataplane.md "Egress". */
  noMasquerade?: string[];
  /** Pod source check and VXLAN input filter; on unless false (docs/dataplane.md "Isolation"). */
  isolation?: boolean;
  /** host:port or unix:///path for /metrics, /healthz and /readyz (agent/metrics.ts); none when absent. */
  metricsListen?: string;
  /** How often at most the alive key is rewritten with the last pass time (registration.ts notePass). */
  passPublishMs?: number;
  /** Publish the conflist into this conf dir while ready (agent/conflist-publish.ts); off when absent. */
  cniConf?: CniConfOptions;
  log: Logger;
}

export interface CniConfOptions {
  confDir: string;
  /** Where chained portmap/bandwidth are looked for. */
  binDir: string;
  network: string;
  cniVersion: string;
  /** Readiness re-evaluated this often (default 1000 ms). */
  everyMs?: number;
  /** Before the first ready, a conflist found in place is left alone this long (default 30 s). */
  startGraceMs?: number;
}

export interface Underlay {
  ip: string;
  dev: string;
  mtu: number;
}

/** Finds the underlay address, device and MTU from whichever of the two was given. */
export async function findUnderlay(sock: Netlink, o: { ip?: string; dev?: string }): Promise<Underlay> {
  if (!o.ip && !o.dev) throw new BerthError('InvalidConfig', 'need --underlay-ip or --underlay-dev', 'no underlay given');
  const links = await listLinks(sock);
  const addrs = await listAddresses(sock);
  if (o.dev) {
    const l = await getLink(sock, o.dev);
    if (!l) throw new BerthError('InvalidConfig', o.dev, 'underlay device not found');
    const ip = o.ip ?? addrs.find((a) => a.index === l.index)?.cidr.split('/')[0];
    if (!ip) throw new BerthError('InvalidConfig', o.dev, 'underlay device has no IPv4 address');
    return { ip, dev: l.name, mtu: l.mtu ?? 1500 };
  }
  const a = addrs.find((x) => x.cidr.split('/')[0] === o.ip);
  const l = a && links.find((x) => x.index === a.index);
  if (!l) throw new BerthError('InvalidConfig', o.ip, 'no local interface holds the underlay address');
  return { ip: o.ip!, dev: l.name, mtu: l.mtu ?? 1500 };
}

export class Agent {
  readonly log: Logger;
  etcd: Etcd3 | undefined;
  netlink: Netlink | undefined;
  /**
   * CNI requests get their own socket: netlink 0.3.0 ends a multipart dump
   * early when another request's reply interleaves, so the reconciler's
   * observe() must never share a socket with concurrent CNI work.
   */
  private cniNetlink: Netlink | undefined;
  private journal: JournalReplayer | undefined;
  source: EtcdSource | undefined;
  reconciler: Reconciler | undefined;
  registration: Registration | undefined;
  controller: ControllerClient | undefined;
  cni: CniServer | undefined;
  underlay: Underlay | undefined;
  self: Omit<Host, 'registeredAt'> | undefined;
  /** The first reconcile pass after start (ops 0 when a restart found everything right). */
  firstPass: PassResult | undefined;
  private stopping = false;
  private fastPath?: FastPath;
  private firewall?: FirewallLoop;
  private nftSet?: NftSetSocket;
  private readonly cniActivity = new Activity();
  /**
   * Pods an ADD let through the source check before the watch shows their
   * lease bound here (host veth -> leased address). Without them, a new
   * pod's first packets would be dropped until the lease came round the
   * watch; with them, ADD answers only once the pod may send.
   */
  private readonly admitted = new Map<string, string>();
  /** The first firewall sync after start (ops 0 when a restart found the tables right). */
  firstFirewall: FirewallPass | undefined;
  metrics: AgentMetrics | undefined;
  private metricsServer: MetricsServer | undefined;
  private publisher: ConflistPublisher | undefined;

  constructor(readonly o: AgentOptions) {
    this.log = o.log.child({ host: o.host });
  }

  async start(): Promise<void> {
    const o = this.o;
    if (o.cniConf) {
      const c = o.cniConf;
      this.publisher = new ConflistPublisher({
        confDir: c.confDir, binDir: c.binDir, everyMs: c.everyMs, startGraceMs: c.startGraceMs,
        inputs: { cniVersion: c.cniVersion, network: c.network, pool: o.pool, agentSocket: o.socketPath, journalDir: o.journalDir },
        readiness: () => this.readiness(), serving: () => this.readiness().cniSocket, log: this.log.child({ component: 'cni-conf' }),
      });
      this.publisher.text(); // a bad --cni-version fails the start here, not at the first publication
      this.publisher.start();
    }
    // First, so /readyz says 503 (and why) through every start step below.
    if (o.metricsListen !== undefined) await this.startMetrics(o.metricsListen);
    await warmThreadPool();
    this.netlink = openNetlink();
    this.underlay = await findUnderlay(this.netlink, { ip: o.underlayIp, dev: o.underlayDev });
    this.self = { name: o.host, underlayIp: this.underlay.ip, vtepMac: vtepMacFor(o.host), vni: o.vni ?? DEFAULT_VNI, pool: o.pool };

    this.etcd = openEtcd(o.etcd);
    if (o.fastPath) {
      try {
        this.fastPath = FastPath.open(undefined, { sourceCheck: o.isolation !== false });
        this.log.info('fast path on: pod-to-pod traffic skips host forwarding and netfilter');
      } catch (e) {
        this.log.warn('fast path unavailable; routing through the host stack', { error: castError(e).details });
      }
    }
    const fast = this.fastPath;
    const withdrawer = new Withdrawer();
    this.nftSet = new NftSetSocket();
    const sync = new FirewallSync(undefined, this.nftSet.apply);
    let kicked = false;
    this.firewall = new FirewallLoop((w, v) => sync.sync(w, v), this.log.child({ component: 'firewall' }));
    this.reconciler = new Reconciler({
      netlink: this.netlink, desired: () => this.desired(), log: this.log, resyncMs: o.resyncMs ?? 10_000, firewall: (w, v) => { kicked = true; this.firewall?.kick(w, v); },
      yieldTo: () => this.cniActivity.settle(PASS_YIELD_MS),
      // Withdraw before the fast path syncs, so it drops a withdrawn pod in the same pass.
      afterApply: async (d: Desired, nl: Netlink) => {
        const w = await withdrawer.run(d, nl);
        if (w.retired.length) this.log.info('withdrew local pods whose lease is not bound here', { veths: w.retired });
        if (!fast) return w;
        const f = await fast.sync(fastPathWant(d, await linkViews(nl)));
        return { ops: w.ops + f.ops, failed: [...w.failed, ...f.failed] };
      },
      onPass: (r) => {
        this.metrics?.pass(r);
        if (r.failed === 0) this.registration?.notePass(new Date());
      },
    });
    const ownRecord = keys.host(o.host);
    this.source = new EtcdSource(this.etcd, o.pool, this.log, {
      onChange: (why) => {
        // Our record deleted (host forgotten) or annotated by the reaper: write it back.
        if (why === `delete ${ownRecord}` || why === `put ${ownRecord}`) void this.registration?.ensureRecord();
        this.reconciler?.markDirty(why);
      },
    });
    await this.source.start(o.etcdWaitMs !== undefined ? { waitMs: o.etcdWaitMs } : {});
    if (!this.source.snapshot().pool) this.log.warn('waiting for pool', { pool: o.pool });
    const pool = await this.source.poolReady();

    const devices = this.desiredFor(pool, []).devices!;
    await ensureDevices(this.netlink, devices);
    for (const w of ensureSysctls(devices)) this.log.warn(w);

    this.registration = new Registration(this.etcd, this.self, this.log, { ttlSeconds: o.hostTtlSeconds, passPublishMs: o.passPublishMs });
    await this.registration.start();

    const first = this.reconciler.waitForPass();
    const firstFirewall = this.firewall.next();
    this.reconciler.start();
    this.firstPass = await first;
    // A first pass that threw before it got to the tables leaves them to the retry pass.
    if (kicked) this.firstFirewall = await firstFirewall;

    this.controller = new ControllerClient({
      url: o.controllerUrl, token: o.token, tls: o.controllerTls,
      onFailover: (f) => this.log.warn('controller failover', f),
    });
    const etcd = this.etcd;
    const handler = createCniHandler({
      host: o.host,
      pool: o.pool,
      controller: this.controller,
      hostNetlink: (this.cniNetlink = openNetlink()),
      openHostNetlink: () => openNetlink(),
      overlayMtu: overlayMtu(this.underlay.mtu),
      poolRoute: () => {
        const p = this.source?.snapshot().pool;
        return p ? { cidr: p.cidr, gateway: p.gateway } : undefined;
      },
      etcdHealthy: async () => {
        try {
          await etcd.maintenance.status();
          return true;
        } catch {
          return false;
        }
      },
      markDirty: () => this.reconciler?.markDirty('cni'),
      watchedLeases: () => {
        const s = this.source?.snapshot();
        return s && { leases: s.leases, revision: s.revision };
      },
      journalDir: o.journalDir,
      ...(this.fastPath ? { fastPath: this.fastPath } : {}),
      ...(o.isolation !== false ? { podFirewall: { admit: (veth: string, ip: string) => this.admit(veth, ip), forget: (veth: string) => { this.admitted.delete(veth); } } } : {}),
      log: this.log.child({ component: 'cni' }),
    });
    const timed = this.metrics ? this.metrics.timeCni(handler) : handler;
    const counted: typeof handler = (req) => this.cniActivity.during(() => timed(req));
    this.cni = await startCniServer(o.socketPath, counted, this.log.child({ component: 'cni' }));
    this.log.info('agent ready', {
      socket: o.socketPath, underlayIp: this.underlay.ip, underlayDev: this.underlay.dev, overlayMtu: overlayMtu(this.underlay.mtu),
      firstPassOps: this.firstPass.ops, firstPassFirewallOps: this.firstFirewall?.ops,
    });
    this.publisher?.sync(); // now, not at the next tick
    // Replays now, on every new entry (a DEL journalled while the socket was
    // opening must not wait a period), and every resync period for entries
    // that failed (controller down).
    this.journal = startJournalReplay(o.journalDir, handler, this.log.child({ component: 'journal' }), {
      periodMs: o.resyncMs ?? 10_000, onEntry: (r) => this.metrics?.replayed(r),
    });
    await this.journal.first;
  }

  /** Ready: registered, first pass done, CNI socket serving (each a /readyz check). */
  readiness(): Record<string, boolean> {
    return { registered: this.registration?.registered === true, firstPass: this.firstPass !== undefined, cniSocket: this.cni !== undefined && !this.stopping };
  }

  private async startMetrics(listen: string): Promise<void> {
    const m = (this.metrics = new AgentMetrics());
    m.observe(this.o.host, {
      leases: () => this.source?.snapshot().leases,
      journalDepth: () => journalDepth(this.o.journalDir),
      fastPathSizes: () => this.fastPath?.sizes,
      registered: () => this.registration?.registered === true,
      registrations: () => this.registration?.registrations ?? 0,
    });
    this.metricsServer = await startMetricsServer(listen, m.registry, () => this.readiness(), this.log.child({ component: 'metrics' }));
  }

  /** What the kernel should hold now; undefined until the pool is known. */
  desired(): Desired | undefined {
    const snap = this.source?.snapshot();
    if (!snap?.pool) return undefined;
    return this.desiredFor(snap.pool, snap.hosts, snap.leases, snap.pools);
  }

  private desiredFor(pool: Pool, hosts: Host[], leases: LeaseView[] = [], pools: Pool[] = [pool]): Desired {
    // Our own record comes from us, not from the watch: devices and remote
    // routes are right even before (or while the lease is lost between) registrations.
    const me: Host = { ...this.self!, registeredAt: '' };
    const others = hosts.filter((h) => h.name !== me.name);
    const d = desiredState({
      self: me.name,
      hosts: [me, ...others],
      leases,
      pool: { name: pool.name, cidr: pool.cidr, gateway: pool.gateway },
      underlayMtu: this.underlay!.mtu,
    });
    d.firewall = this.firewallFor(pool, pools, others, d.locals ?? []);
    return d;
  }

  private firewallFor(pool: Pool, pools: Pool[], others: Host[], locals: LocalEndpoint[]): FirewallWant {
    return firewallWant({
      underlayIp: this.self!.underlayIp, pools: [pool, ...pools].map((p) => p.cidr), hosts: others.map((h) => h.underlayIp),
      noMasquerade: this.o.noMasquerade ?? [], locals: withAdmitted(locals, this.admitted), isolation: this.o.isolation !== false,
    });
  }

  /** The firewall part of desired() alone: what every ADD's admission needs, without routes and neighbours. */
  private firewallNow(): FirewallWant | undefined {
    const snap = this.source?.snapshot();
    if (!snap?.pool || !this.self) return undefined;
    const me = this.self.name;
    const locals = localEndpoints({ self: me, leases: snap.leases, pool: snap.pool });
    return this.firewallFor(snap.pool, snap.pools, snap.hosts.filter((h) => h.name !== me), locals);
  }

  /** ADD: the pod behind veth may send as ip once this resolves (bounded: a wedged nft must not wedge ADD). */
  private async admit(veth: string, ip: string): Promise<void> {
    this.admitted.set(veth, ip);
    const want = this.firewallNow();
    if (!want || !this.firewall) return;
    let timer: NodeJS.Timeout | undefined;
    const pass = await Promise.race([
      this.firewall.apply(want),
      new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), ADMIT_WAIT_MS); }),
    ]);
    clearTimeout(timer);
    if (!pass || pass.error) this.log.warn('pod admitted before the firewall took it; its first packets may be dropped', { veth, ip, error: pass?.error ?? `no sync within ${ADMIT_WAIT_MS} ms` });
  }

  /**
   * Stops serving and watching. Kernel state stays as it is, the host record
   * stays, and the alive key stays until its TTL ends unless `revoke` is set.
   */
  async stop(o: { revoke?: boolean } = {}): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // First: the runtime stops sending pods here before the socket closes.
    this.publisher?.stop();
    this.journal?.close();
    await this.cni?.close().catch(() => undefined);
    await drainReaping(); // veths DEL retired: finish deleting them
    await this.reconciler?.stop();
    await this.firewall?.stop();
    this.nftSet?.close();
    await this.source?.close();
    await this.registration?.stop({ revoke: o.revoke });
    this.controller?.close();
    this.etcd?.close();
    this.fastPath?.close();
    this.netlink?.socket.close();
    this.cniNetlink?.socket.close();
    await this.metricsServer?.close();
    this.log.info('agent stopped', { revoked: !!o.revoke });
  }
}

const ADMIT_WAIT_MS = 2000;
/**
 * The longest an event pass waits for CNI requests in progress to finish
 * (Reconciler yieldTo): under a steady stream of ADDs, routes for other
 * hosts' pods still converge within this much more.
 */
const PASS_YIELD_MS = 100;

/** The host's links as the fast path sees them. */
async function linkViews(nl: Netlink): Promise<LinkView[]> {
  return (await listLinks(nl)).map((l) => ({ name: l.name, index: l.index, up: l.up, master: l.master }));
}
