/**
 * deploy/kubernetes stays valid Kubernetes: every object in every YAML file,
 * and every object kustomize renders, validates against the API schemas of
 * its kind (the `kubernetes-models` package: validators generated from the
 * Kubernetes OpenAPI document). Every YAML file is named by a kustomization.
 * With `kubectl` on the machine the base and the trial overlay are built by
 * `kubectl kustomize`; without it that check is skipped and said so.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { K8S_DIR, parseYamlDocs, type K8sObject } from './harness/k8s';

const ROOT = join(__dirname, '../..');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** The kubernetes-models module for apiVersion/kind (core v1 is `v1/<Kind>`, a group's is `<group>/<version>/<Kind>`). */
async function validatorFor(o: K8sObject): Promise<new (x: unknown) => { validate(): void }> {
  const spec = `kubernetes-models/${o.apiVersion}/${o.kind}`;
  const mod = (await import(spec)) as Record<string, new (x: unknown) => { validate(): void }>;
  const cls = mod[o.kind];
  if (typeof cls !== 'function') throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  return cls;
}

async function schemaErrors(o: K8sObject): Promise<string | undefined> {
  if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return 'apiVersion and kind are required';
  const Cls = await validatorFor(o);
  try {
    new Cls(o).validate();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

const yamlFiles = () => walk(K8S_DIR).filter((f) => /\.ya?ml$/.test(f) && !f.endsWith('kustomization.yaml'));
const kustomizations = () => walk(K8S_DIR).filter((f) => f.endsWith('kustomization.yaml'));

test('every object in every manifest validates against the Kubernetes schema of its kind', async (t) => {
  const files = yamlFiles();
  t.true(files.length >= 6, files.join(', '));
  const kinds = new Set<string>();
  for (const f of files) {
    for (const o of parseYamlDocs(readFileSync(f, 'utf8'), f)) {
      const err = await schemaErrors(o);
      t.is(err, undefined, `${relative(ROOT, f)}: ${o.kind} ${o.metadata?.name}`);
      kinds.add(o.kind);
    }
  }
  for (const k of ['Namespace', 'ServiceAccount', 'Secret', 'ConfigMap', 'Deployment', 'Service', 'DaemonSet', 'StatefulSet']) t.true(kinds.has(k), k);
});

test('the schema check catches a wrong manifest (a port that is an object, a missing selector)', async (t) => {
  const ds = parseYamlDocs(readFileSync(join(K8S_DIR, 'base/agent.yaml'), 'utf8'), 'agent.yaml')[0] as any;
  t.is(await schemaErrors(ds), undefined);
  const badPort = structuredClone(ds);
  badPort.spec.template.spec.containers[0].livenessProbe.httpGet.port = { n: 9481 };
  t.truthy(await schemaErrors(badPort));
  const noSelector = structuredClone(ds);
  delete noSelector.spec.selector;
  t.truthy(await schemaErrors(noSelector));
});

test('every manifest file is a resource (or patch) of a kustomization, and every listed file exists', (t) => {
  const named = new Set<string>();
  for (const k of kustomizations()) {
    const doc = parseYamlDocs(readFileSync(k, 'utf8'), k)[0] as any;
    const entries: string[] = [...(doc.resources ?? []), ...(doc.patches ?? []).map((p: { path?: string }) => p.path).filter(Boolean)];
    for (const r of entries) {
      const p = resolve(dirname(k), r);
      t.notThrows(() => statSync(p), `${relative(ROOT, k)} names ${r}`);
      if (statSync(p).isDirectory()) t.true(kustomizations().includes(join(p, 'kustomization.yaml')), `${r} has a kustomization`);
      named.add(p);
    }
  }
  for (const f of walk(K8S_DIR).filter((f) => !f.endsWith('kustomization.yaml'))) t.true(named.has(f), `${relative(ROOT, f)} is in no kustomization`);
});

function kubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

for (const dir of ['.', 'trial-etcd']) {
  test(`kubectl kustomize ${dir} builds, and what it renders validates`, async (t) => {
    if (!kubectl()) return t.pass('kubectl is not installed: the build is not checked (the file checks above still run)');
    const out = execFileSync('kubectl', ['kustomize', join(K8S_DIR, dir)], { encoding: 'utf8' });
    const objs = parseYamlDocs(out, `kustomize ${dir}`);
    for (const o of objs) t.is(await schemaErrors(o), undefined, `${o.kind} ${o.metadata?.name}`);
    const names = objs.map((o) => `${o.kind}/${o.metadata?.name}`);
    t.true(names.includes('DaemonSet/berth-agent') && names.includes('Deployment/berth-controller'), names.join(' '));
    if (dir === 'trial-etcd') {
      t.true(names.includes('StatefulSet/berth-etcd'));
      for (const o of objs.filter((x) => x.kind === 'DaemonSet' || x.kind === 'Deployment') as any[]) {
        const env = o.spec.template.spec.containers[0].env.find((e: { name: string }) => e.name === 'ETCD_ENDPOINTS');
        t.regex(env.value, /BERTH_ETCD_SERVICE_HOST/, `${o.kind} reaches the trial etcd`);
      }
    }
  });
}
