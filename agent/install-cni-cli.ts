/**
 * The command line of `berth-agent install-cni` (agent/install-cni.ts does
 * the work). Flags that name the agent's own settings (--pool, --socket,
 * --journal-dir) are spelled as the agent spells them.
 */
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_AGENT_SOCKET } from '../common/agent-protocol';
import { DEFAULT_JOURNAL_DIR } from '../common/cni-config';
import { oneLineErrors, positiveInt } from '../common/daemon-cli';
import { NAME_RE } from '../common/keys';
import { createLogger } from '../common/log';
import { DEFAULT_BIN_DIR, DEFAULT_CNI_VERSION, DEFAULT_CONF_DIR, installCni, uninstallCni } from './install-cni';

const name = (v: string) => {
  if (!NAME_RE.test(v)) throw new InvalidArgumentError('must be lower-case letters, digits, ".", "_" or "-"');
  return v;
};
const absolute = (v: string) => {
  if (!v.startsWith('/')) throw new InvalidArgumentError('must be an absolute path');
  return v;
};

/** dist/agent/install-cni-cli.js -> dist/bin/berth */
const BUNDLED_PLUGIN = join(__dirname, '../bin/berth');

/** Runs `berth-agent install-cni <argv>`; throws BerthError on a failure the caller prints as one line. */
export function runInstallCni(argv: string[]): void {
  const cmd = oneLineErrors(new Command('berth-agent install-cni'))
    .description('Install (or, with --uninstall, remove) the berth CNI plugin and its conflist on this node')
    .option('--bin-dir <dir>', 'the runtime\'s CNI plugin directory', absolute, DEFAULT_BIN_DIR)
    .option('--conf-dir <dir>', 'the runtime\'s CNI configuration directory', absolute, DEFAULT_CONF_DIR)
    .option('--plugin <file>', 'the static plugin binary to copy', BUNDLED_PLUGIN)
    .option('--cni-version <v>', 'cniVersion of the conflist (1.0.0: libcni < 1.2 rejects 1.1.0 results)', DEFAULT_CNI_VERSION)
    .option('--network <name>', 'the network name in the conflist', 'berth')
    .option('--pool <name>', 'the pool this host\'s agent serves (the agent\'s --pool)', name, 'default')
    .option('--socket <path>', 'the agent\'s CNI socket (the agent\'s --socket)', absolute, DEFAULT_AGENT_SOCKET)
    .option('--journal-dir <dir>', 'the DEL journal (the agent\'s --journal-dir)', absolute, DEFAULT_JOURNAL_DIR)
    .option('--mtu <n>', 'pod interface MTU (default: the agent\'s)', positiveInt)
    .option('--uninstall', 'remove the plugin and the conflist this command installs, nothing else');
  cmd.parse(argv, { from: 'user' });
  const o = cmd.opts();
  const log = createLogger({ component: 'install-cni' });
  if (o.uninstall) {
    log.info('uninstalled', { removed: uninstallCni({ binDir: o.binDir, confDir: o.confDir }) });
    return;
  }
  const out = installCni({
    source: o.plugin, binDir: o.binDir, confDir: o.confDir, cniVersion: o.cniVersion, network: o.network,
    pool: o.pool, agentSocket: o.socket, journalDir: o.journalDir, mtu: o.mtu,
  });
  log.info('installed', { written: out.written, chain: out.chain });
}
