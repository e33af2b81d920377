/**
 * `berth-agent install-cni`: puts the `berth` plugin and its conflist on a
 * node, as the DaemonSet's init container does (docs/kubernetes.md).
 *
 * - `conflistText` is pure: the inputs give the file's bytes, always the same.
 * - `installCni` writes each file only when its bytes or mode differ from what
 *   is there, through a temp file in the same directory, fsync and rename, so
 *   a runtime never reads a half-written conflist or execs a half-written
 *   binary, and a rerun with the same inputs touches nothing (same inode,
 *   same mtime).
 * - `uninstallCni` removes exactly the two files it owns.
 * - With `conflist: false` (`--no-conflist`) only the plugin is installed,
 *   and a conflist of ours left in the conf dir is removed: the agent
 *   publishes it itself once it is ready (agent/conflist-publish.ts), and
 *   until then the runtime must see no Berth network.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, chmodSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { BerthError } from '../common/errors';
import { isSupportedVersion } from '../common/cni-version';
import { POD_ANNOTATIONS_CAPABILITY } from '../common/cni-config';

export const CONFLIST_NAME = '10-berth.conflist';
export const PLUGIN_NAME = 'berth';
export const DEFAULT_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CONF_DIR = '/etc/cni/net.d';
export const DEFAULT_CNI_VERSION = '1.0.0';
/** Reference plugins chained after berth when the bin dir has them, in this order. */
export const CHAINABLE = ['portmap', 'bandwidth'] as const;
export type Chainable = (typeof CHAINABLE)[number];

export interface ConflistInputs {
  cniVersion: string;
  /** The network's name (the conflist's `name`). */
  network: string;
  pool: string;
  agentSocket: string;
  journalDir: string;
  mtu?: number;
  /** Chained plugins to add; order is always CHAINABLE's. */
  chain: readonly Chainable[];
}

/** The conflist's bytes for these inputs (pretty JSON, trailing newline). */
export function conflistText(i: ConflistInputs): string {
  if (!isSupportedVersion(i.cniVersion)) throw new BerthError('InvalidConfig', `--cni-version ${i.cniVersion}`, 'not a CNI version berth supports');
  // The pod annotations capability: the runtime passes them in runtimeConfig (berth.io/ip, docs/kubernetes.md).
  const berth: Record<string, unknown> = {
    type: PLUGIN_NAME, pool: i.pool, agentSocket: i.agentSocket, journalDir: i.journalDir, capabilities: { [POD_ANNOTATIONS_CAPABILITY]: true },
  };
  if (i.mtu !== undefined) berth.mtu = i.mtu;
  const plugins: Record<string, unknown>[] = [berth];
  if (i.chain.includes('portmap')) plugins.push({ type: 'portmap', capabilities: { portMappings: true } });
  if (i.chain.includes('bandwidth')) plugins.push({ type: 'bandwidth', capabilities: { bandwidth: true } });
  return JSON.stringify({ cniVersion: i.cniVersion, name: i.network, plugins }, null, 2) + '\n';
}

export interface InstallOptions extends Omit<ConflistInputs, 'chain'> {
  /** The static plugin to copy (dist/bin/berth). */
  source: string;
  binDir: string;
  confDir: string;
  /** false: install the plugin only, and remove our conflist if one is there (default true). */
  conflist?: boolean;
}

export interface InstallOutcome {
  /** Paths written by this run (empty when everything already matched). */
  written: string[];
  /** Paths removed by this run (a conflist of ours, with conflist: false). */
  removed?: string[];
  /** Chained plugins found in the bin dir. */
  chain: Chainable[];
}

/** Installs the plugin and the conflist; see the file comment. */
export function installCni(o: InstallOptions): InstallOutcome {
  for (const [dir, flag] of [[o.binDir, '--bin-dir'], [o.confDir, '--conf-dir']] as const) {
    if (!isDir(dir)) throw new BerthError('InvalidConfig', `${flag} ${dir}`, 'not a directory');
  }
  let plugin: Buffer;
  try {
    plugin = readFileSync(o.source);
  } catch (e) {
    throw new BerthError('InvalidConfig', `--plugin ${o.source}`, `cannot read the plugin: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const chain = CHAINABLE.filter((p) => existsSync(join(o.binDir, p)));
  const text = conflistText({ ...o, chain });
  const written: string[] = [];
  if (replaceIfDifferent(join(o.binDir, PLUGIN_NAME), plugin, 0o755)) written.push(join(o.binDir, PLUGIN_NAME));
  if (o.conflist === false) return { written, chain, removed: removeConflist(o.confDir) };
  // The conflist last: a runtime that sees it finds the binary in place.
  if (replaceIfDifferent(join(o.confDir, CONFLIST_NAME), Buffer.from(text), 0o644)) written.push(join(o.confDir, CONFLIST_NAME));
  return { written, chain };
}

/** Removes the conflist, then the plugin; returns the paths removed. Nothing else is touched. */
export function uninstallCni(o: { binDir: string; confDir: string }): string[] {
  const removed: string[] = [];
  for (const p of [join(o.confDir, CONFLIST_NAME), join(o.binDir, PLUGIN_NAME)]) {
    if (existsSync(p)) {
      rmSync(p);
      removed.push(p);
    }
  }
  return removed;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Atomically replaces `path` with `data` and `mode` unless it already holds exactly that. True when written. */
function replaceIfDifferent(path: string, data: Buffer, mode: number): boolean {
  try {
    const st = statSync(path);
    if (st.isFile() && (st.mode & 0o7777) === mode && st.size === data.length && readFileSync(path).equals(data)) return false;
  } catch {
    /* absent: write it */
  }
  const dir = join(path, '..');
  // The temp file must live in the target's own directory, not only for
  // rename(2) to be atomic: containerd 1.6 reloads its CNI conf dir on
  // fsnotify events but skips CREATE, which is all a file renamed in from
  // elsewhere produces (IN_MOVED_TO); a rename inside the dir also yields a
  // RENAME of the temp name, which triggers the reload (test/cri-containerd.test.ts).
  const tmp = join(dir, `.${PLUGIN_NAME}-install-${process.pid}.tmp`);
  try {
    const fd = openSync(tmp, 'w', mode);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, mode); // openSync's mode is filtered by the umask
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new BerthError('InvalidConfig', path, `cannot write: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
  return true;
}

/** `replaceIfDifferent` for the agent's conflist publication: same atomic write, same no-op when the bytes match. */
export const writeIfDifferent = replaceIfDifferent;

/** Removes `<confDir>/10-berth.conflist` if it is there, nothing else; returns the paths removed. */
export function removeConflist(confDir: string): string[] {
  const p = join(confDir, CONFLIST_NAME);
  try {
    rmSync(p);
    return [p];
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new BerthError('InvalidConfig', p, `cannot remove: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
