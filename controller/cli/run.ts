/**
 * berthctl as a function: run(argv, io) → exit code. The bin (main.ts) only
 * passes process.argv and sets process.exitCode, so tests drive the whole CLI
 * in-process or as a child, the way CNI's skel injects env and stdio.
 *
 * Contract: success writes to stdout only; any failure writes exactly one line
 * to stderr. Exit codes come from the error table in common/errors.ts (usage
 * errors 2, not found 3, conflict 4, unreachable/retry 5, unauthorized 6,
 * internal 1). Commander's own errors (unknown flag or command) are mapped to
 * exit 2 and squeezed onto one line; help is printed only when asked for.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { CreatePool, HoldPolicy, LeaseFilter, LeaseView, UpdatePool } from '../../common/api';
import { ControllerClient } from '../../common/controller-client';
import { BerthError, isBerthError } from '../../common/errors';
import {
  describeAt, errorLine, forgetLine, historyTable, hostsTable, json, leaseDetail, leasesTable, oneLine, poolDetail, poolsTable, statusText,
} from './format';
import { isIpAddress, parseDuration, parseInstant, parseIpArg, parseIpList, parsePositiveInt } from './parse';

export const DEFAULT_CONTROLLER = 'http://127.0.0.1:7480';
/** Page size when berthctl follows every page of a listing. */
const ALL_PAGE = 5000;

export interface Writable { write(text: string): unknown }

export interface Io {
  stdout: Writable;
  stderr: Writable;
  env: Record<string, string | undefined>;
  /** Injected clock for ages and relative times; defaults to Date.now. */
  now?: () => number;
}

interface GlobalOpts { controller?: string; tokenFile?: string; ca?: string; cert?: string; key?: string }

/** Wraps a pure parser so commander reports its failure as a usage error. */
function arg<T>(parse: (text: string, prev: T) => T): (text: string, prev: T) => T {
  return (text, prev) => {
    try { return parse(text, prev); } catch (e) {
      throw new InvalidArgumentError(isBerthError(e) ? e.message : String(e));
    }
  };
}

