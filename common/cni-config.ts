/**
 * Parsing and validation of what a runtime hands the `berth` plugin: the
 * network configuration on stdin and the CNI_ARGS string. Pure: every failure
 * is a BerthError whose kind fixes the CNI code (common/errors.ts).
 *
 * Codes, per CNI SPEC.md "Error" (well-known error codes):
 *   6 Decode           stdin is not a JSON object, or prevResult is malformed
 *   1 IncompatibleVersion  cniVersion absent or not one we support
 *   7 InvalidConfig    name/type/pool missing or of the wrong shape or value
 *   2 UnsupportedField a top-level key Berth does not know; the spec requires
 *                      the message to "contain the key and value"
 *   4 InvalidEnv       CNI_ARGS malformed (it is an environment variable)
 *
 * The spec (Section 1, "Plugin configuration objects") lets a plugin "generate
 * an error if called with unknown fields"; Berth does, because a typo such as
 * `agentSockt` would otherwise silently fall back to a default. The reserved
 * keys `args`, `runtimeConfig`, `prevResult`, `capabilities` and any
 * `cni.dev/*` key are always accepted.
 */
import { BerthError } from './errors';
import type { CniDns, CniResult } from './cni-types';
import { DEFAULT_AGENT_SOCKET } from './agent-protocol';
import { familyOf, isIp as isAddress } from './cidr';
import { isCidr, isIp, isMac, isSupportedVersion, parseDns, parseResult, SUPPORTED_VERSIONS, type CniVersion } from './cni-version';

export const DEFAULT_JOURNAL_DIR = '/var/lib/berth/del-journal';
/** How long the relay waits for the answer once the agent acknowledged (cni/relay/relay.h; docs/cni-config.md "Timeouts"). */
export const DEFAULT_AGENT_TIMEOUT_MS = 25_000;
/** How long the relay waits for the agent to accept its connection (cni/relay/relay.h). */
export const DEFAULT_AGENT_CONNECT_TIMEOUT_MS = 2_000;
/** How long the relay waits for the agent to acknowledge a request it has read (cni/relay/relay.h). */
export const DEFAULT_AGENT_ACCEPT_TIMEOUT_MS = 1_500;
/** Deepest nesting a config may have; real ones stay under 8 (prevResult.interfaces[0].x). */
export const MAX_CONFIG_DEPTH = 64;
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** Top-level keys Berth understands; anything else is UnsupportedField (2). */
export const KNOWN_FIELDS: readonly string[] = [
  // spec, Section 1 and 3
  'cniVersion', 'cniVersions', 'name', 'type', 'args', 'runtimeConfig', 'capabilities', 'prevResult', 'dns',
  // berth
  'pool', 'agentSocket', 'agentTimeoutMs', 'agentConnectTimeoutMs', 'agentAcceptTimeoutMs', 'journalDir', 'mtu', 'logLevel',
];

/** GC's list of attachments to keep (SPEC.md "GC: Clean up any stale resources"). */
export interface GcAttachment {
  containerId: string;
  ifName: string;
}

export interface BerthNetConf {
  cniVersion: CniVersion;
  /** Network name (spec: "must be unique", same charset as container IDs). */
  name: string;
  type: 'berth';
  pool: string;
  agentSocket: string;
  agentTimeoutMs: number;
  /** Read by the relay only: its connect timeout. */
  agentConnectTimeoutMs: number;
  /** Read by the relay only: how long it waits for the agent's acknowledgement. */
  agentAcceptTimeoutMs: number;
  journalDir: string;
  mtu?: number;
  logLevel: LogLevel;
  dns?: CniDns;
  /** From runtimeConfig.ips (capability `ips`) or args.cni.ips; without prefix length. */
  ips?: string[];
  /**
   * The pod annotation `berth.io/ip` (POD_IP_ANNOTATION), from
   * runtimeConfig["io.kubernetes.cri.pod-annotations"], unchecked: only ADD
   * reads it (a bad value must never block a DEL).
   */
  annotatedIp?: unknown;
  /** From runtimeConfig.mac (capability `mac`) or args.cni.mac. */
  mac?: string;
  /** The raw prevResult, parsed against cniVersion only when a verb needs it. */
  rawPrevResult?: unknown;
  /** GC only: `cni.dev/valid-attachments`. */
  validAttachments?: GcAttachment[];
}

