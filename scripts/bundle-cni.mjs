#!/usr/bin/env node
// Bundles the `berth` CNI plugin (cni/main.ts) into one self-contained file,
// dist/bin/berth, mode 0755, with a node shebang. The plugin runs once per pod
// event, so start-up time matters: the bundle may hold only Node built-ins and
// Berth's own protocol code. The build fails if etcd3, grpc or protobufjs get
// in (they cost ~200 ms of start-up; see /work/shared/STYLE.md field notes).
//
// Usage: node scripts/bundle-cni.mjs [--outfile PATH]
// The output is written to a temp name and renamed, so concurrent builds
// (parallel test workers) never expose a half-written binary.
import { build } from 'esbuild';
import { chmodSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const i = process.argv.indexOf('--outfile');
const outfile = resolve(i >= 0 ? process.argv[i + 1] : join(root, 'dist/bin/berth'));
const tmp = `${outfile}.${process.pid}.tmp`;
const FORBIDDEN = /(^|\/)node_modules\/(etcd3|@grpc|grpc|protobufjs|cockatiel|netlink)\//;

mkdirSync(dirname(outfile), { recursive: true });
try {
  const res = await build({
    absWorkingDir: root,
    entryPoints: [join(root, 'cni/main.ts')],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: true,
    legalComments: 'none',
    sourcemap: false,
    metafile: true,
    logLevel: 'warning',
    banner: { js: '#!/usr/bin/env node' },
  });
  const inputs = Object.keys(res.metafile.inputs);
  const bad = inputs.filter((p) => FORBIDDEN.test(p));
  if (bad.length > 0) {
    throw new Error(`bundle-cni: heavy modules reached the CNI plugin: ${bad.join(', ')}`);
  }
  chmodSync(tmp, 0o755);
  renameSync(tmp, outfile);
  if (!process.env.BERTH_QUIET) console.error(`bundle-cni: ${outfile} (${inputs.length} inputs)`);
} catch (e) {
  rmSync(tmp, { force: true });
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
}
