/**
 * Forged packets for the isolation tests, sent from inside a pod's netns by
 * Debian's python3 (Node has no raw sockets; scripts/ensure-deps.sh installs
 * python3). Three attacks, docs/dataplane.md "Isolation":
 *   vxlan  an ordinary UDP socket (no capability at all) sends a VXLAN
 *          datagram to a host's underlay port 4789; the inner frame is
 *          addressed to that host's VTEP and carries a forged IPv4/UDP packet
 *   spoof  a raw IPv4 socket (CAP_NET_RAW) sends UDP with a forged source
 *   arp    an AF_PACKET socket (CAP_NET_RAW) on eth0 broadcasts gratuitous
 *          ARP replies claiming an address (the gateway, a neighbour)
 * Each sends `count` packets and exits. Nothing leaves the lab's namespaces.
 */
import { nsExec, type Netns } from '../../sim/netns';

const FORGE = String.raw`
import socket, struct, sys

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def ip4(a): return socket.inet_aton(a)
def mac(m): return bytes(int(x, 16) for x in m.split(':'))

def ipv4_udp(src, dst, dport, payload):
    udp = struct.pack('!HHHH', 40000, dport, 8 + len(payload), 0) + payload
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, ip4(src), ip4(dst))
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + udp

mode, count = sys.argv[1], int(sys.argv[2])
a = sys.argv[3:]
if mode == 'vxlan':
    host, vni, vtep_mac, src, dst, dport, msg = a
    inner = mac(vtep_mac) + mac('0e:00:00:00:00:99') + b'\x08\x00' + ipv4_udp(src, dst, int(dport), msg.encode())
    pkt = struct.pack('!II', 0x08000000, int(vni) << 8) + inner
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(count): s.sendto(pkt, (host, 4789))
elif mode == 'spoof':
    src, dst, dport, msg = a
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for _ in range(count): s.sendto(ipv4_udp(src, dst, int(dport), msg.encode()), (dst, 0))
elif mode == 'arp':
    dev, claim = a
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((dev, 0))
    me = s.getsockname()[4]
    bcast = b'\xff' * 6
    arp = struct.pack('!HHBBH', 1, 0x0800, 6, 4, 2) + me + ip4(claim) + bcast + ip4(claim)
    for _ in range(count): s.send(bcast + me + b'\x08\x06' + arp)
else:
    sys.exit('unknown mode ' + mode)
`;

export function forgeVxlan(from: Netns, o: { host: string; vni: number; vtepMac: string; src: string; dst: string; port: number; msg: string; count?: number }): void {
  nsExec(from, 'python3', '-c', FORGE, 'vxlan', String(o.count ?? 5), o.host, String(o.vni), o.vtepMac, o.src, o.dst, String(o.port), o.msg);
}

export function forgeSpoof(from: Netns, o: { src: string; dst: string; port: number; msg: string; count?: number }): void {
  nsExec(from, 'python3', '-c', FORGE, 'spoof', String(o.count ?? 5), o.src, o.dst, String(o.port), o.msg);
}

export function forgeArp(from: Netns, o: { dev?: string; claim: string; count?: number }): void {
  nsExec(from, 'python3', '-c', FORGE, 'arp', String(o.count ?? 5), o.dev ?? 'eth0', o.claim);
}
