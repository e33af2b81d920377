/**
 * The agent's CNI verbs when TLS to the controller fails: a controller
 * certificate the agent's --ca does not trust makes ADD fail with CNI code
 * 154 (TlsFailed) and one warn line naming the reason, and makes DEL journal
 * the release for replay, as when no replica answers. Real etcd, a real
 * controller serving HTTPS with certificates made in the test, a simulated
 * host. Needs root; touches only bth-* namespaces.
 */
import test from 'ava';
import { join } from 'node:path';
import type { AgentRequest } from '../common/agent-protocol';
import { ControllerClient } from '../common/controller-client';
import { readDelJournal } from '../common/del-journal';
import { silentLogger, type Logger } from '../common/log';
import { createCniHandler } from '../agent/cni-handlers';
import { replayJournal } from '../agent/journal-replay';
import { warmThreadPool } from '../agent/kernel/netns';
import { startController, type RunningController } from '../controller/app';
import { startEtcd, type EtcdServer } from '../sim/etcd';
import { Pki, type Issued } from '../sim/pki';
import { startSite } from './harness/cni-site';

let etcd: EtcdServer;
let ctl: RunningController;
let pki: Pki;
let otherCa: Issued;
let sock: string;

test.before(async () => {
  await warmThreadPool();
  pki = new Pki();
  const ca = pki.ca('ca');
  otherCa = pki.ca('other-ca');
  const server = pki.issue(ca, 'server');
  sock = join(pki.dir, 'controller.sock');
  etcd = await startEtcd();
  ctl = await startController({
    etcd: { endpoints: [etcd.endpoint] }, listen: ['127.0.0.1:0', `unix://${sock}`], log: silentLogger,
    tls: { certFile: server.cert, keyFile: server.key },
  });
});

test.after.always(async () => {
  await ctl?.stop();
  await etcd?.stop();
  pki?.close();
});

function recording(): { log: Logger; lines: { level: string; msg: string; fields?: any }[] } {
  const lines: { level: string; msg: string; fields?: any }[] = [];
  const log: Logger = {
    debug: (msg, fields) => lines.push({ level: 'debug', msg, fields }),
    info: (msg, fields) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields) => lines.push({ level: 'error', msg, fields }),
    child: () => log,
  };
  return { log, lines };
}

test('an untrusted controller certificate: ADD fails with 154 and a warn line, DEL is journalled and replayed later', async (t) => {
  // The site's own client (admin, and its working handler) uses the plain unix socket.
  const s = await startSite(t, `unix://${sock}`);
  const pod = s.lab.pod('pod');
  const distrustful = new ControllerClient({ url: ctl.url, tls: { caFile: otherCa.cert } });
  t.teardown(() => distrustful.close());
  const { log, lines } = recording();
  const bad = createCniHandler({ ...s.deps, controller: distrustful, log });
  const req = (verb: 'ADD' | 'DEL', cid: string): AgentRequest => ({
    verb, containerId: cid, netns: pod.path, ifName: 'eth0', args: { K8S_POD_NAMESPACE: 'web', K8S_POD_NAME: cid }, network: 'berth-net', pool: s.pool,
  });

  const add = await bad(req('ADD', 'tls1'));
  t.false(add.ok);
  const err = (add as { error: { code: string; cniCode: number; msg: string; details: string } }).error;
  t.like(err, { code: 'TlsFailed', cniCode: 154, msg: 'controller certificate not trusted' });
  t.regex(err.details, /^https:\/\/127\.0\.0\.1:\d+: .*\((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|DEPTH_ZERO_SELF_SIGNED_CERT)\); check --ca$/);
  t.like(lines.find((l) => l.level === 'warn'), { msg: 'controller certificate not trusted', fields: { verb: 'ADD', kind: 'TlsFailed' } });
  t.false(lines.some((l) => l.level === 'error'), 'no stack, no internal error');

  // Bound through the working client, then a DEL through the distrustful one: journalled, and it succeeds.
  t.like(await s.handler(req('ADD', 'tls2')), { ok: true });
  t.like(await bad(req('DEL', 'tls2')), { ok: true });
  t.is((await readDelJournal(s.journalDir)).entries.length, 1);
  t.deepEqual(await replayJournal(s.journalDir, s.handler, silentLogger), { replayed: 1, failed: 0 });
  const admin = new ControllerClient({ url: `unix://${sock}` });
  t.teardown(() => admin.close());
  t.like((await admin.leases({ pool: s.pool, identity: 'k8s/web/tls2' })).leases[0], { state: 'held' });
});