export async function run(argv: string[], io: Io): Promise<number> {
  const now = io.now ?? Date.now;
  const out = (text: string) => { io.stdout.write(text); };
  let client: ControllerClient | undefined;
  let ctx = { controller: io.env.BERTH_CONTROLLER || DEFAULT_CONTROLLER, tokenGiven: false };

  const connect = (cmd: Command): ControllerClient => {
    const g = cmd.optsWithGlobals() as GlobalOpts;
    const url = g.controller || io.env.BERTH_CONTROLLER || DEFAULT_CONTROLLER;
    const tokenFile = g.tokenFile || io.env.BERTH_TOKEN_FILE || undefined;
    ctx = { controller: url, tokenGiven: tokenFile !== undefined };
    try {
      const u = new URL(url);
      const unixOk = u.protocol === 'unix:' && url.length > 'unix://'.length;
      if (u.protocol !== 'http:' && u.protocol !== 'https:' && !unixOk) throw new Error('not http(s) or unix');
    } catch {
      throw new BerthError('InvalidConfig', url, 'controller URL must be http(s)://host:port or unix:///path');
    }
    const tls = { caFile: g.ca || io.env.BERTH_CA_FILE || undefined, certFile: g.cert || io.env.BERTH_CERT_FILE || undefined, keyFile: g.key || io.env.BERTH_KEY_FILE || undefined };
    client = new ControllerClient({
      url, token: tokenFile === undefined ? undefined : readToken(tokenFile),
      ...(tls.caFile || tls.certFile || tls.keyFile ? { tls } : {}),
    });
    return client;
  };

  const program = new Command('berthctl')
    .description('Operate Berth: pools, leases and their history, hosts, cluster status.')
    .option('--controller <url>', `controller API URL (env BERTH_CONTROLLER, default ${DEFAULT_CONTROLLER})`)
    .option('--token-file <file>', 'file holding the API bearer token (env BERTH_TOKEN_FILE)')
    .option('--ca <file>', 'CA bundle that signed the controller\'s https certificate (env BERTH_CA_FILE; default: system roots)')
    .option('--cert <file>', 'client certificate for a controller that requires one (mTLS; env BERTH_CERT_FILE)')
    .option('--key <file>', 'private key of --cert (env BERTH_KEY_FILE)')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      // Only help({error: true}) writes here (a group without its subcommand); it becomes one line below.
      writeErr: () => {},
      // Commander's error text is rethrown through exitOverride and printed once, below.
      outputError: () => {},
    })
    .helpCommand(false)
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError(false);

  const jsonOpt = () => new Option('--json', 'print the API\'s JSON instead of a table');
  const holdPolicyOpt = () => new Option('--hold-policy <policy>', 'which identities a release holds: all (but container ids) or explicit-only')
    .choices(['all', 'explicit-only']);
  const policyNote = (p?: HoldPolicy) => (p === 'explicit-only' ? ' (explicit identities only)' : '');

  // ---- pools ----
  const pools = program.command('pools').description('address pools');
  pools.command('ls').description('list pools with their utilisation').addOption(jsonOpt())
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const r = await connect(cmd).pools();
      out(o.json ? json(r) : poolsTable(r.pools));
    });
  pools.command('create <name>').description('create a pool')
    .requiredOption('--cidr <cidr>', 'network, e.g. 198.18.40.0/24')
    .option('--gateway <ip>', 'gateway address (default: first host address)', arg(parseIpArg))
    .option('--reserve <ips>', 'comma-separated addresses never leased (repeatable)', arg(parseIpList))
    .option('--hold <duration>', 'how long a released lease stays reserved for its identity: seconds or 1h, 30m, 1d', arg(parseDuration))
    .addOption(holdPolicyOpt())
    .addOption(jsonOpt())
    .action(async (name: string, o: { cidr: string; gateway?: string; reserve?: string[]; hold?: number; holdPolicy?: HoldPolicy; json?: boolean }, cmd: Command) => {
      const body: CreatePool = { name, cidr: o.cidr };
      if (o.gateway !== undefined) body.gateway = o.gateway;
      if (o.reserve !== undefined) body.reserved = o.reserve;
      if (o.hold !== undefined) body.holdSeconds = o.hold;
      if (o.holdPolicy !== undefined) body.holdPolicy = o.holdPolicy;
      const p = await connect(cmd).createPool(body);
      out(o.json ? json(p) : `created pool ${p.name} ${p.cidr}: gateway ${p.gateway}, ${p.size} leasable addresses, hold ${p.holdSeconds}s${policyNote(p.holdPolicy)}\n`);
    });
  pools.command('show <name>').description('one pool: settings and utilisation').addOption(jsonOpt())
    .action(async (name: string, o: { json?: boolean }, cmd: Command) => {
      const p = await connect(cmd).pool(name);
      out(o.json ? json(p) : poolDetail(p));
    });
  pools.command('set <name>').description('change a live pool\'s hold (applies to releases from now on)')
    .option('--hold <duration>', 'how long a released lease stays reserved for its identity: seconds or 1h, 30m, 1d', arg(parseDuration))
    .addOption(holdPolicyOpt())
    .addOption(jsonOpt())
    .action(async (name: string, o: { hold?: number; holdPolicy?: HoldPolicy; json?: boolean }, cmd: Command) => {
      const body: UpdatePool = {};
      if (o.hold !== undefined) body.holdSeconds = o.hold;
      if (o.holdPolicy !== undefined) body.holdPolicy = o.holdPolicy;
      if (Object.keys(body).length === 0) throw new BerthError('InvalidRequest', name, 'nothing to change: pass --hold and/or --hold-policy');
      const p = await connect(cmd).updatePool(name, body);
      out(o.json ? json(p) : `pool ${p.name}: hold ${p.holdSeconds}s${policyNote(p.holdPolicy)}\n`);
    });
  pools.command('delete <name>').description('delete a pool with its held leases (refused while a lease is bound or pinned)')
    .option('--force', 'delete it even with bound or pinned leases (their pods lose their addresses)')
    .addOption(jsonOpt())
    .action(async (name: string, o: { force?: boolean; json?: boolean }, cmd: Command) => {
      const r = await connect(cmd).deletePool(name, o.force === true);
      out(o.json ? json(r) : `deleted pool ${r.deleted.name} ${r.deleted.cidr} and ${r.removedLeases} lease(s)\n`);
    });

  // ---- leases ----
  const leases = program.command('leases').description('address leases, their history, pins and releases');
  leases.command('ls').description('list leases')
    .option('--pool <pool>', 'only this pool')
    .option('--host <host>', 'only leases bound on this host')
    .addOption(new Option('--state <state>', 'only this state').choices(['bound', 'held', 'pinned']))
    .option('--identity <identity>', 'only this identity')
    .option('--limit <n>', 'one page of at most n leases, and a --continue token when more follow', arg(parsePositiveInt))
    .option('--continue <token>', 'the next page of an earlier listing (same filters)')
    .option('--all', 'follow every page (the default without --limit)')
    .addOption(jsonOpt())
    .action(async (o: LeaseFilter & { json?: boolean; all?: boolean }, cmd: Command) => {
      const { json: asJson, all, ...filter } = o;
      const c = connect(cmd);
      if (filter.limit !== undefined && !all) {
        const r = await c.leases(filter);
        out(asJson ? json(r) : leasesTable(r.leases) + moreHint(r.continue));
        return;
      }
      const leases: LeaseView[] = [];
      // Following pages: large ones, as each page costs the controller (and etcd) a range read.
      const limit = filter.limit ?? ALL_PAGE;
      for (let token = filter.continue, first = true; first || token !== undefined; first = false) {
        const r = await c.leases({ ...filter, limit, continue: token });
        leases.push(...r.leases);
        token = r.continue;
      }
      out(asJson ? json({ leases }) : leasesTable(leases));
    });
  leases.command('show <ip-or-identity>').description('who holds an address, or which address an identity holds')
    .option('--pool <pool>', 'look only in this pool')
    .addOption(jsonOpt())
    .action(async (subject: string, o: { pool?: string; json?: boolean }, cmd: Command) => {
      const c = connect(cmd);
      const lease = isIpAddress(subject) ? await c.lease(subject, o.pool) : await leaseOfIdentity(c, subject, o.pool);
      out(o.json ? json(lease) : leaseDetail(lease, now()));
    });
  leases.command('history <ip-or-identity>').description('lease events of an address or identity; --at answers "who had it then"')
    .option('--at <time>', 'only the event in force at this time (ISO 8601, "YYYY-MM-DD HH:MM" local, "yesterday 14:02", "2h ago")', arg((s) => parseInstant(s, now())))
    .option('--since <time>', 'events at or after this time', arg((s) => parseInstant(s, now())))
    .option('--until <time>', 'events at or before this time', arg((s) => parseInstant(s, now())))
    .option('--limit <n>', 'at most the n most recent events (one page; the default page is 1000)', arg(parsePositiveInt))
    .option('--continue <token>', 'the next (older) page of an earlier query')
    .option('--all', 'follow every page back to the oldest event kept')
    .addOption(jsonOpt())
    .action(async (subject: string, o: { at?: string; since?: string; until?: string; limit?: number; continue?: string; all?: boolean; json?: boolean }, cmd: Command) => {
      const byIp = isIpAddress(subject);
      const c = connect(cmd);
      const q = { ...(byIp ? { ip: subject } : { identity: subject }), at: o.at, since: o.since, until: o.until, limit: o.limit };
      let r = await c.history({ ...q, continue: o.continue });
      if (o.all) {
        // Pages come newest first; each one is older than the last.
        const events = [...r.events];
        while (r.continue !== undefined) {
          r = await c.history({ ...q, continue: r.continue });
          events.unshift(...r.events);
        }
        r = { events };
      }
      if (o.json) out(json(r));
      else if (o.at !== undefined) out(describeAt(subject, o.at, r.events));
      else out(historyTable(r.events) + moreHint(r.continue));
    });
  leases.command('pin <identity>').description('reserve an address for an identity forever (before or after it exists)')
    .requiredOption('--pool <pool>', 'pool to pin in')
    .option('--ip <ip>', 'the address to pin (default: the identity\'s current one, else a free one)', arg(parseIpArg))
    .addOption(jsonOpt())
    .action(async (identity: string, o: { pool: string; ip?: string; json?: boolean }, cmd: Command) => {
      const l = await connect(cmd).pin(o.pool, { identity, ...(o.ip !== undefined ? { ip: o.ip } : {}) });
      out(o.json ? json(l) : `pinned ${l.identity} to ${l.ip} in pool ${l.pool} (${l.state}, never expires)\n`);
    });
  leases.command('release <ip>').description('operator release: free an address now, pinned or held (bound only with --force)')
    .requiredOption('--pool <pool>', 'pool of the address')
    .option('--force', 'free it even while a container is bound to it')
    .addOption(jsonOpt())
    .action(async (ip: string, o: { pool: string; force?: boolean; json?: boolean }, cmd: Command) => {
      const r = await connect(cmd).free(o.pool, ip, o.force === true);
      const l = r.freed;
      const was = l.binding ? `bound to ${l.identity} on ${l.binding.host}, container ${l.binding.containerId}` : `${l.state}${l.pinned ? ', pinned' : ''} for ${l.identity}`;
      out(o.json ? json(r) : `freed ${l.ip} in pool ${l.pool} (was ${was})\n`);
    });

  // ---- hosts ----
  const hosts = program.command('hosts').description('hosts registered by their agents');
  hosts.command('ls').description('list hosts with their liveness').addOption(jsonOpt())
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const r = await connect(cmd).hosts();
      out(o.json ? json(r) : hostsTable(r.hosts));
    });
  hosts.command('forget <host>').description('declare a host dead now: its record goes, its bound leases become held (refused while its agent is alive)')
    .option('--force', 'forget it even while its agent is alive (a running agent re-registers)')
    .addOption(jsonOpt())
    .action(async (host: string, o: { force?: boolean; json?: boolean }, cmd: Command) => {
      const r = await connect(cmd).forgetHost(host, o.force === true);
      out(o.json ? json(r) : forgetLine(r));
    });

  // ---- status ----
  program.command('status').description('the cluster at a glance: hosts with agent liveness and last pass, pools, leases needing attention')
    .addOption(jsonOpt())
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const s = await connect(cmd).status();
      out(o.json ? json(s) : statusText(s, now()));
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return commanderExit(e, program, argv, io);
    const { line, exitCode } = errorLine(e, ctx);
    io.stderr.write(`${line}\n`);
    if (!isBerthError(e) && e instanceof Error && io.env.BERTH_DEBUG) io.stderr.write(`${e.stack}\n`);
    return exitCode;
  } finally {
    client?.close();
  }
}

