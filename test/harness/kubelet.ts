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
