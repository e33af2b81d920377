/**
 * The pod set's netlink updates against a real kernel, in a namespace of
 * our own: what the batch writes is exactly what `nft -f` of the same
 * tables would hold (a verifying pass reads it back and finds it right),
 * and a refused batch falls back to the whole file.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { firewallWant, type FirewallInput } from '../agent/firewall';
import { FirewallSync, nftPath } from '../agent/kernel/firewall';
import { openNetfilterSocketIn, warmThreadPool } from '../agent/kernel/netns';
import { NftSetSocket } from '../agent/kernel/nft-setelem';
import { KernelError } from '../agent/kernel/nl';
import { NFPROTO_BRIDGE, ifnameIpv4Key } from '../agent/nft-setelem';
import { Lab, nsExec, type Netns } from '../sim/netns';

const base: FirewallInput = { underlayIp: '198.19.0.11', pools: ['198.18.0.0/16'], hosts: ['198.19.0.12'], noMasquerade: [], locals: [], isolation: true };
const pods = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ veth: `bth${(from + i).toString(16).padStart(8, '0')}`, ip: `198.18.${(from + i) >> 8}.${(from + i) & 255}` }));

/** nft inside ns, recording what it was asked to do. */
function nftIn(ns: Netns) {
  const calls: string[] = [];
  const run = (args: string[], stdin?: string) => new Promise<string>((resolve, reject) => {
    calls.push(args.join(' '));
    const c = execFile('ip', ['netns', 'exec', ns.name, nftPath()!, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }, (e, out, err) => (e ? reject(new Error(err || e.message)) : resolve(out)));
    // nft exits without reading stdin for `list`: an EPIPE there is no error of ours.
    c.stdin!.on('error', () => undefined);
    c.stdin!.end(stdin ?? '');
  });
  return { calls, run };
}

async function setup(t: ExecutionContext) {
  const lab = new Lab();
  t.teardown(() => lab.teardown());
  const ns = lab.netns('nft');
  await warmThreadPool();
  const sock = new NftSetSocket(openNetfilterSocketIn(ns.path));
  t.teardown(() => sock.close());
  const nft = nftIn(ns);
  return { ns, sock, nft, fw: new FirewallSync(nft.run, sock.apply) };
}

const listed = (ns: Netns) => nsExec(ns, nftPath()!, 'list', 'set', 'bridge', 'berth', 'pods');

test('pod changes go to the kernel as set elements, and a verifying pass finds exactly what nft -f would have written', async (t) => {
  const { ns, nft, fw } = await setup(t);
  t.is(await fw.sync(firewallWant({ ...base, locals: pods(2) }), { verify: true }), 1);
  t.deepEqual(nft.calls, ['list ruleset', '-f -'], 'the first sync writes the whole file');
  nft.calls.length = 0;

  t.is(await fw.sync(firewallWant({ ...base, locals: pods(3) }), { verify: false }), 1);
  t.is(await fw.sync(firewallWant({ ...base, locals: pods(3).slice(1) }), { verify: false }), 1);
  t.deepEqual(nft.calls, [], 'an added and a removed pod spawn no nft');
  t.regex(listed(ns), /"bth00000001" \. 198\.18\.0\.1/);
  t.regex(listed(ns), /"bth00000002" \. 198\.18\.0\.2/);
  t.notRegex(listed(ns), /bth00000000/);
  t.is(await fw.sync(firewallWant({ ...base, locals: pods(3).slice(1) }), { verify: true }), 0, 'the listing matches the wanted tables: no rewrite');
  t.deepEqual(nft.calls, ['list ruleset']);
});

test('thousands of pods at once are split over several messages of one batch', async (t) => {
  const { ns, nft, fw } = await setup(t);
  await fw.sync(firewallWant(base), { verify: true });
  nft.calls.length = 0;
  const many = pods(2500);
  t.is(await fw.sync(firewallWant({ ...base, locals: many }), { verify: false }), 1);
  t.deepEqual(nft.calls, []);
  t.is((listed(ns).match(/"bth/g) ?? []).length, 2500);
  t.is(await fw.sync(firewallWant({ ...base, locals: many }), { verify: true }), 0);
});

test('a batch the kernel refuses changes nothing, and the sync falls back to the whole file', async (t) => {
  const { ns, sock, nft, fw } = await setup(t);
  await fw.sync(firewallWant({ ...base, locals: pods(2) }), { verify: true });
  // Behind the agent's back: the element it remembers is gone.
  nsExec(ns, nftPath()!, 'delete', 'element', 'bridge', 'berth', 'pods', '{ "bth00000000" . 198.18.0.0 }');
  const err = await t.throwsAsync(sock.apply({ family: NFPROTO_BRIDGE, table: 'berth', set: 'pods', remove: [ifnameIpv4Key('bth00000000', '198.18.0.0')], add: [ifnameIpv4Key('bth00000009', '198.18.0.9')] }));
  t.true(err instanceof KernelError && err.errno === 'ENOENT', String(err));
  t.notRegex(listed(ns), /bth00000009/, 'the addition in the refused batch was not applied');
  nft.calls.length = 0;
  t.is(await fw.sync(firewallWant({ ...base, locals: [...pods(2).slice(1), { veth: 'bth00000009', ip: '198.18.0.9' }] }), { verify: false }), 1);
  t.deepEqual(nft.calls, ['list ruleset', '-f -'], 'refused as elements, then written whole');
  t.regex(listed(ns), /"bth00000009" \. 198\.18\.0\.9/);
  t.is(await fw.sync(firewallWant({ ...base, locals: [...pods(2).slice(1), { veth: 'bth00000009', ip: '198.18.0.9' }] }), { verify: true }), 0);
});

test('with no bridge table at all the batch is refused, not half-applied', async (t) => {
  const { sock } = await setup(t);
  const err = await t.throwsAsync(sock.apply({ family: NFPROTO_BRIDGE, table: 'berth', set: 'pods', remove: [], add: [ifnameIpv4Key('bth1', '198.18.0.1')] }));
  t.true(err instanceof KernelError && err.errno === 'ENOENT', String(err));
});
