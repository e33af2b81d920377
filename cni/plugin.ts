/**
 * The CNI contract of the `berth` plugin as a testable dispatcher, after
 * libcni's skel: env, stdin, stdout and the handler transport are injected,
 * so every path runs in-process in tests. It runs inside the agent
 * (agent/cni-relay.ts), on the raw request the `berth` relay binary
 * (cni/relay) passes on: the one implementation of the CNI contract.
 *
 * It validates, hands the agent's handlers an AgentRequest
 * (common/agent-protocol.ts), and converts their internal (CNI 1.1) result
 * to the requested cniVersion. Validation order follows skel so that a
 * request with several faults reports the same one a reference plugin would:
 *   env presence (4) → stdin (5/6) → network name (7) → CNI_CONTAINERID,
 *   CNI_IFNAME, CNI_ARGS (4) → cniVersion (1) → verb/version gate (1) →
 *   config (7/2) → CNI_NETNS exists (4) → prevResult (7/6) → agent.
 * Nothing reaches the handlers unless all of that passed.
 *
 * Agent down is the relay's to answer (cni/relay/berth.c): ADD, CHECK and GC
 * 11, STATUS 50, DEL journalled (common/del-journal.ts) and successful.
 */
import { statSync } from 'node:fs';
import { BerthError, castError, fromBody, isBerthError, type ErrorKind } from '../common/errors';
import type { AgentRequest, AgentResponse, AgentVerb } from '../common/agent-protocol';
import type { CniResult } from '../common/cni-types';
import {
  LATEST_VERSION, isSupportedVersion, parseResult, toVersion, versionAtLeast, versionInfo, type CniVersion,
} from '../common/cni-version';
import {
  annotatedIp, confName, confVersion, decodeConf, parseCniArgs, parseNetConf, parsePrevResult, NAME_RE, type BerthNetConf,
} from '../common/cni-config';
import { createLogger, type Logger } from '../common/log';

export const PLUGIN_VERSION = '0.1.0';
export const VERBS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'] as const;
export type Verb = (typeof VERBS)[number];

export interface PluginIO {
  env: Record<string, string | undefined>;
  /** Whole stdin; only called when the verb takes input. */
  readStdin(): Promise<string>;
  stdout(s: string): void;
  stderr(s: string): void;
  /** The agent's handlers (agent/cni-handlers.ts), called in-process. */
  send(req: AgentRequest): Promise<AgentResponse>;
  /**
   * Why CNI_NETNS can't be used, or undefined when it is a usable network
   * namespace. In the agent: the namespace the relay passed (agent/cni-relay.ts).
   * Defaults to stat(2): exists and is not a directory.
   */
  netnsProblem?(path: string): Promise<string | undefined>;
  /** Where an Internal error's stack goes; defaults to stderr. The agent keeps it in its own log. */
  internalError?(err: Error): void;
  now?(): Date;
}

type EnvVar = 'CNI_COMMAND' | 'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME' | 'CNI_ARGS' | 'CNI_PATH';

interface EnvRule {
  /** Verbs for which an empty or unset value is an error. */
  requiredFor: readonly Verb[];
  /** Kind when required but missing. */
  missing: ErrorKind;
  /** Kind when present but invalid; `check` returns why, or undefined. */
  invalid: ErrorKind;
  check?(value: string): string | undefined;
}

/**
 * CNI spec 1.1 (SPEC.md "Interface name" rules in Section 2 "Parameters");
 * libcni utils.ValidateInterfaceName. Stricter than the spec in one way:
 * printable ASCII only. The kernel counts bytes (IFNAMSIZ) and treats some
 * bytes >= 0x80 as whitespace, so a multibyte name was refused deep in the
 * ADD (112) instead of here.
 */
export function ifNameProblem(name: string): string | undefined {
  if (name.length > 15) return 'interface name is too long (max 15 characters)';
  if (name === '.' || name === '..') return 'interface name is . or ..';
  if (/[/:\s]/.test(name)) return 'interface name contains / or : or whitespace';
  if (!/^[\x21-\x7e]+$/.test(name)) return 'interface name has a character that is not printable ASCII';
  return undefined;
}

/** Longest CNI_CONTAINERID accepted: the agent keys etcd and its journal by it, and runtimes use 64. */
export const MAX_CONTAINER_ID = 256;

function containerIdProblem(v: string): string | undefined {
  if (v.length > MAX_CONTAINER_ID) return `container ID of ${v.length} characters, at most ${MAX_CONTAINER_ID}`;
  return NAME_RE.test(v) ? undefined : 'invalid characters in container ID';
}

/**
 * Required environment per verb, SPEC.md Section 2 "CNI operations":
 *   ADD, CHECK  CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME
 *   DEL         CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME (CNI_NETNS optional)
 *   GC, STATUS, VERSION  CNI_COMMAND only
 * CNI_ARGS and CNI_PATH are optional everywhere; Berth never delegates, so
 * it needs no CNI_PATH (skel requires it; the spec does not).
 * Every failure is InvalidEnv (4): "Invalid necessary environment variables".
 */