/** Help asked for exits 0; everything else commander rejects is one line, exit 2. */
function commanderExit(e: CommanderError, program: Command, argv: string[], io: Io): number {
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return 0;
  if (e.code === 'commander.help') {
    // `berthctl` or `berthctl leases` alone: name what is missing instead of dumping help.
    const group = program.commands.find((c) => argv.includes(c.name()));
    const parent = group ?? program;
    const names = parent.commands.map((c) => c.name()).join(', ');
    const what = group ? `${group.name()} needs a subcommand` : 'missing command';
    io.stderr.write(`berthctl: ${what}: ${names} (see berthctl ${group ? `${group.name()} ` : ''}--help)\n`);
    return 2;
  }
  io.stderr.write(`berthctl: ${oneLine(e.message.replace(/^error: /, ''))}\n`);
  return 2;
}

function readToken(file: string): string {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) {
    throw new BerthError('InvalidConfig', `${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'cannot read token file');
  }
  const token = text.trim();
  if (token === '') throw new BerthError('InvalidConfig', file, 'token file is empty');
  return token;
}

/** The last line of a page that has more after it: how to ask for the next one. */
function moreHint(token: string | undefined): string {
  return token === undefined ? '' : `more: pass --continue ${token}\n`;
}

async function leaseOfIdentity(c: ControllerClient, identity: string, pool?: string): Promise<LeaseView> {
  const { leases } = await c.leases({ identity, pool });
  if (leases.length === 0) throw new BerthError('LeaseNotFound', `identity ${identity}${pool ? ` in pool ${pool}` : ''}`);
  if (leases.length > 1) {
    throw new BerthError('InvalidRequest', `${identity} has leases in pools ${leases.map((l) => l.pool).join(', ')}`, 'pass --pool to choose one');
  }
  return leases[0];
}
