import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { deviceGroup } from './device-group.ts';

function program(): Command {
  return new Command('causeway').exitOverride().configureOutput({ writeOut: () => undefined, writeErr: () => undefined });
}

void describe('the shared device command', () => {
  void test('both sides get one device command, and show runs the client without a name and the admin with one, in either order', async () => {
    for (const order of [['client', 'admin'], ['admin', 'client']]) {
      const p = program();
      const calls: string[] = [];
      for (const side of order) {
        const group = deviceGroup(p);
        if (side === 'client') {
          group.device.command('report').action(() => {
            calls.push('report');
          });
          group.onShowSelf(() => Promise.resolve(void calls.push('self')));
        } else {
          group.device.command('list').action(() => {
            calls.push('list');
          });
          group.onShowNamed((name) => Promise.resolve(void calls.push(`named:${name}`)));
        }
        assert.equal(group.showShared, true);
      }
      assert.equal(p.commands.filter((c) => c.name() === 'device').length, 1);
      await p.parseAsync(['node', 'causeway', 'device', 'show']);
      await p.parseAsync(['node', 'causeway', 'device', 'show', 'laptop-1']);
      await p.parseAsync(['node', 'causeway', 'device', 'report']);
      await p.parseAsync(['node', 'causeway', 'device', 'list']);
      assert.deepEqual(calls, ['self', 'named:laptop-1', 'report', 'list'], order.join(' then '));
    }
  });

  void test('a show registered without the group is reported as not shared, so the client can offer another name', () => {
    const p = program();
    p.command('device').command('show').argument('<id>');
    assert.equal(deviceGroup(p).showShared, false);
  });
});
