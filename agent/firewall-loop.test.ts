import test from 'ava';
import { silentLogger } from '../common/log';
import { firewallWant, type FirewallWant } from './firewall';
import { FirewallLoop } from './firewall-loop';

const want = (n: number): FirewallWant => firewallWant({
  underlayIp: '198.19.0.11', pools: ['198.18.0.0/24'], hosts: [], noMasquerade: [], isolation: true,
  locals: Array.from({ length: n }, (_, i) => ({ ip: `198.18.0.${i + 2}`, veth: `bth0000000${i}` })),
});

test('kicks during a sync coalesce into one sync of the newest tables, keeping a verify request', async (t) => {
  const calls: { pods: number; verify: boolean }[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const loop = new FirewallLoop(async (w, o) => {
    calls.push({ pods: (w.bridge!.match(/bth/g) ?? []).length - 1, verify: o.verify });
    if (calls.length === 1) await gate;
    return 1;
  }, silentLogger);
  const first = loop.next();
  loop.kick(want(1), { verify: false });
  loop.kick(want(2), { verify: true });
  loop.kick(want(3), { verify: false });
  release();
  t.like(await first, { ops: 1, verify: false });
  await loop.next();
  t.deepEqual(calls, [{ pods: 1, verify: false }, { pods: 3, verify: true }]);
  await loop.stop();
});

test('a refused sync is retried with a read-back; nothing runs after stop', async (t) => {
  let n = 0;
  const verifies: boolean[] = [];
  const loop = new FirewallLoop(async (_w, o) => {
    verifies.push(o.verify);
    if (++n === 1) throw new Error('nft: refused');
    return 1;
  }, silentLogger, 5);
  const first = loop.next();
  const second = first.then(() => loop.next());
  loop.kick(want(1), { verify: false });
  t.regex((await first).error ?? '', /refused/);
  t.like(await second, { ops: 1, verify: true });
  await loop.stop();
  loop.kick(want(2), { verify: false });
  t.deepEqual(verifies, [false, true]);
});

test('apply resolves with the first sync that took its tables, never with one already running', async (t) => {
  const seen: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const loop = new FirewallLoop(async (w) => {
    seen.push((w.bridge!.match(/bth/g) ?? []).length - 1);
    if (seen.length === 1) await gate;
    return 1;
  }, silentLogger);
  loop.kick(want(1), { verify: false }); // a sync of the old tables is under way
  let settled = false;
  const applied = loop.apply(want(2)).then((p) => { settled = true; return p; });
  await new Promise((r) => setImmediate(r));
  t.false(settled, 'not answered by the sync that began before it');
  release();
  t.like(await applied, { ops: 1 });
  t.deepEqual(seen, [1, 2], 'answered by the sync of its own tables');
  await loop.stop();
  t.like(await loop.apply(want(3)), { error: 'firewall loop stopped' }, 'after stop: at once, with no sync');
});