export const ENV_TABLE: Record<EnvVar, EnvRule> = {
  CNI_COMMAND: { requiredFor: VERBS, missing: 'InvalidEnv', invalid: 'InvalidEnv' },
  CNI_CONTAINERID: {
    requiredFor: ['ADD', 'DEL', 'CHECK'],
    missing: 'InvalidEnv',
    invalid: 'InvalidEnv',
    check: containerIdProblem,
  },
  CNI_NETNS: { requiredFor: ['ADD', 'CHECK'], missing: 'InvalidEnv', invalid: 'InvalidEnv' },
  CNI_IFNAME: { requiredFor: ['ADD', 'DEL', 'CHECK'], missing: 'InvalidEnv', invalid: 'InvalidEnv', check: ifNameProblem },
  CNI_ARGS: { requiredFor: [], missing: 'InvalidEnv', invalid: 'InvalidEnv' },
  CNI_PATH: { requiredFor: [], missing: 'InvalidEnv', invalid: 'InvalidEnv' },
};

/** Lowest config cniVersion that allows each verb (CHECK came in 0.4.0, GC and STATUS in 1.1.0). */
export const MIN_VERSION: Record<Verb, string> = {
  ADD: '0.3.0', DEL: '0.3.0', CHECK: '0.4.0', VERSION: '0.3.0', GC: '1.1.0', STATUS: '1.1.0',
};

function envError(name: string, why: string): BerthError {
  return new BerthError('InvalidEnv', `${name}: ${why}`, `invalid environment variable ${name}`);
}

const defaultNetnsProblem = async (path: string): Promise<string | undefined> => {
  try {
    const st = statSync(path, { throwIfNoEntry: false });
    return st !== undefined && !st.isDirectory() ? undefined : 'no network namespace';
  } catch {
    return 'no network namespace';
  }
};

function printError(io: PluginIO, version: string, err: BerthError, code = err.cniCode): void {
  const body: Record<string, unknown> = { cniVersion: version, code, msg: err.message };
  body.details = err.details !== undefined ? `${err.kind}: ${err.details}` : err.kind;
  try {
    io.stdout(`${JSON.stringify(body)}\n`);
  } catch {
    /* nobody is reading: the exit code is all that is left */
  }
}

/**
 * Largest `dns` block an ADD accepts, serialized. Kubernetes caps a pod's
 * DNS config at 32 search domains of 2048 characters in all; the cap here
 * is far above any real one, and far below the agent protocol's 1 MiB line.
 */
export const MAX_DNS_BYTES = 64 * 1024;

/**
 * prevResult as forwarded to the agent: without `dns`, which the agent never
 * reads. Whatever the runtime cached, CHECK's and DEL's requests stay small:
 * a >1 MiB dns block in the cached result once made every DEL fail with 6
 * (the agent's request line limit), so the pod could never be cleaned up.
 */
function withoutDns(prev: CniResult): CniResult {
  const { dns: _dns, ...rest } = prev;
  return rest;
}

/** Runs one invocation; resolves to the process exit code. Never throws. */
export async function runPlugin(io: PluginIO): Promise<number> {
  let outVersion: string = LATEST_VERSION;
  let log: Logger = createLogger({ plugin: 'berth' }, { level: 'warn', write: io.stderr });
  try {
    await dispatch(io, (v) => (outVersion = v), (l) => (log = l));
    return 0;
  } catch (e) {
    const err = castError(e);
    if (err.kind === 'Internal') (io.internalError ?? ((x: Error) => io.stderr(`${x.stack ?? x.message}\n`)))(err);
    else log.error(err.message, { kind: err.kind, details: err.details });
    printError(io, outVersion, err);
    return 1;
  }
}

