/**
 * A container runtime's CNI half, as small as it gets: read a conflist from
 * the conf dir, exec each plugin from the bin dir with the CNI_* environment
 * and the plugin's config on stdin (cniVersion and name injected, prevResult
 * threaded through the chain), in order for ADD/CHECK and reverse for DEL.
 * This is what libcni does for kubelet, so the demo and the end-to-end tests
 * exercise the installed plugin exactly as a node would.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Attachment {
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS pairs, e.g. {K8S_POD_NAMESPACE: 'demo', K8S_POD_NAME: 'web-0'}. */
  args?: Record<string, string>;
}

export interface CniOutcome {
  code: number | null;
  result?: any;
  error?: { code: number; msg: string; details?: string };
  stderr: string;
}

export class CniRuntime {
  constructor(readonly binDir: string, readonly conflistPath: string) {}

  add(a: Attachment): Promise<CniOutcome> { return this.run('ADD', a); }
  check(a: Attachment, prevResult: unknown): Promise<CniOutcome> { return this.run('CHECK', a, prevResult); }
  del(a: Attachment, prevResult?: unknown): Promise<CniOutcome> { return this.run('DEL', a, prevResult); }

  private async run(verb: 'ADD' | 'CHECK' | 'DEL', a: Attachment, prevResult?: unknown): Promise<CniOutcome> {
    const list = JSON.parse(readFileSync(this.conflistPath, 'utf8')) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
    const plugins = verb === 'DEL' ? [...list.plugins].reverse() : list.plugins;
    let prev = prevResult;
    let last: CniOutcome = { code: 0, stderr: '' };
    for (const plugin of plugins) {
      const conf: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
      if (prev !== undefined) conf.prevResult = prev;
      last = await execPlugin(join(this.binDir, String(plugin.type)), {
        CNI_COMMAND: verb,
        CNI_CONTAINERID: a.containerId,
        CNI_NETNS: a.netns,
        CNI_IFNAME: a.ifName,
        CNI_ARGS: Object.entries(a.args ?? {}).map(([k, v]) => `${k}=${v}`).join(';'),
        CNI_PATH: this.binDir,
      }, JSON.stringify(conf));
      if (last.code !== 0) return last;
      if (verb === 'ADD') prev = last.result;
    }
    return verb === 'ADD' ? { ...last, result: prev } : last;
  }
}

function execPlugin(bin: string, env: Record<string, string>, stdin: string): Promise<CniOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d; });
    child.stderr.on('data', (d: Buffer) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      let json: any;
      try { json = out.trim() ? JSON.parse(out) : undefined; } catch { json = undefined; }
      if (code === 0) resolve({ code, result: json, stderr: err });
      else resolve({ code, error: json ?? { code: -1, msg: out.trim() || err.trim() }, stderr: err });
    });
    child.stdin.end(stdin);
  });
}
