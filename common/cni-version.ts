/**
 * CNI spec versions and result conversion. Pure: no I/O, no imports beyond
 * the error table and the internal result type.
 *
 * Berth keeps one internal result, the CNI 1.1 shape of common/cni-types.ts,
 * and converts it only on the way out (CNI SPEC.md "Section 5: Result
 * Types"; the per-version layout follows libcni's types/040 and types/100):
 *
 *   0.3.0, 0.3.1, 0.4.0  ips[].version ("4" | "6") is present; interfaces
 *                        have name/mac/sandbox only; routes dst/gw only.
 *   1.0.0                ips[].version is dropped (spec-upgrades.md: "the
 *                        version field in the interfaces array was redundant
 *                        and is removed"); no mtu fields yet.
 *   1.1.0                adds interfaces[].mtu and routes[].mtu (and
 *                        socketPath, pciID, advmss, priority, table, scope,
 *                        which Berth never produces and drops on parse).
 *
 * The reverse direction, `parseResult`, reads a prevResult of any supported
 * version back into the internal shape; fields the source version cannot
 * carry are simply absent.
 */
import { BerthError } from './errors';
import type { CniDns, CniInterface, CniIpConfig, CniResult, CniRoute } from './cni-types';

/** Ascending; VERSION prints them in this order. */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = '1.1.0';

export function isSupportedVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

const SEMVER = /^(\d+)\.(\d+)\.(\d+)$/;

/** Compares two x.y.z versions numerically; throws Decode on anything else. */
export function compareVersions(a: string, b: string): number {
  const pa = SEMVER.exec(a);
  const pb = SEMVER.exec(b);
  if (!pa || !pb) throw new BerthError('Decode', `not a x.y.z version: ${JSON.stringify(pa ? b : a)}`);
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export function versionAtLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}

/** The VERSION verb's output (SPEC.md "VERSION: probe plugin version support"). */
export function versionInfo(cniVersion: CniVersion = LATEST_VERSION): { cniVersion: string; supportedVersions: string[] } {
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

/** "4" or "6" for an address with or without /prefix. */
export function ipFamily(address: string): '4' | '6' {
  return address.includes(':') ? '6' : '4';
}

const isV0 = (v: CniVersion) => v.startsWith('0.');
const hasMtu = (v: CniVersion) => v === '1.1.0';

/** Internal result → the JSON object a runtime of `version` expects. */
export function toVersion(result: CniResult, version: CniVersion): Record<string, unknown> {
  const out: Record<string, unknown> = { cniVersion: version };
  if (result.interfaces && result.interfaces.length > 0) {
    out.interfaces = result.interfaces.map((i) => {
      const o: Record<string, unknown> = { name: i.name };
      if (i.mac !== undefined) o.mac = i.mac;
      if (hasMtu(version) && i.mtu !== undefined) o.mtu = i.mtu;
      if (i.sandbox !== undefined) o.sandbox = i.sandbox;
      return o;
    });
  }
  if (result.ips && result.ips.length > 0) {
    out.ips = result.ips.map((ip) => {
      const o: Record<string, unknown> = {};
      if (isV0(version)) o.version = ipFamily(ip.address);
      o.address = ip.address;
      if (ip.gateway !== undefined) o.gateway = ip.gateway;
      if (ip.interface !== undefined) o.interface = ip.interface;
      return o;
    });
  }
  if (result.routes && result.routes.length > 0) {
    out.routes = result.routes.map((r) => {
      const o: Record<string, unknown> = { dst: r.dst };
      if (r.gw !== undefined) o.gw = r.gw;
      if (hasMtu(version) && r.mtu !== undefined) o.mtu = r.mtu;
      return o;
    });
  }
  if (result.dns && Object.keys(result.dns).length > 0) out.dns = { ...result.dns };
  return out;
}

/** What survives a trip through `version`: the internal result minus what that version cannot carry. */
export function projectToVersion(result: CniResult, version: CniVersion): CniResult {
  return parseResult(toVersion(result, version), version);
}

// ---- parsing -------------------------------------------------------------

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Syntactic IPv4/IPv6 check, equal to node:net isIP (property-tested) but with no node: import. */
export function isIp(s: string): boolean {
  if (IPV4.test(s)) return true;
  return isIpv6(s);
}

function isIpv6(s: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length < 2) return false;
  let head = s;
  let groupsNeeded = 8;
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.slice(lastColon + 1).includes('.')) {
    if (!IPV4.test(s.slice(lastColon + 1))) return false;
    head = s.slice(0, lastColon + 1) + '0'; // placeholder group, counts as two below
    groupsNeeded = 7;
  }
  const dbl = head.split('::');
  if (dbl.length > 2) return false;
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const left = groups(dbl[0]);
  const right = dbl.length === 2 ? groups(dbl[1]) : [];
  const all = [...left, ...right];
  if (!all.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return false;
  return dbl.length === 2 ? all.length < groupsNeeded : all.length === groupsNeeded;
}

export function isCidr(s: string): boolean {
  const slash = s.indexOf('/');
  if (slash < 0) return false;
  const ip = s.slice(0, slash);
  const len = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(len) || !isIp(ip)) return false;
  return Number(len) <= (ipFamily(ip) === '6' ? 128 : 32);
}

const MAC = /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/;
export function isMac(s: string): boolean {
  return MAC.test(s);
}

