/**
 * scripts/package.sh, the image's runtime tree (what the Containerfile puts
 * at /opt/berth), proven without a container engine: assembled into a temp
 * dir, it holds no tests and no dev dependencies; its relay is static; its
 * `install-cni` installs its own relay; and its agent, started on a
 * simulated host, publishes the conflist and serves a pod, with the addon and
 * the netlink binding loaded from the tree, not from this checkout.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { CniRuntime } from '../demo/runtime';
import { startCluster } from '../sim/cluster';
import { eventually } from '../sim/eventually';
import { podRoundTrip } from './harness/plugin';

const ROOT = join(__dirname, '../..');

function run(cmd: string, args: string[], o: { cwd?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { cwd: o.cwd ?? tmpdir(), maxBuffer: 16 << 20 }, (err, stdout, stderr) => res({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }));
  });
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

test('the packaged tree installs its own relay, which is static, and its agent serves a pod on a simulated host', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'berth-package-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const tree = join(work, 'opt/berth');
  const pkg = await run('bash', [join(ROOT, 'scripts/package.sh'), tree]);
  t.is(pkg.code, 0, pkg.stderr);

  const all = files(tree);
  t.false(all.some((f) => f.endsWith('.test.js')), 'no tests in the tree');
  t.false(all.some((f) => f.startsWith('dist/sim/') || f.startsWith('dist/test/') || f.startsWith('dist/bench/')));
  for (const dev of ['typescript', 'ava', 'esbuild', 'fast-check', 'node-gyp']) t.false(existsSync(join(tree, 'node_modules', dev)), `dev dependency ${dev} left out`);
  const again = await run('bash', [join(ROOT, 'scripts/package.sh'), tree]);
  t.is(again.code, 2, 'a non-empty destination is refused');

  // The relay is static: nothing for the node to provide.
  const relay = join(tree, 'dist/bin/berth');
  const ldd = await run('ldd', [relay]);
  t.regex(ldd.stdout + ldd.stderr, /not a dynamic executable/);

  // install-cni from the tree, run from elsewhere: it copies the tree's relay.
  const binDir = join(work, 'node/opt/cni/bin');
  const confDir = join(work, 'node/etc/cni/net.d');
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const inst = await run(process.execPath, [join(tree, 'dist/agent/main.js'), 'install-cni', '--bin-dir', binDir, '--conf-dir', confDir, '--no-conflist'], { cwd: work });
  t.is(inst.code, 0, inst.stderr);
  t.deepEqual(readFileSync(join(binDir, 'berth')), readFileSync(relay));
  t.deepEqual(readdirSync(confDir), []);

  // The tree's agent on a simulated host: it publishes the conflist and serves a pod through the relay.
  const c = await startCluster({ hosts: 1, poolCidr: '198.18.44.0/24' });
  t.teardown(() => c.teardown());
  const h = c.hosts[0];
  await c.stopAgent(h);
  await c.startAgent(h, { main: join(tree, 'dist/agent/main.js'), args: ['--cni-conf-dir', confDir, '--cni-bin-dir', binDir] });
  const conflist = join(confDir, '10-berth.conflist');
  await eventually(() => { if (!existsSync(conflist)) throw new Error('no conflist'); }, { what: 'the packaged agent to publish its conflist' });
  const result = await podRoundTrip(t, c, new CniRuntime(binDir, conflist), h, 'web-0', 'package0123');
  t.true(String(result.ips[0].address).startsWith('198.18.44.'), result.ips[0].address);

  // What the agent process mapped: the tree's addon and netlink binding, nothing from the checkout.
  const maps = readFileSync(`/proc/${h.pid}/maps`, 'utf8');
  t.true(maps.includes(join(tree, 'agent/native/build/Release/berth_netns.node')), 'the tree\'s addon is loaded');
  t.true(maps.includes(join(tree, 'node_modules/netlink')), 'the tree\'s netlink binding is loaded');
  t.false(maps.includes(join(ROOT, 'agent/native')) || maps.includes(join(ROOT, 'node_modules')), 'nothing from the checkout');
});

test('the Containerfile runs scripts that exist, puts the tree where the manifests run it, and the manifests name the version image.sh tags', (t) => {
  const cf = readFileSync(join(ROOT, 'Containerfile'), 'utf8');
  const scripts = [...cf.matchAll(/scripts\/([a-z0-9-]+\.sh)/g)].map((m) => m[1]);
  t.true(scripts.includes('package.sh') && scripts.includes('build.sh'));
  for (const s of scripts) t.true(existsSync(join(ROOT, 'scripts', s)), `scripts/${s}`);
  t.regex(cf, /^COPY --from=build \/out\/opt\/berth \/opt\/berth$/m);
  t.regex(cf, /scripts\/package\.sh \/out\/opt\/berth/);
  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
  const yaml = readFileSync(join(ROOT, 'deploy/kubernetes/base/agent.yaml'), 'utf8') + readFileSync(join(ROOT, 'deploy/kubernetes/base/controller.yaml'), 'utf8');
  const images = [...yaml.matchAll(/image: (\S+)/g)].map((m) => m[1]);
  t.true(images.length >= 3);
  for (const i of images) t.is(i, `berth:${version}`);
  const commands = [...yaml.matchAll(/command: \[node, (\S+?)[,\]]/g)].map((m) => m[1]);
  t.is(commands.length, images.length, 'every container runs node on a file of the image');
  for (const cmd of commands) t.true(cmd.startsWith('/opt/berth/dist/') && existsSync(join(ROOT, cmd.slice('/opt/berth/'.length))), cmd);
});
