/**
 * Entry point of the `berth` CNI binary (bundled to dist/bin/berth by
 * scripts/bundle-cni.mjs). Wires cni/plugin.ts to the real process and
 * nothing else: the plugin must start in tens of milliseconds, so only Node
 * built-ins and Berth's protocol code may be reachable from here.
 */
import { runPlugin } from './plugin';

function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return Promise.resolve('');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

void runPlugin({
  env: process.env,
  readStdin,
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
}).then((code) => {
  process.exitCode = code;
});
