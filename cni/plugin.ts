/**
 * The `berth` CNI plugin as a testable dispatcher, after libcni's skel: env,
 * stdin, stdout and the agent transport are injected, so every path runs
 * in-process in tests; cni/main.ts only wires them to the real process.
 *
 * The plugin is a thin front for the host agent (common/agent-protocol.ts):
 * it validates, forwards, and converts the agent's internal (CNI 1.1) result
 * to the requested cniVersion. Validation order follows skel so that a
 * request with several faults reports the same one a reference plugin would:
 *   env presence (4) → stdin (5/6) → network name (7) → CNI_CONTAINERID,
 *   CNI_IFNAME, CNI_ARGS (4) → cniVersion (1) → verb/version gate (1) →
 *   config (7/2) → CNI_NETNS exists (4) → prevResult (7/6) → agent.
 * Nothing reaches the agent unless all of that passed.
 *
 * Agent down: ADD, CHECK and GC answer 11 (try again later), STATUS answers
 * 50 (plugin not available), DEL is journalled (common/del-journal.ts) and
 * succeeds, because a failing DEL blocks pod teardown and the runtime would
 * retry it anyway (SPEC.md DEL: "plugins should generally complete a DEL
 * action without error even if some resources are missing").
 */
import { statSync } from 'node:fs';
import { BerthError, castError, fromBody, isBerthError, type ErrorKind } from '../common/errors';
import type { AgentRequest, AgentVerb } from '../common/agent-protocol';
import type { CniResult } from '../common/cni-types';
import {
  LATEST_VERSION, isSupportedVersion, parseResult, toVersion, versionAtLeast, versionInfo, type CniVersion,
} from '../common/cni-version';
import {
  confName, confVersion, decodeConf, parseCniArgs, parseNetConf, parsePrevResult, NAME_RE, type BerthNetConf,
} from '../common/cni-config';
import { appendDel } from '../common/del-journal';
import { createLogger, type Logger } from '../common/log';
import { isAgentUnavailable, sendAgentRequest, type SendAgentRequest } from './agent-client';

export const PLUGIN_VERSION = '0.1.0';
export const VERBS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'] as const;
export type Verb = (typeof VERBS)[number];

export interface PluginIO {
  env: Record<string, string | undefined>;
  /** Whole stdin; only called when the verb takes input. */
  readStdin(): Promise<string>;
  /** Throws when the output can't be delivered (the runtime stopped reading): an ADD then undoes itself. */
  stdout(s: string): void;
  stderr(s: string): void;
  /** Defaults to the unix-socket client. */
  send?: SendAgentRequest;
  /** Defaults to stat(2): exists and is not a directory. */
  netnsExists?(path: string): Promise<boolean>;
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

/** CNI spec 1.1 (SPEC.md "Interface name" rules in Section 2 "Parameters"); libcni utils.ValidateInterfaceName. */
export function ifNameProblem(name: string): string | undefined {
  if (name.length > 15) return 'interface name is too long (max 15 characters)';
  if (name === '.' || name === '..') return 'interface name is . or ..';
  if (/[/:\s]/.test(name)) return 'interface name contains / or : or whitespace';
  return undefined;
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
    check: (v) => (NAME_RE.test(v) ? undefined : 'invalid characters in container ID'),
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

/** Sync on purpose: one stat(2), where fs.promises alone costs ~0.7 ms of start-up to load. */
const defaultNetnsExists = async (path: string): Promise<boolean> => {
  try {
    const st = statSync(path, { throwIfNoEntry: false });
    return st !== undefined && !st.isDirectory();
  } catch {
    return false;
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
    if (err.kind === 'Internal') io.stderr(`${err.stack ?? err.message}\n`);
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

  if (ENV_TABLE.CNI_NETNS.requiredFor.includes(verb) && !(await (io.netnsExists ?? defaultNetnsExists)(netns))) {
    throw envError('CNI_NETNS', `no network namespace at ${JSON.stringify(netns)}`);
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
      if (ips) req.ips = ips;
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

  await forward(io, conf, req, log);
}

async function forward(io: PluginIO, conf: BerthNetConf, req: AgentRequest, log: Logger): Promise<void> {
  const send = io.send ?? sendAgentRequest;
  let resp;
  try {
    resp = await send(conf.agentSocket, req, conf.agentTimeoutMs);
  } catch (e) {
    if (!isAgentUnavailable(e)) throw e;
    switch (req.verb) {
      case 'DEL': {
        let entry;
        try {
          entry = await appendDel(conf.journalDir, req, { now: io.now });
        } catch (je) {
          // Neither the agent nor the journal took it: only a retry can save the release.
          const j = castError(je);
          throw new BerthError('TryAgainLater', `agent: ${e.reason}; journal: ${j.details ?? j.message}`);
        }
        log.warn('agent unavailable; DEL journalled for replay', { reason: e.reason, journal: conf.journalDir, entry: entry.id });
        return;
      }
      case 'STATUS':
        throw new BerthError('PluginNotAvailable', `agent ${conf.agentSocket}: ${e.reason}`);
      default:
        throw new BerthError('TryAgainLater', `agent ${conf.agentSocket}: ${e.reason}`);
    }
  }
  if (!resp.ok) throw fromBody(resp.error);
  if (req.verb !== 'ADD') return;

  try {
    if (!resp.result) throw new BerthError('Internal', 'agent answered ADD without a result');
    let result: CniResult;
    try {
      result = parseResult(resp.result, LATEST_VERSION, 'agent result');
    } catch (e) {
      throw new BerthError('Internal', `agent sent an invalid result: ${castError(e).details}`);
    }
    if (!result.dns && conf.dns) result.dns = conf.dns;
    io.stdout(`${JSON.stringify(toVersion(result, conf.cniVersion))}\n`);
  } catch (e) {
    // The agent plumbed the pod, but the runtime gets no result: undo it now
    // rather than trust a DEL that may never come.
    await undoAdd(io, conf, req, send, log);
    throw e;
  }
}

/** DEL of an attachment whose ADD failed after the agent did its part; journalled when the agent is gone. Never throws. */
async function undoAdd(io: PluginIO, conf: BerthNetConf, add: AgentRequest, send: SendAgentRequest, log: Logger): Promise<void> {
  const del: AgentRequest = { verb: 'DEL', containerId: add.containerId, netns: add.netns, ifName: add.ifName, args: add.args, network: add.network, pool: add.pool };
  try {
    const r = await send(conf.agentSocket, del, conf.agentTimeoutMs);
    if (r.ok) return log.warn('ADD failed after the agent plumbed the pod; undone');
    log.warn('ADD failed after the agent plumbed the pod; the undo failed too (the runtime\'s DEL finishes it)', { error: r.error.code });
  } catch (e) {
    if (!isAgentUnavailable(e)) return;
    await appendDel(conf.journalDir, del, { now: io.now }).then(
      () => log.warn('ADD failed after the agent plumbed the pod; its undo is journalled', { reason: e.reason }),
      () => undefined,
    );
  }
}
