#!/usr/bin/env node
/** The berthctl bin: everything lives in run() (./run.ts); this only wires the process. */
import { run } from './run';

// `berthctl leases ls | head -1` closes the pipe early; that is not an error worth a stack.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

run(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env }).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => { process.stderr.write(`berthctl: internal error: ${e instanceof Error ? e.message : String(e)}\n`); process.exitCode = 1; },
);
