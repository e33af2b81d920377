/**
 * The agent publishes its last pass time in its alive key for `berthctl
 * status`, rarely: at most once per passPublishMs, however often it passes.
 * Real etcd.
 */
import test from 'ava';
import { Registration } from '../agent/registration';
import { keys } from '../common/keys';
import { silentLogger } from '../common/log';
import type { HostAlive } from '../common/records';
import { startEtcd } from '../sim/etcd';
import { eventually } from '../sim/eventually';

test('notePass writes the alive key at once, then at most once per passPublishMs', async (t) => {
  const etcd = await startEtcd();
  const client = etcd.client();
  const reg = new Registration(client, { name: 'h1', underlayIp: '198.19.0.11', vtepMac: '02:00:00:00:00:01', vni: 4242, pool: 'p' }, silentLogger, { passPublishMs: 60_000 });
  t.teardown(async () => { await reg.stop({ revoke: true }); client.close(); await etcd.stop(); });
  await reg.start();
  const read = async () => {
    const kv = (await client.get(keys.alive('h1')).exec()).kvs[0];
    return { value: JSON.parse(kv.value.toString()) as HostAlive, mod: String(kv.mod_revision) };
  };
  const registered = await read();
  t.is(registered.value.lastPassAt, undefined);

  const t0 = new Date('2026-11-26T01:00:00.000Z');
  reg.notePass(t0);
  const first = await eventually(async () => {
    const r = await read();
    if (r.value.lastPassAt !== t0.toISOString()) throw new Error('not published yet');
    return r;
  }, { timeoutMs: 5000, what: 'first pass published' });
  t.is(first.value.since, registered.value.since, 'since stays the registration time');

  // Passes within the minute change nothing in etcd.
  for (let s = 1; s < 60; s += 7) reg.notePass(new Date(t0.getTime() + s * 1000));
  const later = new Date(t0.getTime() + 61_000);
  reg.notePass(later);
  const second = await eventually(async () => {
    const r = await read();
    if (r.value.lastPassAt !== later.toISOString()) throw new Error('not published yet');
    return r;
  }, { timeoutMs: 5000, what: 'a pass a minute later published' });
  // Exactly one write between the two: the key's version grew by one.
  const versions = await client.get(keys.alive('h1')).exec();
  t.is(Number(versions.kvs[0].version) - 1, 2, 'registration put + 2 pass writes');
  t.not(second.mod, first.mod);
});
