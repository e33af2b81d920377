import test from 'ava';
import { keys } from '../common/keys';
import { ClusterCache } from './source';

const lease = (host: string) => JSON.stringify({ pool: 'p', ip: '198.18.0.5', identity: 'x', state: 'bound', pinned: false, binding: { host, containerId: 'c', ifName: 'eth0', boundAt: '' }, createdAt: '', updatedAt: '' });

test('a put never replaces a value written at a higher revision', (t) => {
  const c = new ClusterCache('p');
  t.true(c.apply('put', keys.lease('p', '198.18.0.5'), lease('b'), 9n));
  t.false(c.apply('put', keys.lease('p', '198.18.0.5'), lease('a'), 5n), 'a late event from revision 5 is ignored');
  t.is(c.snapshot().leases[0].binding?.host, 'b');
  t.is(c.snapshot().leases[0].revision, '9');
  t.false(c.apply('delete', keys.lease('p', '198.18.0.5'), '', 7n), 'a delete older than the value is ignored');
  t.true(c.apply('delete', keys.lease('p', '198.18.0.5'), '', 10n));
  t.deepEqual(c.snapshot().leases, []);
  t.is(c.snapshot().revision, 10n);
});

test('only the own pool, every pool record and the host prefix matter', (t) => {
  const c = new ClusterCache('p');
  t.false(c.apply('put', keys.lease('other', '198.18.0.5'), lease('a'), 2n));
  t.true(c.apply('put', keys.pool('other'), '{"name":"other","cidr":"198.18.64.0/24"}', 3n), 'another pool\'s CIDR shapes egress');
  t.false(c.apply('put', keys.identity('p', 'x'), '{"ip":"198.18.0.5"}', 4n));
  t.true(c.apply('put', keys.pool('p'), '{"name":"p","cidr":"198.18.0.0/24","gateway":"198.18.0.1"}', 5n));
  t.true(c.apply('put', keys.host('h1'), '{"name":"h1"}', 6n));
  const s = c.snapshot();
  t.is(s.pool?.gateway, '198.18.0.1');
  t.deepEqual(s.hosts.map((h) => h.name), ['h1']);
  t.deepEqual(s.leases, []);
  t.deepEqual(s.pools.map((p) => p.cidr).sort(), ['198.18.0.0/24', '198.18.64.0/24']);
  t.is(s.pool?.name, 'p', 'another pool never stands in for the own one');
  t.true(c.apply('delete', keys.pool('other'), '', 7n));
  t.deepEqual(c.snapshot().pools.map((p) => p.name), ['p']);
});
