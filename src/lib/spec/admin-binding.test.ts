import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { parseSpecDocuments, SPEC_KINDS } from './index.ts';
import type { SpecProblem } from './index.ts';

function doc(spec: unknown, name = 'platform-admins'): string {
  return stringify({ apiVersion: 'causeway/v1', kind: 'AdminBinding', metadata: { name }, spec });
}

function problemsOf(text: string): SpecProblem[] {
  const result = parseSpecDocuments(text);
  assert.ok(!result.ok, 'expected problems');
  return result.problems;
}

void describe('kind: AdminBinding', () => {
  void test('is a spec kind, and a binding parses with defaults for the lists it leaves out', () => {
    assert.ok((SPEC_KINDS as string[]).includes('AdminBinding'));
    const result = parseSpecDocuments(doc({ role: 'admin', users: ['alice'] }));
    assert.ok(result.ok, JSON.stringify(result));
    const [binding] = result.objects;
    assert.ok(binding?.kind === 'AdminBinding');
    assert.deepEqual(binding.spec, { role: 'admin', users: ['alice'], groups: [], kinds: [] });
  });

  void test('the contract example parses: groups, users and kinds', () => {
    const result = parseSpecDocuments(doc({ role: 'admin', users: ['alice'], groups: ['platform'], kinds: ['Service', 'Policy'] }));
    assert.ok(result.ok, JSON.stringify(result));
    assert.deepEqual(result.objects[0]?.spec, { role: 'admin', users: ['alice'], groups: ['platform'], kinds: ['Service', 'Policy'] });
  });

  void test('a role other than admin or viewer is refused', () => {
    const problems = problemsOf(doc({ role: 'owner', users: ['alice'] }));
    assert.deepEqual(problems.map((p) => p.path), ['spec.role']);
  });

  void test('a binding for nobody (no users, no groups) is refused', () => {
    const problems = problemsOf(doc({ role: 'viewer', users: [], groups: [] }));
    assert.equal(problems.length, 1);
    assert.match(problems[0]?.message ?? '', /at least one user or group/);
  });

  void test('every kind must be a known spec kind, and each unknown one is named by its path', () => {
    const problems = problemsOf(doc({ role: 'admin', groups: ['ops'], kinds: ['Service', 'Widget', 'service'] }));
    assert.deepEqual(problems.map((p) => p.path), ['spec.kinds[1]', 'spec.kinds[2]']);
    assert.match(problems[0]?.message ?? '', /must be a spec kind: one of .*Service/);
  });

  void test('kinds are only for role admin', () => {
    const problems = problemsOf(doc({ role: 'viewer', groups: ['ops'], kinds: ['Service'] }));
    assert.deepEqual(problems.map((p) => p.path), ['spec.kinds']);
  });

  void test('unknown fields and malformed user names are refused', () => {
    const problems = problemsOf(doc({ role: 'admin', users: ['bad name'], scope: 'everything' }));
    assert.deepEqual(problems.map((p) => p.path).sort(), ['spec.scope', 'spec.users[0]']);
  });
});