async function dispatch(io: PluginIO, setVersion: (v: CniVersion) => void, setLog: (l: Logger) => void): Promise<void> {
  const env = io.env;
  const cmd = env.CNI_COMMAND ?? '';
  if (cmd === '') {
    io.stderr(`CNI plugin berth v${PLUGIN_VERSION}\nCNI protocol versions supported: ${versionInfo().supportedVersions.join(', ')}\n`);
    throw new BerthError('InvalidEnv', 'CNI_COMMAND: missing', 'required env variables missing: CNI_COMMAND');
  }
  if (!(VERBS as readonly string[]).includes(cmd)) throw envError('CNI_COMMAND', `unknown command ${JSON.stringify(cmd)}`);
  const verb = cmd as Verb;

  if (verb === 'VERSION') {
    // Input is {"cniVersion": ...}; answer in that version when we speak it (skel ignores it).
    let asked: CniVersion = LATEST_VERSION;
    try {
      const v = (JSON.parse(await io.readStdin()) as { cniVersion?: unknown }).cniVersion;
      if (isSupportedVersion(v)) asked = v;
    } catch {
      /* VERSION must answer whatever the input */
    }
    io.stdout(`${JSON.stringify(versionInfo(asked))}\n`);
    return;
  }

  const missing = (Object.keys(ENV_TABLE) as EnvVar[]).filter((k) => ENV_TABLE[k].requiredFor.includes(verb) && !env[k]);
  if (missing.length > 0) {
    throw new BerthError(ENV_TABLE[missing[0]].missing, missing.join(','), `required env variables missing: ${missing.join(', ')}`);
  }

  let stdin: string;
  try {
    stdin = await io.readStdin();
  } catch (e) {
    throw new BerthError('IO', `stdin: ${(e as Error).message}`);
  }
  const raw = decodeConf(stdin);
  if (isSupportedVersion(raw.cniVersion)) setVersion(raw.cniVersion);
  confName(raw);

  const containerId = env.CNI_CONTAINERID ?? '';
  const ifName = env.CNI_IFNAME ?? '';
  const netns = env.CNI_NETNS ?? '';
  for (const [k, v] of [['CNI_CONTAINERID', containerId], ['CNI_IFNAME', ifName]] as const) {
    if (!ENV_TABLE[k].requiredFor.includes(verb)) continue;
    const why = ENV_TABLE[k].check?.(v);
    if (why) throw envError(k, `${why}: ${JSON.stringify(v)}`);
  }
  const args = parseCniArgs(env.CNI_ARGS);

  const version = confVersion(raw);
  if (!versionAtLeast(version, MIN_VERSION[verb])) {
    throw new BerthError('IncompatibleVersion', `${verb} needs cniVersion >= ${MIN_VERSION[verb]}, config has ${version}`, `config version does not allow ${verb}`);
  }
  const conf = parseNetConf(raw);
  const log = createLogger({ plugin: 'berth', verb, containerId: containerId || undefined, ifName: ifName || undefined }, { level: conf.logLevel, write: io.stderr });
  setLog(log);

  if (ENV_TABLE.CNI_NETNS.requiredFor.includes(verb)) {
    const why = await (io.netnsProblem ?? defaultNetnsProblem)(netns);
    if (why) throw envError('CNI_NETNS', `${why}: ${JSON.stringify(netns)}`);
  }

  const req: AgentRequest = { verb: verb as AgentVerb, containerId, netns, ifName, args, network: conf.name, pool: conf.pool };
  if (conf.mtu !== undefined) req.mtu = conf.mtu;
  const ips = conf.ips ?? (args.IP !== undefined ? args.IP.split(',').map((s) => s.split('/')[0]) : undefined);
  const mac = conf.mac ?? (args.MAC !== undefined ? args.MAC.toLowerCase().replace(/-/g, ':') : undefined);

  switch (verb) {
    case 'ADD': {
      if (conf.rawPrevResult !== undefined) {
        throw new BerthError('InvalidConfig', 'prevResult: berth creates the interface and must be the first plugin of a chain', 'berth must be first in a plugin chain');
      }
      // Refused here, before anything exists: the result would carry it to the runtime and back in every CHECK.
      const dnsBytes = conf.dns ? Buffer.byteLength(JSON.stringify(conf.dns)) : 0;
      if (dnsBytes > MAX_DNS_BYTES) throw new BerthError('InvalidConfig', `dns: ${dnsBytes} bytes, at most ${MAX_DNS_BYTES}`, 'dns block too large');
      // The pod annotation asks only when nothing more explicit did (docs/cni-config.md).
      if (ips) req.ips = ips;
      else if (conf.annotatedIp !== undefined) req.ips = [annotatedIp(conf.annotatedIp)];
      if (mac) req.mac = mac;
      break;
    }
    case 'CHECK':
      if (conf.rawPrevResult === undefined) throw new BerthError('InvalidConfig', 'prevResult: required for CHECK', 'missing prevResult');
      req.prevResult = withoutDns(parsePrevResult(conf)!);
      break;
    case 'DEL':
      try {
        const prev = parsePrevResult(conf);
        if (prev) req.prevResult = withoutDns(prev);
      } catch (e) {
        // DEL cleans up by identity; a bad cached result must not block teardown.
        log.warn('ignoring unparseable prevResult on DEL', { details: isBerthError(e) ? e.details : String(e) });
      }
      break;
    case 'GC':
      req.containerId = '';
      req.ifName = '';
      req.netns = '';
      if (!conf.validAttachments) throw new BerthError('InvalidConfig', 'cni.dev/valid-attachments: required for GC', 'missing cni.dev/valid-attachments');
      req.validAttachments = conf.validAttachments;
      break;
    case 'STATUS':
      req.containerId = '';
      req.ifName = '';
      req.netns = '';
      break;
  }

  await forward(io, conf, req);
}

async function forward(io: PluginIO, conf: BerthNetConf, req: AgentRequest): Promise<void> {
  const resp = await io.send(req);
  if (!resp.ok) throw fromBody(resp.error);
  if (req.verb !== 'ADD') return;
  if (!resp.result) throw new BerthError('Internal', 'agent answered ADD without a result');
  let result: CniResult;
  try {
    result = parseResult(resp.result, LATEST_VERSION, 'agent result');
  } catch (e) {
    throw new BerthError('Internal', `agent sent an invalid result: ${castError(e).details}`);
  }
  if (!result.dns && conf.dns) result.dns = conf.dns;
  io.stdout(`${JSON.stringify(toVersion(result, conf.cniVersion))}\n`);
}
