import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { trustProfileSpec } from '../spec/trust-profile.ts';
import { mergeFactorValues, postureRequirements } from './index.ts';

const profile = (name: string, spec: unknown) => ({ metadata: { name }, spec: trustProfileSpec.parse(spec) });

void describe('posture requirements and merged factor values', () => {
  void test('a device is asked about the files and processes of every profile that applies to it, and only those', () => {
    const profiles = [
      profile('linux', { appliesTo: { platforms: ['linux'] }, factors: [{ type: 'fileExists', path: '/etc/corp/agent.conf', effect: 'Low' }, { type: 'processRunning', name: 'falcon-sensor', effect: 'Low' }] }),
      profile('eng', { appliesTo: { groups: ['eng'] }, factors: [{ type: 'processRunning', name: 'falcon-sensor', effect: 'Medium' }, { type: 'processRunning', name: 'osqueryd', effect: 'Low' }] }),
      profile('mac', { appliesTo: { platforms: ['macos'] }, factors: [{ type: 'fileExists', path: '/Library/Corp/agent.plist', effect: 'Low' }] }),
    ];
    assert.deepEqual(postureRequirements(profiles, { platform: 'linux', groups: ['eng'] }), { files: ['/etc/corp/agent.conf'], processes: ['falcon-sensor', 'osqueryd'] });
    assert.deepEqual(postureRequirements(profiles, { platform: 'windows' }), { files: [], processes: [] });
  });

  void test('MDM and CrowdStrike values come from device managers only, never from the device’s report', () => {
    const merged = mergeFactorValues({ firewall: true, mdmCompliant: true, crowdstrikeScore: 100 }, { mdmPresent: true });
    assert.deepEqual(merged, { firewall: true, mdmPresent: true });
    assert.deepEqual(mergeFactorValues(undefined, { mdmCompliant: false, crowdstrikeScore: 55 }), { mdmCompliant: false, crowdstrikeScore: 55 });
    assert.deepEqual(mergeFactorValues({ diskEncryption: false }, undefined), { diskEncryption: false });
  });
});
