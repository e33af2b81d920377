/**
 * The pod netns reaches the real agent from the runtime's view (issue 9,
 * docs/netns.md): the runtime (here: the relay run under `unshare -m`) sees
 * the pod's netns bind-mounted at a path that, in the agent's mount
 * namespace, is an empty file. ADD through the relay plumbs the real pod
 * through the descriptor the relay passed; the result names the sandbox by
 * the runtime's path; CHECK and DEL work the same way; and the same path
 * opened from the agent's view is refused with 4, nothing bound.
 */
import test from 'ava';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, execWithStdin, type ExecResult } from '../sim/exec';
import { eventually } from '../sim/eventually';
import { nsExec } from '../sim/netns';
import { startCniBackend, startSite, type CniBackend } from './harness/cni-site';

let backend: CniBackend;
test.before(async () => {
  backend = await startCniBackend();
});
test.after.always(async () => {
  await backend?.stop();
});

test('ADD, CHECK and DEL through a netns path only the runtime can see', async (t) => {
  const s = await startSite(t, backend.ctl.url, { cidr: '198.18.43.0/24' });
  const pod = s.lab.pod('pod');
  const view = join(s.dir, 'runtime-view');
  mkdirSync(view);
  const path = join(view, 'pod-ns');
  writeFileSync(path, ''); // what the agent sees there: a plain empty file
  const env = (verb: string) => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: verb, CNI_CONTAINERID: 'hand1', CNI_NETNS: path, CNI_IFNAME: 'eth0',
    CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=hand1',
  });
  const asRuntime = (verb: string, extra: Record<string, unknown> = {}): Promise<ExecResult> =>
    execWithStdin('unshare', ['-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$1" "$2" && exec "$0"', BIN, pod.path, path],
      env(verb), s.conf('1.0.0', extra));

  const add = await asRuntime('ADD');
  t.is(add.code, 0, add.stdout + add.stderr);
  t.is(add.json.interfaces.find((i: { sandbox?: string }) => i.sandbox !== undefined)?.sandbox, path, 'the sandbox is named as the runtime named it');
  const ip = add.json.ips[0].address.split('/')[0];
  t.regex(nsExec(pod, 'ip', '-o', 'addr', 'show', 'dev', 'eth0'), new RegExp(`inet ${ip.replace(/\./g, '\\.')}/32`), 'the real pod got its address');

  const check = await asRuntime('CHECK', { prevResult: add.json });
  t.is(check.code, 0, check.stdout);

  // From the agent's own view the path is no namespace: refused, and nothing changes.
  const direct = await execWithStdin(BIN, [], { ...env('ADD'), CNI_CONTAINERID: 'hand2', CNI_ARGS: 'K8S_POD_NAMESPACE=web;K8S_POD_NAME=hand2' }, s.conf('1.0.0'));
  t.is(direct.json?.code, 4, direct.stdout);
  t.regex(direct.json.details, /not a network namespace/);
  t.falsy((await backend.admin.leases({ pool: s.pool, identity: 'k8s/web/hand2' })).leases[0]);

  const del = await asRuntime('DEL', { prevResult: add.json });
  t.is(del.code, 0, del.stdout);
  // DEL takes the pair out of service at once and deletes it in the background (docs/agent.md).
  await eventually(() => { if (/eth0/.test(nsExec(pod, 'ip', '-o', 'link', 'show'))) throw new Error('eth0 still there'); }, { what: 'the pod interface gone' });
  t.pass('the pod interface is gone');
});
