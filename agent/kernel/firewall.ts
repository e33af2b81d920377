/**
 * The kernel side of agent/firewall.ts: reads the live ruleset and, only when
 * Berth's tables differ from what is wanted, replaces them in one `nft -f`
 * transaction. A pass that finds them right writes nothing, so an agent
 * restart changes nothing, and a table edited or deleted behind the agent's
 * back is put back by the next verifying pass (every resync).
 *
 * `nft` (Debian's nftables package) is spawned from the agent's main thread,
 * which always stays in the host's network namespace: the rules land in that
 * namespace and nowhere else.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BerthError } from '../../common/errors';
import { FIREWALL_TABLE, PODS_SET, firewallMatches, firewallScript, podDelta, type FirewallWant, type PodSlot } from '../firewall';
import { NFPROTO_BRIDGE, ifnameIpv4Key } from '../nft-setelem';
import type { SetElemApply } from './nft-setelem';

/**
 * nftables' `nft`, by absolute path: a PATH lookup can find something else
 * called nft first (npm puts node_modules/.bin, where @vercel/nft installs
 * an `nft` of its own, ahead of /usr/sbin).
 */
export function nftPath(): string | undefined {
  return ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft', '/bin/nft'].find((p) => existsSync(p));
}

export type NftRunner = (args: string[], stdin?: string) => Promise<string>;

/** Runs nft with args (stdin for `-f -`); stdout, or a KernelError carrying nft's message. */
export const runNft: NftRunner = (args, stdin) =>
  new Promise((resolve, reject) => {
    const bin = nftPath();
    if (!bin) return reject(new BerthError('KernelError', 'nft not found in /usr/sbin, /sbin, /usr/bin or /bin (install the nftables package)', 'nftables refused'));
    const child = execFile(bin, args, { encoding: 'utf8', timeout: 10_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const why = (stderr || err.message).trim();
      reject(new BerthError('KernelError', `nft ${args.join(' ')}: ${why.split('\n').slice(0, 3).join(' | ')}`, 'nftables refused'));
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(stdin ?? '');
  });

/**
 * Converges Berth's tables to a FirewallWant; remembers the tables it last
 * knew to be live, so a pass whose wanted tables didn't change costs no
 * process at all. verify (start, resync, retry passes) reads the live
 * ruleset back whatever the memory says: that is what finds a table changed
 * behind the agent's back, and what makes a restart write nothing.
 *
 * When only the `pods` set differs from the remembered tables (a CNI ADD or
 * DEL), the change goes to the kernel as one netlink batch of set elements
 * (setElems) instead of an `nft -f` of the whole file: no process on the
 * ADD's path. A refused batch (the set was changed or deleted behind us)
 * falls back to the whole file.
 */
export class FirewallSync {
  private live: { script: string; want: FirewallWant } | undefined;

  constructor(private readonly run: NftRunner = runNft, private readonly setElems?: SetElemApply) {}

  /** Returns how many changes it made (0, or 1 transaction). */
  async sync(want: FirewallWant, o: { verify: boolean }): Promise<number> {
    const script = firewallScript(want);
    if (!o.verify && script === this.live?.script) return 0;
    if (!o.verify && this.live && this.setElems) {
      const delta = podDelta(this.live.want, want);
      if (delta) {
        const key = (p: PodSlot) => ifnameIpv4Key(p.veth, p.ip);
        try {
          await this.setElems({ family: NFPROTO_BRIDGE, table: FIREWALL_TABLE, set: PODS_SET, remove: delta.remove.map(key), add: delta.add.map(key) });
          this.live = { script, want };
          return 1;
        } catch {
          // Unknown now: the whole file below, after reading what is live.
          this.live = undefined;
        }
      }
    }
    if (o.verify || this.live === undefined) {
      if (firewallMatches(want, await this.run(['list', 'ruleset']))) {
        this.live = { script, want };
        return 0;
      }
    }
    this.live = undefined; // unknown until nft says it took the file
    await this.run(['-f', '-'], script);
    this.live = { script, want };
    return 1;
  }
}
