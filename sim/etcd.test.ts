/**
 * startEtcd's start-up when a port it picked is taken before etcd binds it
 * (freePort frees the port first; a concurrent test file can take it): the
 * attempt that lost its port is made again on fresh ports, and readiness is
 * asked of the member list, so an etcd already on that port is never taken
 * for the new one.
 */
import test from 'ava';
import * as net from 'node:net';
import { startEtcd } from './etcd';

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

test('a client port another etcd holds: start-up moves to fresh ports and the server is the one it started', async (t) => {
  const other = await startEtcd();
  t.teardown(() => other.stop());
  const port = Number(new URL(other.endpoint).port);
  const ours = await startEtcd({ firstPorts: { client: port } });
  t.teardown(() => ours.stop());
  t.not(ours.endpoint, other.endpoint);
  t.true(alive(ours.pid), 'the pid is a running etcd');
  await ours.client().put('whose').value('ours');
  t.is(await ours.client().get('whose').string(), 'ours');
  t.is(await other.client().get('whose').string(), null, 'nothing was written to the other etcd');
  const st = await ours.client().maintenance.status();
  const { members } = await ours.client().cluster.memberList({});
  t.is(members.length, 1);
  t.is(members[0].ID, st.header.member_id);
  t.true(members[0].clientURLs.includes(ours.endpoint));
});

test('a peer port another process holds: start-up moves to fresh ports', async (t) => {
  const squatter = net.createServer();
  await new Promise<void>((res) => squatter.listen(0, '127.0.0.1', () => res()));
  t.teardown(() => void squatter.close());
  const port = (squatter.address() as net.AddressInfo).port;
  const ours = await startEtcd({ firstPorts: { peer: port } });
  t.teardown(() => ours.stop());
  t.true(alive(ours.pid));
  await ours.client().put('k').value('v');
  t.is(await ours.client().get('k').string(), 'v');
});
