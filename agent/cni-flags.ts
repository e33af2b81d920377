/**
 * The conflist's command-line settings, defined once for the two commands
 * that write a conflist: `berth-agent install-cni` (agent/install-cni-cli.ts,
 * which spells them --bin-dir, --conf-dir, --network, --cni-version) and the
 * agent itself when it publishes the conflist while it is ready
 * (agent/main.ts: --cni-bin-dir, --cni-conf-dir, --cni-network,
 * --cni-version). Each command picks its spelling; description, parser and
 * default come from here, so the two cannot drift apart.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { SUPPORTED_VERSIONS, isSupportedVersion } from '../common/cni-version';
import { NAME_RE } from '../common/keys';
import { DEFAULT_BIN_DIR, DEFAULT_CNI_VERSION, DEFAULT_CONF_DIR } from './install-cni';

/** A pool or network name: what common/keys.ts accepts. */
export const nameArg = (v: string): string => {
  if (!NAME_RE.test(v)) throw new InvalidArgumentError('must be lower-case letters, digits, ".", "_" or "-"');
  return v;
};
export const absoluteArg = (v: string): string => {
  if (!v.startsWith('/')) throw new InvalidArgumentError('must be an absolute path');
  return v;
};

const cniVersionArg = (v: string): string => {
  if (!isSupportedVersion(v)) throw new InvalidArgumentError(`not a CNI version berth supports (${SUPPORTED_VERSIONS.join(', ')})`);
  return v;
};

interface Spec { arg: string; about: string; parse?: (v: string) => string; default?: string }

/** The settings, keyed by the option value's name (commander's camelCase of the flag). */
const SPECS = {
  binDir: { arg: '<dir>', about: 'the runtime\'s CNI plugin directory (chained portmap and bandwidth are added when their binaries are here)', parse: absoluteArg, default: DEFAULT_BIN_DIR },
  confDir: { arg: '<dir>', about: 'the runtime\'s CNI configuration directory', parse: absoluteArg, default: DEFAULT_CONF_DIR },
  cniVersion: { arg: '<v>', about: 'cniVersion of the conflist (1.0.0: libcni < 1.2 rejects 1.1.0 results)', parse: cniVersionArg, default: DEFAULT_CNI_VERSION },
  network: { arg: '<name>', about: 'the network name in the conflist', default: 'berth' },
} satisfies Record<string, Spec>;
export type ConflistSetting = keyof typeof SPECS;

/**
 * Adds the settings named in `spelling` to `cmd` under those flag names.
 * The value lands under the flag's own camelCase key (e.g. --cni-bin-dir ->
 * cniBinDir). `noDefault` leaves a setting unset unless given (the agent's
 * --cni-conf-dir: publication is off unless asked for).
 */
export function addConflistOptions(cmd: Command, spelling: Partial<Record<ConflistSetting, string>>, noDefault: ConflistSetting[] = []): Command {
  for (const [key, flag] of Object.entries(spelling) as [ConflistSetting, string][]) {
    const s: Spec = SPECS[key];
    const opt = new Option(`${flag} ${s.arg}`, s.about);
    if (s.parse) opt.argParser(s.parse);
    if (s.default !== undefined && !noDefault.includes(key)) opt.default(s.default);
    cmd.addOption(opt);
  }
  return cmd;
}