function bad(path: string, why: string): never {
  throw new BerthError('Decode', `${path}: ${why}`);
}

function obj(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(path, 'expected an object');
  return v as Record<string, unknown>;
}

function arr(v: unknown, path: string): unknown[] {
  if (!Array.isArray(v)) bad(path, 'expected an array');
  return v;
}

function str(v: unknown, path: string): string {
  if (typeof v !== 'string') bad(path, 'expected a string');
  return v;
}

function optStr(o: Record<string, unknown>, k: string, path: string): string | undefined {
  return o[k] === undefined ? undefined : str(o[k], `${path}.${k}`);
}

function optInt(o: Record<string, unknown>, k: string, path: string, min: number, max: number): number | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(`${path}.${k}`, `expected an integer in [${min}, ${max}]`);
  return v;
}

function strList(o: Record<string, unknown>, k: string, path: string): string[] | undefined {
  if (o[k] === undefined) return undefined;
  return arr(o[k], `${path}.${k}`).map((x, i) => str(x, `${path}.${k}[${i}]`));
}

export function parseDns(v: unknown, path = 'dns'): CniDns {
  const o = obj(v, path);
  const dns: CniDns = {};
  const nameservers = strList(o, 'nameservers', path);
  if (nameservers) {
    nameservers.forEach((n, i) => isIp(n) || bad(`${path}.nameservers[${i}]`, `not an IP address: ${JSON.stringify(n)}`));
    dns.nameservers = nameservers;
  }
  const domain = optStr(o, 'domain', path);
  if (domain !== undefined) dns.domain = domain;
  const search = strList(o, 'search', path);
  if (search) dns.search = search;
  const options = strList(o, 'options', path);
  if (options) dns.options = options;
  return dns;
}

/**
 * Reads a result (typically a prevResult) written for `version` into the
 * internal shape. Throws BerthError('Decode') naming the offending path.
 */
export function parseResult(raw: unknown, version: CniVersion, path = 'prevResult'): CniResult {
  const o = obj(raw, path);
  const result: CniResult = {};
  if (o.interfaces !== undefined) {
    result.interfaces = arr(o.interfaces, `${path}.interfaces`).map((x, i): CniInterface => {
      const p = `${path}.interfaces[${i}]`;
      const io = obj(x, p);
      const iface: CniInterface = { name: str(io.name, `${p}.name`) };
      const mac = optStr(io, 'mac', p);
      if (mac !== undefined) iface.mac = mac;
      const mtu = hasMtu(version) ? optInt(io, 'mtu', p, 0, 0x7fffffff) : undefined;
      if (mtu !== undefined) iface.mtu = mtu;
      const sandbox = optStr(io, 'sandbox', p);
      if (sandbox !== undefined) iface.sandbox = sandbox;
      return iface;
    });
  }
  const nIfaces = result.interfaces?.length ?? 0;
  if (o.ips !== undefined) {
    result.ips = arr(o.ips, `${path}.ips`).map((x, i): CniIpConfig => {
      const p = `${path}.ips[${i}]`;
      const io = obj(x, p);
      const address = str(io.address, `${p}.address`);
      if (!isCidr(address)) bad(`${p}.address`, `not an address in CIDR notation: ${JSON.stringify(address)}`);
      if (io.version !== undefined) {
        // Required by 0.3.x/0.4.0 writers, ignored (but tolerated) by 1.x readers, as libcni does.
        const fam = str(io.version, `${p}.version`);
        if (fam !== ipFamily(address)) bad(`${p}.version`, `${JSON.stringify(fam)} does not match ${address}`);
      } else if (isV0(version)) {
        bad(`${p}.version`, `required by cniVersion ${version}`);
      }
      const ip: CniIpConfig = { address };
      const gateway = optStr(io, 'gateway', p);
      if (gateway !== undefined) {
        if (!isIp(gateway)) bad(`${p}.gateway`, `not an IP address: ${JSON.stringify(gateway)}`);
        ip.gateway = gateway;
      }
      const idx = optInt(io, 'interface', p, 0, 0x7fffffff);
      if (idx !== undefined) {
        if (idx >= nIfaces) bad(`${p}.interface`, `index ${idx} out of range (${nIfaces} interfaces)`);
        ip.interface = idx;
      }
      return ip;
    });
  }
  if (o.routes !== undefined) {
    result.routes = arr(o.routes, `${path}.routes`).map((x, i): CniRoute => {
      const p = `${path}.routes[${i}]`;
      const ro = obj(x, p);
      const dst = str(ro.dst, `${p}.dst`);
      if (!isCidr(dst)) bad(`${p}.dst`, `not a CIDR: ${JSON.stringify(dst)}`);
      const route: CniRoute = { dst };
      const gw = optStr(ro, 'gw', p);
      if (gw !== undefined) {
        if (!isIp(gw)) bad(`${p}.gw`, `not an IP address: ${JSON.stringify(gw)}`);
        route.gw = gw;
      }
      const mtu = hasMtu(version) ? optInt(ro, 'mtu', p, 0, 0x7fffffff) : undefined;
      if (mtu !== undefined) route.mtu = mtu;
      return route;
    });
  }
  if (o.dns !== undefined) {
    const dns = parseDns(o.dns, `${path}.dns`);
    if (Object.keys(dns).length > 0) result.dns = dns;
  }
  return result;
}
