/**
 * Link requests sent from libuv pool threads (requestOffThread): they land
 * in the netns of the socket they stand in for, refusals come back as the
 * kernel's errno, and no thread of this process is left in another netns.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { createVeth, getLink, setUpOffThread } from '../agent/kernel/links';
import { bpfAddon, openNetlinkIn, openNetnsFd, requestOffThread, warmThreadPool } from '../agent/kernel/netns';
import { KernelError, RTM_DELROUTE, RTM_SETLINK, linkRequest, rtRequest } from '../agent/kernel/nl';
import { Lab, nsExec } from '../sim/netns';

const threadNetns = () => new Set(fs.readdirSync('/proc/self/task').map((tid) => fs.readlinkSync(`/proc/self/task/${tid}/ns/net`)));

test('a veth pair created and brought up from pool threads lands in the right namespaces; refusals carry the errno', async (t) => {
  const lab = new Lab();
  t.teardown(() => lab.teardown());
  const host = lab.netns('h');
  const pod = lab.netns('p');
  await warmThreadPool();
  const before = threadNetns();
  const sock = openNetlinkIn(host.path);
  const podSock = openNetlinkIn(pod.path);
  t.teardown(() => { sock.socket.close(); podSock.socket.close(); });
  const fd = openNetnsFd(pod.path);
  try {
    await createVeth(sock, { hostName: 'bthoff1', peerName: 'eth0', peerNetnsFd: fd, mtu: 1400, up: true });
    const again = await t.throwsAsync(createVeth(sock, { hostName: 'bthoff1', peerName: 'eth1', peerNetnsFd: fd, mtu: 1400 }));
    t.true(again instanceof KernelError && again.errno === 'EEXIST', String(again));
  } finally {
    fs.closeSync(fd);
  }
  t.regex(nsExec(host, 'ip', '-o', 'link', 'show', 'bthoff1'), /mtu 1400/);
  const eth = await getLink(podSock, 'eth0');
  t.truthy(eth, 'the peer is in the pod namespace');
  t.false(eth!.up);
  await setUpOffThread(podSock, eth!);
  t.true((await getLink(podSock, 'eth0'))!.up, 'brought up by a request sent from a pool thread');
  const gone = await t.throwsAsync(requestOffThread(sock, 'up nothing', linkRequest(RTM_SETLINK, { index: 999_999, flags: { up: true }, change: { up: true } }, {}))!);
  t.true(gone instanceof KernelError && gone.errno === 'ENODEV', String(gone));
  // An errno the addon has no name for still comes back by its own name.
  const noRoute = await t.throwsAsync(requestOffThread(sock, 'delete route', rtRequest(RTM_DELROUTE, {
    kind: 'route', data: { family: 2, dstLen: 32, table: 254, scope: 253, type: 1 }, attrs: { dst: Buffer.from([198, 18, 9, 9]), oif: 1 },
  }))!);
  t.true(noRoute instanceof KernelError && noRoute.errno === 'ESRCH', String(noRoute));
  t.deepEqual(threadNetns(), before, 'every thread is back in our own namespace');
});

test('the addon refuses anything but one whole netlink message', (t) => {
  const a = bpfAddon() as unknown as { routeSocket(): number; requestOn(fd: number, b: unknown): Promise<void> };
  for (const bad of [Buffer.alloc(4), 'text', (() => { const b = Buffer.alloc(32); b.writeUInt32LE(40, 0); return b; })()]) {
    const fd = a.routeSocket();
    t.throws(() => a.requestOn(fd, bad), { instanceOf: TypeError });
  }
});
