import test from 'ava';
import { hostRecord } from './registration';

test('hostRecord normalises the MAC and stamps the registration time', (t) => {
  const h = hostRecord({ name: 'h1', underlayIp: '198.19.0.11', vtepMac: '0E:BE:00:11:22:33', vni: 4242, pool: 'default' }, new Date(0));
  t.deepEqual(h, { name: 'h1', underlayIp: '198.19.0.11', vtepMac: '0e:be:00:11:22:33', vni: 4242, pool: 'default', registeredAt: '1970-01-01T00:00:00.000Z' });
});
