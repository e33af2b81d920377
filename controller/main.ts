#!/usr/bin/env node
/**
 * berth-controller: the lease authority. Many replicas may run against one
 * etcd; they coordinate only through etcd transactions and one election.
 */
import { Command } from 'commander';
import { addEtcdOptions, etcdConnectionFrom, oneLineErrors, positiveInt, readTokenFile } from '../common/daemon-cli';
import { castError } from '../common/errors';
import { createLogger } from '../common/log';
import { startController } from './app';

const program = oneLineErrors(addEtcdOptions(new Command('berth-controller')
  .description('Berth lease authority: pools, hosts and stable address leases in etcd, served over HTTP')))
  .option('--listen <addr...>', 'HTTP listen addresses: host:port or unix:///path (mode 0600)', ['127.0.0.1:7480'])
  .option('--token-file <file>', 'require this bearer token on every API call')
  .option('--metrics-listen <addr>', 'Prometheus /metrics, /healthz and /readyz: host:port or unix:///path (mode 0600)', '127.0.0.1:9480')
  .option('--sweep-ms <ms>', 'expiry sweep interval', positiveInt, 1000)
  .option('--history-max-age-hours <h>', 'keep lease history this long', positiveInt, 168)
  .option('--history-max-per-address <n>', 'keep at most this many events per address', positiveInt, 200)
  .option('--host-dead-after <seconds>', 'declare a host dead once its agent has been absent this long; its bound leases become held', positiveInt, 300);

async function main(): Promise<void> {
  program.parse();
  const o = program.opts();
  const log = createLogger({ component: 'controller' });
  const ctl = await startController({
    etcd: etcdConnectionFrom(o),
    listen: o.listen, token: readTokenFile(o.tokenFile), sweepMs: o.sweepMs,
    historyMaxAgeMs: o.historyMaxAgeHours * 3600_000, historyMaxPerAddress: o.historyMaxPerAddress, hostDeadAfterSeconds: o.hostDeadAfter, metricsListen: o.metricsListen, log,
  });
  const shutdown = (sig: string) => {
    log.info('shutting down', { signal: sig });
    ctl.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((e) => {
  const err = castError(e);
  process.stderr.write(`berth-controller: ${err.message}${err.details ? `: ${err.details}` : ''}\n`);
  process.exit(1);
});
