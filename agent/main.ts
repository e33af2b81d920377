#!/usr/bin/env node
/**
 * berth-agent: the per-host daemon. Run it inside the host's network
 * namespace (on a real node, the root one). It programs that namespace only;
 * etcd and the controller can be reached over unix:// sockets. Flags and
 * semantics: docs/agent.md.
 */
import { hostname } from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_AGENT_SOCKET } from '../common/agent-protocol';
import { checkClientTls } from '../common/controller-client';
import { addEtcdOptions, etcdConnectionFrom, jsonWarnings, oneLineErrors, positiveInt, readTokenFile } from '../common/daemon-cli';
import { castError } from '../common/errors';
import { createLogger } from '../common/log';
import { DEFAULT_VNI } from '../common/records';
import { Agent } from './daemon';
import { parseCidrList } from './firewall';
import { runInstallCni } from './install-cni-cli';
import { absoluteArg, addConflistOptions, nameArg } from './cni-flags';
import { useProcSysNet } from './kernel';

const vni = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 0xffffff) throw new InvalidArgumentError('must be 1..16777215');
  return n;
};
const name = nameArg;
const ipv4 = (v: string) => {
  if (!/^(\d{1,3})(\.\d{1,3}){3}$/.test(v) || v.split('.').some((p) => Number(p) > 255)) throw new InvalidArgumentError('must be an IPv4 address');
  return v;
};

/** --controller: the first value given replaces the default, later ones add replicas. */
const defaultController: string[] = [process.env.BERTH_CONTROLLER ?? 'http://127.0.0.1:7480'];
const collectUrl = (v: string, prev: string[]) => {
  const urls = v.split(',').map((u) => u.trim()).filter(Boolean);
  if (urls.length === 0) throw new InvalidArgumentError('must name a controller URL');
  return prev === defaultController ? urls : [...prev, ...urls];
};