/** Container IDs and network names: spec Section 2 "Parameters" (CNI_CONTAINERID). */
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function invalid(details: string, msg?: string): never {
  throw new BerthError('InvalidConfig', details, msg);
}

/** Step 1: stdin bytes → a JSON object, or Decode (6). */
export function decodeConf(stdin: string): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new BerthError('Decode', `network config: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new BerthError('Decode', 'network config: expected a JSON object');
  }
  const depth = nestingDepth(raw);
  if (depth > MAX_CONFIG_DEPTH) throw new BerthError('Decode', `network config: nested ${depth} levels deep, at most ${MAX_CONFIG_DEPTH}`);
  return raw as Record<string, unknown>;
}

/**
 * Depth of a parsed JSON value, without recursion, stopping just past
 * MAX_CONFIG_DEPTH. Checked before anything recursive (JSON.stringify,
 * parseResult) touches the value: thousands of levels once overflowed the
 * stack there and surfaced as Internal (110) with a JS stack.
 */
function nestingDepth(root: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (d > max) max = d;
    if (max > MAX_CONFIG_DEPTH) return max;
    for (const c of Array.isArray(v) ? v : Object.values(v)) if (typeof c === 'object' && c !== null) stack.push([c, d + 1]);
  }
  return max;
}

/**
 * Step 2: the configuration's cniVersion. An absent cniVersion means 0.1.0
 * to libcni, which Berth does not support, so it is IncompatibleVersion (1).
 */
export function confVersion(raw: Record<string, unknown>): CniVersion {
  const v = raw.cniVersion;
  if (v !== undefined && typeof v !== 'string') throw new BerthError('Decode', 'cniVersion: expected a string');
  if (!isSupportedVersion(v)) {
    throw new BerthError(
      'IncompatibleVersion',
      `cniVersion ${v === undefined ? '(absent, meaning 0.1.0)' : JSON.stringify(v)}; supported: ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  return v;
}

/** Step 3: the network name (skel validates it before anything else: 7). */
export function confName(raw: Record<string, unknown>): string {
  const name = raw.name;
  if (name === undefined || name === '') invalid('name: missing', 'missing network name');
  if (typeof name !== 'string' || !NAME_RE.test(name)) invalid(`name: ${JSON.stringify(name)}`, 'invalid characters found in network name');
  return name;
}

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function absPath(raw: Record<string, unknown>, k: string, dflt: string): string {
  const v = raw[k];
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !v.startsWith('/') || v.includes('\0')) invalid(`${k}: expected an absolute path, got ${preview(v)}`);
  return v;
}

function intIn(raw: Record<string, unknown>, k: string, min: number, max: number): number | undefined {
  const v = raw[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) invalid(`${k}: expected an integer in [${min}, ${max}], got ${preview(v)}`);
  return v;
}

function asObject(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid(`${path}: expected an object, got ${preview(v)}`);
  return v as Record<string, unknown>;
}

/** The runtime capability (containerd's CRI, CRI-O) that hands a plugin the pod's annotations. */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
/** The pod annotation that asks for a specific address (docs/kubernetes.md "A pod's address by annotation"). */
export const POD_IP_ANNOTATION = 'berth.io/ip';

/** The address a `berth.io/ip` annotation asks for; throws InvalidConfig naming the annotation. */
export function annotatedIp(v: unknown): string {
  if (typeof v !== 'string' || !isAddress(v.trim()) || familyOf(v.trim()) !== 4) invalid(`pod annotation ${POD_IP_ANNOTATION}: not an IPv4 address: ${preview(v)}`);
  return (v as string).trim();
}

/** `ips` entries may carry a prefix length (CONVENTIONS.md `ips`); Berth's pool decides it, so it is dropped. */
function requestedIps(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) invalid(`${path}: expected an array of IP addresses, got ${preview(v)}`);
  return v.map((x, i) => {
    if (typeof x !== 'string' || !(isIp(x) || isCidr(x))) invalid(`${path}[${i}]: not an IP address: ${preview(x)}`);
    return x.includes('/') ? x.slice(0, x.indexOf('/')) : x;
  });
}

/**
 * Why a MAC can't be a pod interface's address, or undefined. The kernel
 * refuses a multicast (I/G bit set) or all-zero address with EADDRNOTAVAIL,
 * which used to surface late, as 112, after the veth existed.
 */
