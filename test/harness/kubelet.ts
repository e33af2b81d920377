/**
 * What a kubelet does to start one container of a pod spec, as far as the
 * manifest-executed tests need it: the container's `command` + `args` with
 * `$(VAR)` expanded from its `env` (literal values, ConfigMap keys, the
 * downward API's spec.nodeName and status.hostIP) and the service
 * environment variables; every path the process sees mapped onto a temp
 * "node root": a path under one of the container's volume mounts goes to
 * the volume (a hostPath to <root>/<hostPath>, a Secret to a directory of
 * its keys), a path under one of the pod's hostPath volumes (a host path the
 * container passes on, as install-cni does with the agent's socket) to
 * <root>/<path>, and the image's /opt/berth to this checkout. Nothing in the
 * manifest is rewritten but paths: a flag renamed in the code and not in the
 * YAML reaches the program as written, and fails.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const IMAGE_ROOT = '/opt/berth';

export interface NodeContext {
  /** The temp directory standing for the node's `/`. */
  root: string;
  /** This checkout: what the image has at /opt/berth. */
  checkout: string;
  configMaps: Record<string, Record<string, string>>;
  secrets: Record<string, Record<string, string>>;
  nodeName: string;
  hostIP: string;
  /** Service environment variables (FOO_SERVICE_HOST, FOO_SERVICE_PORT, …). */
  serviceEnv: Record<string, string>;
}

export interface ProcessSpec { argv: string[]; env: Record<string, string> }

/** Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, anything else stays. */
export function expand(s: string, vars: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => (name === undefined ? '$' : name in vars ? vars[name] : m));
}

export function containerProcess(podSpec: any, container: any, n: NodeContext): ProcessSpec {
  const volumes = new Map<string, any>((podSpec.volumes ?? []).map((v: any) => [v.name, v]));
  const mounts: { at: string; to: string }[] = [];
  for (const m of container.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (!v) throw new Error(`volumeMount ${m.name} names no volume`);
    if (v.hostPath) mounts.push({ at: m.mountPath, to: join(n.root, v.hostPath.path) });
    else if (v.secret) {
      const dir = join(n.root, '.secrets', v.secret.secretName);
      mkdirSync(dir, { recursive: true });
      for (const [k, val] of Object.entries(n.secrets[v.secret.secretName] ?? {})) writeFileSync(join(dir, k), val);
      mounts.push({ at: m.mountPath, to: dir });
    } else throw new Error(`volume ${m.name}: only hostPath and secret volumes are mapped`);
  }
  for (const v of volumes.values()) {
    if (v.hostPath) {
      mounts.push({ at: v.hostPath.path, to: join(n.root, v.hostPath.path) });
      if (v.hostPath.type === 'DirectoryOrCreate') mkdirSync(join(n.root, v.hostPath.path), { recursive: true });
    }
  }
  mounts.push({ at: IMAGE_ROOT, to: n.checkout });
  const mapPath = (p: string) => {
    for (const m of mounts) if (p === m.at || p.startsWith(`${m.at}/`)) return m.to + p.slice(m.at.length);
    return p;
  };
  const mapArg = (a: string) => {
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    return eq > 0 ? `${a.slice(0, eq + 1)}${mapPath(a.slice(eq + 1))}` : mapPath(a);
  };

  const env: Record<string, string> = { ...n.serviceEnv };
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.configMapKeyRef) {
      const { name, key } = e.valueFrom.configMapKeyRef;
      const v = n.configMaps[name]?.[key];
      if (v === undefined) throw new Error(`env ${e.name}: no key ${key} in ConfigMap ${name}`);
      env[e.name] = v;
    } else if (e.valueFrom?.fieldRef) {
      const f = e.valueFrom.fieldRef.fieldPath;
      if (f === 'spec.nodeName') env[e.name] = n.nodeName;
      else if (f === 'status.hostIP' || f === 'status.podIP') env[e.name] = n.hostIP; // hostNetwork: the pod's IP is the node's
      else throw new Error(`env ${e.name}: fieldRef ${f} is not mapped`);
    } else throw new Error(`env ${e.name}: unsupported source`);
  }
  const argv = [...(container.command ?? []), ...(container.args ?? [])].map((a: string) => mapArg(expand(a, env)));
  if (argv.length === 0) throw new Error(`container ${container.name} has no command`);
  return { argv, env };
}

/**
 * What a container runtime does around the process, as far as it decides
 * what the process may do: a wrapper argv to run `containerProcess`'s argv
 * under (after `ip netns exec <node>`), which
 * - gives the process its own mount namespace;
 * - bind-mounts each hostPath volume under /proc (kernel interfaces, such as
 *   /proc/sys/net, which a temp dir cannot stand for) from the real path onto
 *   the temp node root, where containerProcess maps it;
 * - unless `privileged`, makes /proc/sys read-only, as runc does;
 * - bounds the capabilities to `securityContext.capabilities` (drop ALL, add
 *   …; a root process gets exactly its bounding set) with setpriv, and sets
 *   no_new_privs when `allowPrivilegeEscalation: false`.
 * A capability missing from the manifest is missing here. Not emulated:
 * runAsUser, seccomp, AppArmor, readOnlyRootFilesystem.
 */
export function containerWrapper(podSpec: any, container: any, n: NodeContext): string[] {
  const sc = container.securityContext ?? {};
  const volumes = new Map<string, any>((podSpec.volumes ?? []).map((v: any) => [v.name, v]));
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines: string[] = [];
  for (const m of container.volumeMounts ?? []) {
    const hp: string | undefined = volumes.get(m.name)?.hostPath?.path;
    if (!hp || !hp.startsWith('/proc/')) continue;
    const at = join(n.root, hp);
    mkdirSync(at, { recursive: true });
    lines.push(`mount --bind ${q(hp)} ${q(at)}`, ...(m.readOnly ? [`mount -o remount,bind,ro ${q(at)}`] : []));
  }
  if (!sc.privileged) lines.push('mount --bind /proc/sys /proc/sys', 'mount -o remount,bind,ro /proc/sys');
  const setpriv = ['setpriv'];
  if (!sc.privileged) {
    const drop: string[] = sc.capabilities?.drop ?? [];
    if (!drop.includes('ALL')) throw new Error(`container ${container.name}: only capabilities.drop [ALL] is emulated`);
    const add: string[] = sc.capabilities?.add ?? [];
    setpriv.push('--bounding-set', ['-all', ...add.map((c) => `+${c.toLowerCase()}`)].join(','), '--inh-caps', '-all');
  }
  if (sc.allowPrivilegeEscalation === false) setpriv.push('--no-new-privs');
  lines.push(`exec ${setpriv.join(' ')} -- "$@"`);
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-ec', lines.join('\n'), 'container'];
}

/** The capabilities a container's securityContext adds (after drop ALL). */
export function containerCapabilities(container: any): string[] {
  return container.securityContext?.capabilities?.add ?? [];
}

/** Linux capability numbers (linux/capability.h), in order. */
const CAPS = ['CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE',
  'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE', 'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE', 'AUDIT_WRITE',
  'AUDIT_CONTROL', 'SETFCAP', 'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF', 'CHECKPOINT_RESTORE'];

/** A process's effective capabilities by name (from /proc/<pid>/status CapEff), sorted. */
export function effectiveCapabilities(status: string): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (!hex) throw new Error('no CapEff line');
  const mask = BigInt(`0x${hex}`);
  return CAPS.filter((_, i) => (mask >> BigInt(i)) & 1n).sort();
}