const cidrs = (v: string, prev: unknown) => {
  try {
    return [...(Array.isArray(prev) ? prev : []), ...parseCidrList(v)];
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
};

const program = addConflistOptions(oneLineErrors(addEtcdOptions(new Command('berth-agent')
  .description('Berth host agent: registers the host, programs the VXLAN overlay from etcd, serves the CNI plugin')))
  .option('--controller <url>', 'controller URL: http(s)://host:port or unix:///path; repeat it or give a comma list for replicas (fails over)', collectUrl, defaultController)
  .option('--token-file <file>', 'bearer token for the controller API')
  .option('--ca <file>', 'CA bundle that signed the controller\'s https certificate (default: system roots)')
  .option('--cert <file>', 'client certificate for the controller API (mTLS), re-read when it changes')
  .option('--key <file>', 'private key of --cert')
  .option('--host <name>', 'this host\'s name in etcd', name, hostname().toLowerCase())
  .option('--underlay-ip <ip>', 'own underlay address (default: the first IPv4 address on --underlay-dev)', ipv4)
  .option('--underlay-dev <ifname>', 'underlay interface; its MTU - 50 is the overlay MTU (default: the one holding --underlay-ip)')
  .option('--pool <name>', 'the pool this host serves', name, 'default')
  .option('--socket <path>', 'CNI socket (mode 0600)', DEFAULT_AGENT_SOCKET)
  .option('--journal-dir <dir>', 'DEL journal written by the CNI plugin', '/var/lib/berth/del-journal')
  .option('--vni <n>', 'VXLAN network identifier', vni, DEFAULT_VNI)
  .option('--resync-ms <ms>', 'reconcile at least this often, even without events', positiveInt, 10_000)
  .option('--host-ttl <s>', 'TTL of the host registration lease, in seconds', positiveInt, 10)
  .option('--etcd-wait <s>', 'exit (status 5) if etcd can\'t be reached within this many seconds of start (default: keep retrying)', positiveInt)
  .option('--metrics-listen <addr>', 'Prometheus /metrics, /healthz and /readyz: host:port (in the agent\'s netns) or unix:///path (mode 0600)', '127.0.0.1:9481')
  .option('--pass-publish-every <s>', 'publish the last reconcile pass time in the alive key at most this often (berthctl status)', positiveInt, 30)
  .option('--fast-path', 'BPF shortcut for pod-to-pod traffic; it bypasses host netfilter (see docs/dataplane.md)', process.env.BERTH_FAST_PATH === '1')
  .option('--no-masquerade <cidr,...>', 'destinations pods reach with their own source address (no SNAT to the underlay address); repeatable', cidrs)
  .option('--no-isolation', 'turn off the pod source check and the VXLAN input filter (docs/dataplane.md "Isolation")')
  .option('--proc-sys-net <dir>', 'the host\'s /proc/sys/net, where the agent writes its net sysctls: in a container that is not privileged (/proc/sys read-only), a writable hostPath mount of it (docs/kubernetes.md "Privileges")', absoluteArg, '/proc/sys/net'),
// --cni-conf-dir turns publication on: the conflist is there only while the agent is ready (docs/kubernetes.md).
{ confDir: '--cni-conf-dir', binDir: '--cni-bin-dir', network: '--cni-network', cniVersion: '--cni-version' }, ['confDir']);

async function main(): Promise<void> {
  // libuv's pool (4 threads by default) carries the agent's slow netlink
  // requests (veth creation and deletion wait on the kernel's RTNL and RCU)
  // besides its file I/O; a burst of DELs must not queue a journal read
  // behind four veth deletions. Read when the pool starts, which is later.
  process.env.UV_THREADPOOL_SIZE ??= '16';
  // `berth-agent install-cni …`: the node install step (agent/install-cni.ts).
  if (process.argv[2] === 'install-cni') return runInstallCni(process.argv.slice(3));
  program.parse();
  const o = program.opts();
  const log = createLogger({ component: 'agent' });
  jsonWarnings(log);
  if (!o.underlayIp && !o.underlayDev) program.error('error: one of --underlay-ip or --underlay-dev is required');
  let noMasquerade: string[] = Array.isArray(o.masquerade) ? o.masquerade : [];
  if (!Array.isArray(o.masquerade) && process.env.BERTH_NO_MASQUERADE) {
    try {
      noMasquerade = parseCidrList(process.env.BERTH_NO_MASQUERADE);
    } catch (e) {
      program.error(`error: BERTH_NO_MASQUERADE: ${(e as Error).message}`);
    }
  }
  useProcSysNet(o.procSysNet);
  const isolation = o.isolation !== false && process.env.BERTH_ISOLATION !== '0';
  const controllerTls = o.ca || o.cert || o.key ? { caFile: o.ca, certFile: o.cert, keyFile: o.key } : undefined;
  checkClientTls(o.controller, controllerTls);
  const agent = new Agent({
    etcd: etcdConnectionFrom(o),
    controllerUrl: o.controller, controllerTls, token: readTokenFile(o.tokenFile), host: o.host, underlayIp: o.underlayIp, underlayDev: o.underlayDev, pool: o.pool,
    socketPath: o.socket, journalDir: o.journalDir, vni: o.vni, resyncMs: o.resyncMs, hostTtlSeconds: o.hostTtl, etcdWaitMs: o.etcdWait !== undefined ? o.etcdWait * 1000 : undefined, fastPath: !!o.fastPath, noMasquerade, isolation,
    metricsListen: o.metricsListen, passPublishMs: o.passPublishEvery * 1000, log,
    ...(o.cniConfDir ? { cniConf: { confDir: o.cniConfDir, binDir: o.cniBinDir, network: o.cniNetwork, cniVersion: o.cniVersion } } : {}),
  });
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    // No revoke: a restart must not look like a host failure (docs/agent.md).
    agent.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  try {
    await agent.start();
  } catch (e) {
    await agent.stop().catch(() => undefined);
    throw e;
  }
}

main().catch((e) => {
  const err = castError(e);
  process.stderr.write(`berth-agent: ${err.message}${err.details ? `: ${err.details}` : ''}\n`);
  process.exit(err.exitCode || 1);
});
