/**
 * Runs the `berth` relay binary exactly as a runtime does: a clean
 * environment with the CNI_* variables, the network configuration on stdin,
 * stdout/stderr/exit status captured. Async, so a fake agent in the same
 * process can answer.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');
export const BIN = join(ROOT, 'dist/bin/berth');
/** The relay built with ASan and UBSan (scripts/build-relay.sh asan), for fuzzing. */
export const ASAN_BIN = join(ROOT, 'dist/bin/berth-asan');

const built = new Map<string, Promise<void>>();
/** Builds dist/bin/berth (or, with 'asan', the sanitizer build) from the current sources once per process. */
export function ensureRelay(mode: 'static' | 'asan' = 'static'): Promise<void> {
  const out = mode === 'asan' ? ASAN_BIN : BIN;
  let p = built.get(mode);
  if (!p) {
    p = new Promise<void>((res, rej) => {
      execFile('bash', [join(ROOT, 'scripts/build-relay.sh'), mode], (err, _o, stderr) => {
        if (err) rej(new Error(`relay build failed: ${stderr}`));
        else if (!existsSync(out)) rej(new Error('relay build produced no binary'));
        else res();
      });
    });
    built.set(mode, p);
  }
  return p;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, or undefined when empty. */
  json?: any;
  signal?: string | null;
  /** Killed after ExecOptions.timeoutMs. */
  timedOut?: boolean;
}

export interface ExecOptions {
  /** SIGKILL the child after this long (default: no limit). */
  timeoutMs?: number;
}

export function execPlugin(env: Record<string, string | undefined>, stdin: string | object): Promise<ExecResult> {
  const clean: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) clean[k] = v;
  return execWithStdin(BIN, [], clean, stdin);
}

/** Spawns cmd with exactly `env`, writes stdin, and collects stdout (parsed as JSON when it is). */
export function execWithStdin(cmd: string, args: string[], env: Record<string, string>, stdin: string | Buffer | object, o: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let timedOut = false;
    const timer = o.timeoutMs === undefined ? undefined : setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, o.timeoutMs);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: unknown;
      if (stdout.trim() !== '') {
        try {
          json = JSON.parse(stdout);
        } catch {
          json = undefined;
        }
      }
      res({ code, stdout, stderr, json, signal, timedOut });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(typeof stdin === 'string' || Buffer.isBuffer(stdin) ? stdin : JSON.stringify(stdin));
  });
}
