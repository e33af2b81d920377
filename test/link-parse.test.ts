/**
 * Berth's own link reader (linkInfoOf) against the netlink package's full
 * parser, on the kernel's own messages: a loopback, a bridge with a port,
 * both ends of a veth pair (one in another netns) and a VXLAN device.
 */
import test from 'ava';
import { AttrStream, FlagsGet, rt } from 'netlink';
import { getLinkWithPeer, linkInfoOf, listLinks } from '../agent/kernel/links';
import { openNetlinkIn, warmThreadPool } from '../agent/kernel/netns';
import { mactext, parseLinkinfo } from '../agent/kernel/nl';
import { Lab, nsExec } from '../sim/netns';

/** The same fields, read the netlink package's way. */
function reference(m: rt.LinkMessage) {
  const li = parseLinkinfo(m.attrs.linkinfo);
  const link = m.attrs.link;
  return {
    index: m.data.index!, name: m.attrs.ifname ?? '', kind: li.kind, mtu: m.attrs.mtu, mac: mactext(m.attrs.address),
    up: !!m.data.flags?.up, master: m.attrs.master || undefined, data: li.data,
    ...(link && link.length >= 4 ? { peer: link.readUInt32LE(0) } : {}),
  };
}

test('linkInfoOf reads every link exactly as the full parser does', async (t) => {
  const lab = new Lab();
  t.teardown(() => lab.teardown());
  const host = lab.netns('lp');
  const pod = lab.netns('lq');
  nsExec(host, 'ip', 'link', 'add', 'brx', 'mtu', '1400', 'type', 'bridge');
  nsExec(host, 'ip', 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'nolearning');
  nsExec(host, 'ip', 'link', 'add', 'bthaaaa0001', 'address', '0e:bf:00:00:00:01', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.name);
  nsExec(host, 'ip', 'link', 'set', 'bthaaaa0001', 'master', 'brx', 'up');
  await warmThreadPool();
  const sock = openNetlinkIn(host.path);
  t.teardown(() => sock.socket.close());
  const body = new AttrStream();
  rt.formatLinkMessage({ kind: 'link', data: {}, attrs: {} }, body);
  const [raw] = await sock.socket.request(18 /* RTM_GETLINK */, body.bufs, { flags: FlagsGet.DUMP });
  const msgs = raw.filter((m) => m.type === 16 /* RTM_NEWLINK */);
  t.true(msgs.length >= 4);
  for (const m of msgs) {
    const full = (await sock.getLink({}, { ifname: linkInfoOf(m.data).name }))[0];
    t.deepEqual(linkInfoOf(m.data), reference(full), linkInfoOf(m.data).name);
  }
  const veth = await getLinkWithPeer(sock, 'bthaaaa0001');
  t.like(veth, { name: 'bthaaaa0001', kind: 'veth', mac: '0e:bf:00:00:00:01', up: true });
  t.is(typeof veth!.peer, 'number', 'IFLA_LINK: the peer index in the pod netns');
  t.deepEqual((await listLinks(sock)).map((l) => l.name).sort(), ['brx', 'bthaaaa0001', 'lo', 'vx0']);
  t.is(await getLinkWithPeer(sock, 'nothere'), undefined);
});

test('a runt payload is an error, not garbage', (t) => {
  t.throws(() => linkInfoOf(Buffer.alloc(8)), { message: /short link message/ });
});
