import test from 'ava';
import { hostRecord, recordNeedsWrite } from './registration';

test('hostRecord normalises the MAC and stamps the registration time', (t) => {
  const h = hostRecord({ name: 'h1', underlayIp: '198.19.0.11', vtepMac: '0E:BE:00:11:22:33', vni: 4242, pool: 'default' }, new Date(0));
  t.deepEqual(h, { name: 'h1', underlayIp: '198.19.0.11', vtepMac: '0e:be:00:11:22:33', vni: 4242, pool: 'default', registeredAt: '1970-01-01T00:00:00.000Z' });
});

test('the host record is rewritten only when missing, different, or annotated by the reaper', (t) => {
  const self = { name: 'h1', underlayIp: '198.19.0.11', vtepMac: '0E:BE:00:11:22:33', vni: 4242, pool: 'default' };
  const stored = hostRecord(self, new Date(5000));
  t.true(recordNeedsWrite(null, self));
  t.false(recordNeedsWrite(stored, self), 'registeredAt alone never causes a write');
  t.true(recordNeedsWrite({ ...stored, underlayIp: '198.19.0.12' }, self));
  t.true(recordNeedsWrite({ ...stored, absent: { since: 'x', deadAt: 'y' } }, self));
  t.true(recordNeedsWrite({ ...stored, dead: { at: 'x', by: 'operator', reason: 'r' } }, self));
});
