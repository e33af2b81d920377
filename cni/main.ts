/**
 * Entry point of the `berth` CNI binary (bundled to dist/bin/berth by
 * scripts/bundle-cni.mjs). Wires cni/plugin.ts to the real process and
 * nothing else: the plugin must start in tens of milliseconds, so only Node
 * built-ins and Berth's protocol code may be reachable from here.
 *
 * stdin, stdout and stderr go through fs.readSync/fs.writeSync on fds 0-2,
 * not process.stdin/stdout/stderr: on a pipe those are net.Sockets, and
 * creating them showed up as milliseconds of CPU in --cpu-prof, where the
 * sync calls cost next to nothing. Sync writes also leave nothing buffered
 * at exit.
 */
import { fstatSync, readSync, writeSync } from 'node:fs';
import type * as Tty from 'node:tty';
import { BerthError } from '../common/errors';
import { runPlugin } from './plugin';

const CHUNK = 64 * 1024;

/**
 * isatty(0). node:tty loads node:net and the stream modules (~3 ms), so it is
 * asked only when stdin is a character device; a runtime gives a pipe.
 */
function stdinIsTTY(): boolean {
  try {
    if (!fstatSync(0).isCharacterDevice()) return false;
  } catch {
    return false; // the read below reports what is wrong with fd 0
  }
  return (require('node:tty') as typeof Tty).isatty(0);
}

/**
 * Whole stdin. Sync reads, except when the runtime handed us a non-blocking
 * pipe (EAGAIN): then what was read so far is kept and the stream reader,
 * which waits in the event loop, takes the rest.
 */
function readStdin(): Promise<string> {
  if (stdinIsTTY()) return Promise.resolve('');
  const chunks: Buffer[] = [];
  for (;;) {
    const buf = Buffer.allocUnsafe(CHUNK);
    let n: number;
    try {
      n = readSync(0, buf, 0, CHUNK, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return readStdinStream(chunks);
      return Promise.reject(e);
    }
    if (n === 0) break;
    chunks.push(buf.subarray(0, n));
  }
  return Promise.resolve(Buffer.concat(chunks).toString('utf8'));
}

function readStdinStream(chunks: Buffer[]): Promise<string> {
  return new Promise((resolve, reject) => {
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** Blocks the thread for `ms`: the only sync sleep Node has. */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Writes all of `s` to `fd` or throws. Loops on short writes, and on EAGAIN
 * (a non-blocking pipe that is full) waits 1 ms for the reader and retries;
 * results are far below a pipe's 64 KiB, so that is rare.
 */
function writeAll(fd: number, s: string): void {
  const buf = Buffer.from(s, 'utf8');
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      pause(1);
    }
  }
}

/**
 * The first failed write to a fd (EPIPE: the runtime stopped reading) ends
 * all output to it: nobody is left to read the rest, and an unhandled stream
 * error would print a stack instead. A lost stdout fails the run, since the
 * result was not delivered.
 */
let stdoutLost = false;
let stderrLost = false;

const stderr = (s: string): void => {
  if (stderrLost) return;
  try {
    writeAll(2, s);
  } catch {
    stderrLost = true;
  }
};

void runPlugin({
  env: process.env,
  readStdin,
  stdout: (s) => {
    if (stdoutLost) throw new BerthError('IO', 'stdout: closed', 'output not delivered');
    try {
      writeAll(1, s);
    } catch (e) {
      stdoutLost = true;
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      stderr(`berth: stdout: ${code}; output not delivered\n`);
      // The plugin undoes an ADD whose result can't be delivered.
      throw new BerthError('IO', `stdout: ${code}`, 'output not delivered');
    }
  },
  stderr,
}).then((code) => {
  process.exitCode = code !== 0 ? code : stdoutLost ? 1 : 0;
});
