import test from 'ava';
import { firewallScript, firewallWant, type FirewallInput } from '../firewall';
import { FirewallSync } from './firewall';

const input: FirewallInput = {
  underlayIp: '198.19.0.11', pools: ['198.18.0.0/24'], hosts: ['198.19.0.12'], noMasquerade: [], locals: [{ ip: '198.18.0.5', veth: 'bth00000001' }], isolation: true,
};

/** An nft that keeps one ruleset: `-f -` replaces it with the file's tables, `list ruleset` prints them (indented as nft does). */
function fakeNft() {
  const calls: string[] = [];
  let ruleset = '';
  const run = async (args: string[], stdin?: string) => {
    calls.push(args.join(' '));
    if (args[0] === 'list') return ruleset;
    const blocks: string[][] = [];
    let depth = 0;
    for (const l of (stdin ?? '').split('\n')) {
      if (depth === 0 && !/^table \S+ \S+ \{$/.test(l)) continue;
      if (depth === 0) blocks.push([]);
      blocks[blocks.length - 1].push(l);
      depth += (l.match(/\{/g) ?? []).length - (l.match(/\}/g) ?? []).length;
    }
    ruleset = blocks.map((b) => b.map((l, i) => (i === 0 || i === b.length - 1 ? l : `\t${l}`)).join('\n')).join('\n');
    return '';
  };
  return { calls, run, tamper: () => { ruleset = ''; } };
}

test('a pass with unchanged tables runs nothing; a change applies without listing; verify reads back', async (t) => {
  const nft = fakeNft();
  const fw = new FirewallSync(nft.run);
  const want = firewallWant(input);
  t.is(await fw.sync(want, { verify: false }), 1, 'first sync: nothing live yet');
  t.deepEqual(nft.calls, ['list ruleset', '-f -']);
  nft.calls.length = 0;
  t.is(await fw.sync(want, { verify: false }), 0);
  t.deepEqual(nft.calls, [], 'an event pass with the same tables spawns no nft');
  t.is(await fw.sync(want, { verify: true }), 0);
  t.deepEqual(nft.calls, ['list ruleset'], 'a verifying pass reads back and finds it right');
  nft.calls.length = 0;
  const more = firewallWant({ ...input, locals: [...input.locals, { ip: '198.18.0.6', veth: 'bth00000002' }] });
  t.is(await fw.sync(more, { verify: false }), 1);
  t.deepEqual(nft.calls, ['-f -'], 'a changed table is applied straight away: the file replaces it whole');
});

test('a table changed behind the agent is found by the next verifying pass, and a restart finds it right', async (t) => {
  const nft = fakeNft();
  const want = firewallWant(input);
  await new FirewallSync(nft.run).sync(want, { verify: true });
  t.is(await new FirewallSync(nft.run).sync(want, { verify: true }), 0, 'a new agent finds the tables right: no write');
  const fw = new FirewallSync(nft.run);
  await fw.sync(want, { verify: true });
  nft.tamper();
  t.is(await fw.sync(want, { verify: false }), 0, 'event passes trust the memory');
  t.is(await fw.sync(want, { verify: true }), 1, 'the resync pass puts it back');
  t.is(await fw.sync(want, { verify: true }), 0);
});

test('a refused file leaves nothing remembered: the next pass tries again', async (t) => {
  let fail = true;
  const calls: string[] = [];
  const fw = new FirewallSync(async (args) => {
    calls.push(args[0]);
    if (args[0] === '-f' && fail) throw new Error('nft: refused');
    return '';
  });
  const want = firewallWant(input);
  await t.throwsAsync(fw.sync(want, { verify: false }), { message: /refused/ });
  fail = false;
  t.is(await fw.sync(want, { verify: false }), 1);
  t.deepEqual(calls, ['list', '-f', 'list', '-f']);
  t.true(firewallScript(want).includes('table bridge berth {'));
});

test('only a change of pods goes as set elements; any other change, or a refused batch, writes the file', async (t) => {
  const nft = fakeNft();
  const batches: { remove: number; add: number }[] = [];
  let refuse = false;
  const fw = new FirewallSync(nft.run, async (c) => {
    if (refuse) throw new Error('refused');
    batches.push({ remove: c.remove.length, add: c.add.length });
  });
  await fw.sync(firewallWant(input), { verify: true });
  nft.calls.length = 0;
  const two = { ...input, locals: [...input.locals, { ip: '198.18.0.6', veth: 'bth00000002' }] };
  t.is(await fw.sync(firewallWant(two), { verify: false }), 1);
  t.deepEqual(batches, [{ remove: 0, add: 1 }]);
  t.deepEqual(nft.calls, []);
  t.is(await fw.sync(firewallWant({ ...two, hosts: ['198.19.0.12', '198.19.0.13'] }), { verify: false }), 1);
  t.deepEqual(nft.calls, ['-f -'], 'a new host changes the inet table: the whole file');
  nft.calls.length = 0;
  refuse = true;
  t.is(await fw.sync(firewallWant({ ...input, hosts: ['198.19.0.12', '198.19.0.13'] }), { verify: false }), 1);
  t.deepEqual(nft.calls, ['list ruleset', '-f -'], 'a refused batch: read what is live, then the whole file');
  t.is(batches.length, 1);
});
