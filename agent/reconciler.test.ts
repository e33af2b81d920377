import test from 'ava';
import { silentLogger } from '../common/log';
import type { Netlink } from './kernel/nl';
import { emptyState, type KernelState, type Op } from './plan';
import { Reconciler } from './reconciler';

/** A fake kernel: apply() records ops into state, optionally refusing some. */
function fakeKernel(refuse = 0) {
  let state: KernelState = emptyState();
  let refusals = refuse;
  const applied: Op[][] = [];
  return {
    applied,
    get state() { return state; },
    kernel: {
      observe: async () => structuredClone(state),
      apply: async (_nl: Netlink, ops: Op[]) => {
        applied.push(ops);
        const failed = [];
        for (const o of ops) {
          if (refusals > 0) { refusals--; failed.push({ op: o, error: new Error('Request rejected: ENODEV') }); continue; }
          if (o.kind === 'route') state = { ...state, routes: o.op === 'replace' ? [...state.routes.filter((r) => r.dst !== o.route.dst), o.route] : state.routes.filter((r) => r.dst !== o.route.dst) };
        }
        return { applied: ops.length - failed.length, failed };
      },
    },
  };
}

const want = (n: number): KernelState => ({ ...emptyState(), routes: Array.from({ length: n }, (_, i) => ({ dst: `198.18.0.${i + 2}/32`, dev: 'berth0' })) });

test('marks during a pass coalesce into one follow-up pass; a converged pass plans nothing', async (t) => {
  const k = fakeKernel();
  let desired = want(2);
  const r = new Reconciler({ netlink: {} as Netlink, desired: () => desired, log: silentLogger, kernel: k.kernel });
  const first = r.waitForPass();
  r.start();
  t.like(await first, { pass: 1, ops: 2, applied: 2, failed: 0, why: 'start' });
  desired = want(3);
  const next = r.waitForPass();
  for (let i = 0; i < 5; i++) r.markDirty(`event ${i}`);
  t.like(await next, { pass: 2, ops: 1, why: 'event 0' });
  const idle = r.waitForPass();
  r.markDirty('resync');
  t.like(await idle, { pass: 3, ops: 0 });
  await r.stop();
  t.is(r.passes, 3);
});

test('refused ops are retried by a later pass', async (t) => {
  const k = fakeKernel(1);
  const r = new Reconciler({ netlink: {} as Netlink, desired: () => want(2), log: silentLogger, kernel: k.kernel, retryMs: 5 });
  const first = r.waitForPass();
  r.start();
  t.like(await first, { ops: 2, applied: 1, failed: 1 });
  const retry = await r.waitForPass();
  t.like(retry, { why: 'retry', ops: 1, applied: 1, failed: 0 });
  await r.stop();
  t.is(k.state.routes.length, 2);
});

test('no desired state (pool unknown) means no kernel access at all', async (t) => {
  const k = fakeKernel();
  const r = new Reconciler({ netlink: {} as Netlink, desired: () => undefined, log: silentLogger, kernel: k.kernel });
  t.like(await r.runPass(), { ops: 0, failed: 0 });
  t.deepEqual(k.applied, []);
});

test('an event pass waits for yieldTo; start, resync and retry passes do not', async (t) => {
  let release!: () => void;
  let yields = 0;
  const r = new Reconciler({
    netlink: {} as Netlink, desired: () => want(1), log: silentLogger, kernel: fakeKernel().kernel,
    yieldTo: () => { yields++; return new Promise<void>((res) => { release = res; }); },
  });
  t.teardown(() => r.stop());
  const first = r.waitForPass();
  r.start();
  t.is((await first).why, 'start');
  t.is(yields, 0, 'the start pass does not wait');
  const next = r.waitForPass();
  r.markDirty('cni');
  await new Promise((res) => setTimeout(res, 20));
  t.is(yields, 1);
  let done = false;
  void next.then(() => { done = true; });
  await new Promise((res) => setTimeout(res, 20));
  t.false(done, 'the event pass waits while the work is in progress');
  release();
  t.is((await next).why, 'cni');
});

test('devices are ensured on start, on a verifying pass, when the wanted devices change, and after a failed pass; not on every event', async (t) => {
  const k = fakeKernel();
  const ensured: string[] = [];
  const dev = (local: string) => ({ bridge: { name: 'berth0', address: '198.18.0.1/32', mtu: 1450 }, vxlan: { name: 'berth.vxlan', vni: 1, local, port: 4789, mtu: 1450 } });
  let devices = dev('198.19.0.11');
  let refuse = false;
  const r = new Reconciler({
    netlink: {} as Netlink, desired: () => ({ ...want(1), devices }) as never, log: silentLogger, retryMs: 600_000,
    kernel: { ...k.kernel, ensureDevices: async (_nl, d) => { if (refuse) throw new Error('Request rejected: ENODEV'); ensured.push(d.vxlan.local); } },
  });
  t.teardown(() => r.stop());
  const pass = async (why: string) => { const p = r.waitForPass(); if (why === 'start') r.start(); else r.markDirty(why); return p; };
  await pass('start');
  await pass('watch');
  await pass('cni');
  t.deepEqual(ensured, ['198.19.0.11'], 'event passes with the same devices skip the lookups');
  devices = dev('198.19.0.12');
  await pass('watch');
  t.deepEqual(ensured, ['198.19.0.11', '198.19.0.12'], 'changed devices are ensured at the next event');
  refuse = true;
  devices = dev('198.19.0.13');
  t.like(await pass('watch'), { failed: 1 }, 'the kernel refused the changed devices');
  refuse = false;
  await pass('watch');
  t.deepEqual(ensured, ['198.19.0.11', '198.19.0.12', '198.19.0.13'], 'after a failed pass the next one ensures them');
  await pass('cni');
  t.is(ensured.length, 3);
  await pass('resync');
  t.is(ensured.length, 4, 'a resync pass always checks them');
});
