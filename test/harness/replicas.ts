/**
 * Two controller replicas on one real etcd, each with a client: the setup of
 * controller tests that check what holds across replicas. The clock is the
 * caller's, so holds and expiry are asserted without waiting.
 */
import type { ExecutionContext } from 'ava';
import { startController, type RunningController } from '../../controller/app';
import { ControllerClient } from '../../common/controller-client';
import { isBerthError, type BerthError, type ErrorKind } from '../../common/errors';
import { silentLogger } from '../../common/log';
import { startEtcd, type EtcdServer } from '../../sim/etcd';

export interface Replicas {
  etcd: EtcdServer;
  a: RunningController;
  b: RunningController;
  ca: ControllerClient;
  cb: ControllerClient;
  stop(): Promise<void>;
}

export async function startReplicas(now: () => number): Promise<Replicas> {
  const etcd = await startEtcd();
  const opts = { etcd: { endpoints: [etcd.endpoint] }, listen: '127.0.0.1:0', sweepMs: 100, log: silentLogger, now };
  const [a, b] = [await startController({ ...opts, replicaId: 'replica-a' }), await startController({ ...opts, replicaId: 'replica-b' })];
  const ca = new ControllerClient({ url: a.url });
  const cb = new ControllerClient({ url: b.url });
  const stop = async () => {
    ca.close(); cb.close();
    await a.stop(); await b.stop();
    await etcd.stop();
  };
  return { etcd, a, b, ca, cb, stop };
}

/** Awaits `p`, asserts it fails with a BerthError of `kind`, and returns it. */
export async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, kind: ErrorKind): Promise<BerthError> {
  const e = await t.throwsAsync(p);
  t.true(isBerthError(e), String(e));
  t.is((e as BerthError).kind, kind, `${(e as Error).message}: ${(e as BerthError).details}`);
  return e as BerthError;
}