export function macProblem(v: string): string | undefined {
  if (!isMac(v)) return 'not a MAC address';
  const bytes = v.split(/[:-]/).map((x) => parseInt(x, 16));
  if ((bytes[0] & 1) === 1) return 'a multicast MAC address';
  if (bytes.every((b) => b === 0)) return 'the all-zero MAC address';
  return undefined;
}

function requestedMac(v: unknown, path: string): string {
  const why = typeof v === 'string' ? macProblem(v) : 'not a MAC address';
  if (why) invalid(`${path}: ${why}: ${preview(v)}`);
  return (v as string).toLowerCase().replace(/-/g, ':');
}

function attachments(v: unknown, key: string): GcAttachment[] {
  if (!Array.isArray(v)) invalid(`${key}: expected an array, got ${preview(v)}`);
  return v.map((x, i) => {
    const o = asObject(x, `${key}[${i}]`);
    if (typeof o.containerID !== 'string' || o.containerID === '') invalid(`${key}[${i}].containerID: expected a non-empty string`);
    if (typeof o.ifname !== 'string' || o.ifname === '') invalid(`${key}[${i}].ifname: expected a non-empty string`);
    return { containerId: o.containerID, ifName: o.ifname };
  });
}

/**
 * Full validation of a decoded configuration. Order: version (1), name (7),
 * type (7), unknown fields (2), then field values (7).
 */
export function parseNetConf(raw: Record<string, unknown>): BerthNetConf {
  const cniVersion = confVersion(raw);
  const name = confName(raw);
  if (raw.type !== 'berth') invalid(`type: ${preview(raw.type)}`, 'type must be "berth"');

  for (const k of Object.keys(raw)) {
    if (KNOWN_FIELDS.includes(k) || k.startsWith('cni.dev/')) continue;
    throw new BerthError('UnsupportedField', `field "${k}" is not a berth setting; see docs/cni-config.md`, `unsupported field "${k}": ${preview(raw[k])}`);
  }

  if (raw.cniVersions !== undefined) {
    if (!Array.isArray(raw.cniVersions) || !raw.cniVersions.every((x) => typeof x === 'string')) invalid(`cniVersions: expected an array of strings, got ${preview(raw.cniVersions)}`);
  }
  if (typeof raw.pool !== 'string' || !NAME_RE.test(raw.pool)) invalid(`pool: ${raw.pool === undefined ? 'missing' : preview(raw.pool)}`, 'missing or invalid pool');

  const logLevel = raw.logLevel ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel as LogLevel)) invalid(`logLevel: expected one of ${LOG_LEVELS.join('|')}, got ${preview(logLevel)}`);

  const conf: BerthNetConf = {
    cniVersion,
    name,
    type: 'berth',
    pool: raw.pool,
    agentSocket: absPath(raw, 'agentSocket', DEFAULT_AGENT_SOCKET),
    agentTimeoutMs: intIn(raw, 'agentTimeoutMs', 100, 600_000) ?? DEFAULT_AGENT_TIMEOUT_MS,
    agentConnectTimeoutMs: intIn(raw, 'agentConnectTimeoutMs', 10, 600_000) ?? DEFAULT_AGENT_CONNECT_TIMEOUT_MS,
    agentAcceptTimeoutMs: intIn(raw, 'agentAcceptTimeoutMs', 50, 60_000) ?? DEFAULT_AGENT_ACCEPT_TIMEOUT_MS,
    journalDir: absPath(raw, 'journalDir', DEFAULT_JOURNAL_DIR),
    logLevel: logLevel as LogLevel,
  };
  const mtu = intIn(raw, 'mtu', 576, 65535);
  if (mtu !== undefined) conf.mtu = mtu;

  if (raw.dns !== undefined) {
    try {
      const dns = parseDns(raw.dns, 'dns');
      if (Object.keys(dns).length > 0) conf.dns = dns;
    } catch (e) {
      invalid((e as BerthError).details ?? 'dns');
    }
  }
  if (raw.capabilities !== undefined) {
    const caps = asObject(raw.capabilities, 'capabilities');
    for (const [k, v] of Object.entries(caps)) if (typeof v !== 'boolean') invalid(`capabilities.${k}: expected a boolean, got ${preview(v)}`);
  }

  // Requested addresses, Berth's precedence: runtimeConfig (capabilities) > args.cni > CNI_ARGS IP/MAC.
  if (raw.args !== undefined) {
    const args = asObject(raw.args, 'args');
    if (args.cni !== undefined) {
      const cni = asObject(args.cni, 'args.cni');
      if (cni.ips !== undefined) conf.ips = requestedIps(cni.ips, 'args.cni.ips');
      if (cni.mac !== undefined) conf.mac = requestedMac(cni.mac, 'args.cni.mac');
    }
  }
  if (raw.runtimeConfig !== undefined) {
    const rc = asObject(raw.runtimeConfig, 'runtimeConfig');
    if (rc.ips !== undefined) conf.ips = requestedIps(rc.ips, 'runtimeConfig.ips');
    if (rc.mac !== undefined) conf.mac = requestedMac(rc.mac, 'runtimeConfig.mac');
    const annotations = rc[POD_ANNOTATIONS_CAPABILITY];
    if (typeof annotations === 'object' && annotations !== null && !Array.isArray(annotations) && Object.hasOwn(annotations, POD_IP_ANNOTATION)) {
      conf.annotatedIp = (annotations as Record<string, unknown>)[POD_IP_ANNOTATION];
    }
  }

  if (raw.prevResult !== undefined) conf.rawPrevResult = raw.prevResult;

  // libcni >= 1.2.3 sends both keys; the 1.1.0 spec text first named it cni.dev/attachments.
  for (const key of ['cni.dev/valid-attachments', 'cni.dev/attachments']) {
    if (raw[key] !== undefined) {
      conf.validAttachments = attachments(raw[key], key);
      break;
    }
  }
  return conf;
}

