/**
 * Network-namespace fixtures for integration tests. Nothing here touches the
 * root namespace: the "underlay" is itself a namespace holding a bridge,
 * every simulated host is a namespace wired to it by a veth, and every pod is
 * a namespace. Names start with `bth-` plus random hex, so parallel test
 * files never collide, and teardown() deletes every namespace the lab made
 * (which also deletes every link inside them).
 *
 * Fixtures are built with the `ip` tool on purpose: the code under test uses
 * netlink, so a fixture bug and a product bug can't cancel each other out.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/** Underlay addresses of simulated hosts (never 192.0.2.0/24). */
export const UNDERLAY_PREFIX = '198.19.0';
export const UNDERLAY_MTU = 1500;

export interface Netns {
  name: string;
  path: string;
}

export interface SimHost extends Netns {
  underlayIp: string;
  /** The host's underlay interface, inside its namespace. */
  dev: string;
}

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a command inside a namespace, returns stdout; throws on non-zero exit. */
export function nsExec(ns: Netns | string, cmd: string, ...args: string[]): string {
  const name = typeof ns === 'string' ? ns : ns.name;
  return execFileSync('ip', ['netns', 'exec', name, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Like nsExec but returns success instead of throwing (ping and friends). */
export function nsTry(ns: Netns | string, cmd: string, ...args: string[]): boolean {
  try {
    nsExec(ns, cmd, ...args);
    return true;
  } catch {
    return false;
  }
}

export function randomTag(bytes = 3): string {
  return randomBytes(bytes).toString('hex');
}

// The machine has no ping, so reachability is a TCP echo between namespaces:
// the server answers with the peer address it saw (proving no NAT on the way).
const ECHO_SERVER = `
const net = require('net');
const srv = net.createServer((s) => { s.end(s.remoteAddress + '\\n'); });
srv.listen(Number(process.argv[2]), process.argv[1], () => process.stdout.write('ready\\n'));`;
const ECHO_CLIENT = `
const net = require('net');
const s = net.connect({ host: process.argv[1], port: Number(process.argv[2]), timeout: 2000 });
let out = '';
s.on('data', (d) => (out += d));
s.on('end', () => { process.stdout.write(out); process.exit(0); });
s.on('timeout', () => process.exit(2));
s.on('error', () => process.exit(1));`;

/** Connects from ns to ip:port; returns the address the server saw, or throws. */
export function tcpProbe(ns: Netns, ip: string, port: number): string {
  return nsExec(ns, process.execPath, '-e', ECHO_CLIENT, ip, String(port)).trim();
}

export class Lab {
  /** Every tag starts with the same random run id, so leftovers are easy to find. */
  readonly id = randomTag();
  private readonly namespaces: string[] = [];
  private underlay?: Netns;
  private nextHost = 11;
  private seq = 0;
  private readonly children: ChildProcess[] = [];

  /** A fresh, empty namespace with lo up. */
  netns(label: string): Netns {
    const name = `bth-${this.id}-${label}-${randomTag(2)}`;
    ip('netns', 'add', name);
    this.namespaces.push(name);
    nsExec(name, 'ip', 'link', 'set', 'lo', 'up');
    return { name, path: `/run/netns/${name}` };
  }

  /** The shared L2 segment all simulated hosts plug into. */
  underlayNs(): Netns {
    if (!this.underlay) {
      this.underlay = this.netns('ul');
      nsExec(this.underlay, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
      nsExec(this.underlay, 'ip', 'link', 'set', 'br0', 'up');
    }
    return this.underlay;
  }

  /** A simulated host: a namespace with `ul0` at 198.19.0.N/24 and forwarding on. */
  host(label: string): SimHost {
    const ul = this.underlayNs();
    const ns = this.netns(label);
    const n = this.nextHost++;
    const underlayIp = `${UNDERLAY_PREFIX}.${n}`;
    const port = `p${this.id}${this.seq++}`; // underlay-side name, <= 15 bytes
    nsExec(ul, 'ip', 'link', 'add', port, 'mtu', String(UNDERLAY_MTU), 'type', 'veth', 'peer', 'name', 'ul0', 'netns', ns.name);
    nsExec(ul, 'ip', 'link', 'set', port, 'master', 'br0', 'up');
    nsExec(ns, 'ip', 'addr', 'add', `${underlayIp}/24`, 'dev', 'ul0');
    nsExec(ns, 'ip', 'link', 'set', 'ul0', 'mtu', String(UNDERLAY_MTU), 'up');
    nsExec(ns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    return { ...ns, underlayIp, dev: 'ul0' };
  }

  /** An empty pod namespace; the code under test plumbs it. */
  pod(label: string): Netns {
    return this.netns(label);
  }

  /** Starts a TCP echo server on ip:port inside ns; resolves once it listens. */
  async echoServer(ns: Netns, ip: string, port: number): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', ECHO_SERVER, ip, String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.push(child);
    await new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`echo server in ${ns.name} exited ${code}: ${err}`)));
    });
  }

  /** Stops servers, then deletes every namespace this lab made; safe to call twice. */
  teardown(): void {
    for (const c of this.children.splice(0)) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
    for (const name of this.namespaces.splice(0).reverse()) {
      try {
        ip('netns', 'del', name);
      } catch {
        // already gone
      }
    }
    this.underlay = undefined;
  }

  /** Namespaces still present (for tests that assert cleanup). */
  leftovers(): string[] {
    return ip('netns', 'list').split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`bth-${this.id}-`));
  }
}
