/**
 * The command line of `berth-agent install-cni` (agent/install-cni.ts does
 * the work). Flags that name the agent's own settings (--pool, --socket,
 * --journal-dir) are spelled as the agent spells them.
 */
import { join } from 'node:path';
import { Command } from 'commander';
import { DEFAULT_AGENT_SOCKET } from '../common/agent-protocol';
import { DEFAULT_JOURNAL_DIR } from '../common/cni-config';
import { oneLineErrors, positiveInt } from '../common/daemon-cli';
import { createLogger } from '../common/log';
import { absoluteArg as absolute, addConflistOptions, nameArg as name } from './cni-flags';
import { installCni, uninstallCni } from './install-cni';

/** dist/agent/install-cni-cli.js -> dist/bin/berth */
const BUNDLED_PLUGIN = join(__dirname, '../bin/berth');

/** Runs `berth-agent install-cni <argv>`; throws BerthError on a failure the caller prints as one line. */
export function runInstallCni(argv: string[]): void {
  const cmd = addConflistOptions(oneLineErrors(new Command('berth-agent install-cni'))
    .description('Install (or, with --uninstall, remove) the berth CNI plugin and its conflist on this node'),
  { binDir: '--bin-dir', confDir: '--conf-dir', cniVersion: '--cni-version', network: '--network' })
    .option('--plugin <file>', 'the static plugin binary to copy', BUNDLED_PLUGIN)
    .option('--pool <name>', 'the pool this host\'s agent serves (the agent\'s --pool)', name, 'default')
    .option('--socket <path>', 'the agent\'s CNI socket (the agent\'s --socket)', absolute, DEFAULT_AGENT_SOCKET)
    .option('--journal-dir <dir>', 'the DEL journal (the agent\'s --journal-dir)', absolute, DEFAULT_JOURNAL_DIR)
    .option('--mtu <n>', 'pod interface MTU (default: the agent\'s)', positiveInt)
    .option('--uninstall', 'remove the plugin and the conflist this command installs, nothing else')
    .option('--no-conflist', 'install the plugin only, and remove a conflist of ours left in --conf-dir: the agent publishes it while it is ready (its --cni-conf-dir)');
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts();
  const log = createLogger({ component: 'install-cni' });
  if (o.uninstall) {
    log.info('uninstalled', { removed: uninstallCni({ binDir: o.binDir, confDir: o.confDir }) });
    return;
  }
  const out = installCni({
    source: o.plugin, binDir: o.binDir, confDir: o.confDir, cniVersion: o.cniVersion, network: o.network,
    pool: o.pool, agentSocket: o.socket, journalDir: o.journalDir, mtu: o.mtu, conflist: o.conflist !== false,
  });
  log.info('installed', { written: out.written, chain: out.chain, ...(out.removed ? { removed: out.removed } : {}) });
}