/** prevResult → internal result, read as the configuration's cniVersion (as libcni does). */
export function parsePrevResult(conf: BerthNetConf): CniResult | undefined {
  if (conf.rawPrevResult === undefined) return undefined;
  return parseResult(conf.rawPrevResult, conf.cniVersion, 'prevResult');
}

// ---- CNI_ARGS --------------------------------------------------------------

/** Keys Berth (or the agent) reads; others need IgnoreUnknown (libcni types.LoadArgs). */
export const KNOWN_CNI_ARGS: readonly string[] = [
  'IgnoreUnknown', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID', 'BERTH_IDENTITY', 'IP', 'MAC',
];

function argsError(details: string): never {
  throw new BerthError('InvalidEnv', details, 'invalid environment variable: CNI_ARGS');
}

/**
 * Parses CNI_ARGS, "K=V;K2=V2" (spec Section 2 "Parameters"). Like libcni's
 * LoadArgs, a pair without exactly one '=' is an error, and a key Berth does
 * not know is an error unless IgnoreUnknown is 1/true. Empty segments (a
 * trailing ';') are tolerated. All pairs, known or not, are returned.
 */
export function parseCniArgs(s: string | undefined): Record<string, string> {
  // Null prototype: a key such as __proto__ or constructor is only ever a key.
  const out = Object.create(null) as Record<string, string>;
  if (!s) return out;
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const kv = pair.split('=');
    if (kv.length !== 2 || kv[0] === '') argsError(`invalid pair ${JSON.stringify(pair)}`);
    out[kv[0]] = kv[1];
  }
  let ignoreUnknown = false;
  if (out.IgnoreUnknown !== undefined) {
    const v = out.IgnoreUnknown.toLowerCase();
    if (v === '1' || v === 'true') ignoreUnknown = true;
    else if (v !== '0' && v !== 'false') argsError(`IgnoreUnknown: expected 1, 0, true or false, got ${JSON.stringify(out.IgnoreUnknown)}`);
  }
  if (!ignoreUnknown) {
    const unknown = Object.keys(out).filter((k) => !KNOWN_CNI_ARGS.includes(k));
    if (unknown.length > 0) argsError(`unknown keys ${unknown.join(',')} (set IgnoreUnknown=1 to allow)`);
  }
  if (out.IP !== undefined) {
    for (const ip of out.IP.split(',')) if (!isIp(ip) && !isCidr(ip)) argsError(`IP: not an IP address: ${JSON.stringify(ip)}`);
  }
  if (out.MAC !== undefined && macProblem(out.MAC)) argsError(`MAC: ${macProblem(out.MAC)}: ${JSON.stringify(out.MAC)}`);
  return out;
}

/** Serialises args back to CNI_ARGS form (used by tests and the agent's logs). */
export function formatCniArgs(args: Record<string, string>): string {
  return Object.entries(args).map(([k, v]) => `${k}=${v}`).join(';');
}
