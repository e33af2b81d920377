/**
 * The kernel side of agent/firewall.ts: reads the live ruleset and, only when
 * Berth's tables differ from what is wanted, replaces them in one `nft -f`
 * transaction. A pass that finds them right runs `nft list ruleset` and
 * writes nothing, so an agent restart changes nothing, and a table edited or
 * deleted behind the agent's back is put back by the next pass (the resync
 * timer guarantees there is one).
 *
 * `nft` (Debian's nftables package) is spawned from the agent's main thread,
 * which always stays in the host's network namespace: the rules land in that
 * namespace and nowhere else.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BerthError } from '../../common/errors';
import { firewallMatches, firewallScript, type FirewallWant } from '../firewall';

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

/** Converges Berth's tables to want; returns how many changes it made (0 or 1 transaction). */
export async function syncFirewall(want: FirewallWant, run: NftRunner = runNft): Promise<number> {
  if (firewallMatches(want, await run(['list', 'ruleset']))) return 0;
  await run(['-f', '-'], firewallScript(want));
  return 1;
}
