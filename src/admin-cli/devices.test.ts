/**
 * `causeway device` against the API routes it calls (devices, users, trust) behind the real API-token
 * auth hook on a plain-HTTP Fastify over an in-memory store, with device trust running. The commands
 * speak HTTP only; the control-plane imports are this test's alone.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Command } from 'commander';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { installErrorHandling } from '../control-plane/api/errors.ts';
import { errorSchema } from '../control-plane/api/schemas.ts';
import { userRoutes } from '../control-plane/api/users.ts';
import { apiTokenAuthenticator, authHook, FailureLimiter } from '../control-plane/auth.ts';
import { openStore } from '../control-plane/store/index.ts';
import type { DeviceRecord, Store } from '../control-plane/store/index.ts';
import { createDeviceTrust } from '../control-plane/trust/index.ts';
import type { DeviceTrustService } from '../control-plane/trust/index.ts';
import { trustRoutes } from '../control-plane/trust/routes.ts';
import { parseExpires } from './devices.ts';
import { registerAdminCommands } from './index.ts';

const actor = 'test';
let store: Store;
let trust: DeviceTrustService;
let app: FastifyInstance;
let env: NodeJS.ProcessEnv;
let laptop: DeviceRecord;

before(async () => {
  store = await openStore({ url: ':memory:' });
  trust = createDeviceTrust({ store, resolveSecret: () => Promise.reject(new Error('no secrets here')) });
  const token = (await store.createApiToken({ name: 'admin', scope: 'admin' }, { actor })).token;
  app = Fastify({ logger: false });
  installErrorHandling(app);
  app.addSchema(errorSchema);
  const hook = authHook({ authenticators: [apiTokenAuthenticator(store)], limiter: new FailureLimiter() });
  await app.register((api, _options, registered) => {
    api.addHook('onRequest', hook);
    userRoutes(api, { store });
    trustRoutes(api, { store, clock: { now: () => Date.now() }, trust: () => trust });
    registered();
  }, { prefix: '/api/v1' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  env = { CAUSEWAY_SERVER: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, CAUSEWAY_TOKEN: token, CAUSEWAY_HOME: '/nonexistent-causeway-home' };

  await store.putObject({ kind: 'TrustProfile', name: 'laptops', spec: { appliesTo: { platforms: [], ownership: [], groups: [] }, staleAfter: '1d', factors: [{ type: 'firewall', effect: 'Low' }, { type: 'diskEncryption', effect: 'Medium' }] } }, { actor });
  const alice = await store.createUser({ name: 'alice', groups: ['eng'] }, { actor });
  laptop = await store.registerDevice({ userId: alice.id, platform: 'linux', osVersion: '24.04', hostname: 'alice-laptop', serial: 'SN-1', ownership: 'corporate-dedicated' }, { actor });
  await store.recordPosture(laptop.id, { factors: { firewall: false, diskEncryption: true }, at: new Date().toISOString() });
  await trust.start();
  await trust.idle();
});
after(async () => {
  await app.close();
  await trust.close();
  await store.close();
});

interface Run {
  out: string[];
  err: string[];
  error: (Error & { code?: string }) | undefined;
}

async function run(args: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command('causeway').exitOverride().configureOutput({ writeOut: (s) => out.push(s), writeErr: (s) => err.push(s) });
  registerAdminCommands(program, { env, out: (line) => out.push(line), err: (line) => err.push(line) });
  try {
    await program.parseAsync(['node', 'causeway', ...args]);
    return { out, err, error: undefined };
  } catch (error) {
    return { out, err, error: error as Error & { code?: string } };
  }
}

async function ok(args: string[]): Promise<string[]> {
  const result = await run(args);
  assert.equal(result.error, undefined, `causeway ${args.join(' ')}: ${result.error?.message ?? ''}\n${result.err.join('\n')}`);
  return result.out;
}

void describe('causeway device', () => {
  void test('device list shows each device with its user, state, trust level and reasons', async () => {
    const lines = await ok(['device', 'list']);
    assert.match(lines[0] ?? '', /^ID\s+USER\s+PLATFORM\s+HOSTNAME\s+STATE\s+TRUST\s+REASONS\s+REPORTED$/);
    const row = lines.find((l) => l.startsWith(laptop.id));
    assert.ok(row !== undefined, lines.join('\n'));
    assert.match(row, /alice\s+linux\s+alice-laptop\s+active\s+Low\s+firewall-off\s+\d{4}-\d{2}-\d{2} /);
    const json = JSON.parse((await ok(['device', 'list', '--user', 'alice', '-o', 'json'])).join('\n')) as Array<{ id: string; trust: { level: string }; postureAt: string }>;
    assert.deepEqual(json.map((d) => [d.id, d.trust.level, typeof d.postureAt]), [[laptop.id, 'Low', 'string']]);
  });

  void test('device show explains the level: reasons, the explanation, each factor and what fixes it; a host name or id prefix finds the device', async () => {
    const lines = await ok(['device', 'show', 'alice-laptop']);
    const text = lines.join('\n');
    assert.match(text, new RegExp(`^device: +${laptop.id}$`, 'm'));
    assert.match(text, /^user: +alice$/m);
    assert.match(text, /^trust: +Low \(scored /m);
    assert.match(text, /^reasons: +firewall-off$/m);
    assert.match(text, /^explanation: Trust Low \(profile laptops\): the firewall is off \[Low\]/m);
    assert.match(text, /^ {2}UNMET firewall \[Low, profile laptops\]: observed false, required on; to fix: .+/m);
    assert.match(text, /^ {2}met {3}diskEncryption \[Medium, profile laptops\]/m);
    assert.deepEqual(await ok(['device', 'show', laptop.id.slice(0, 8)]), lines);
    const missing = await run(['device', 'show', 'no-such-device']);
    assert.equal(missing.error?.code, 'NOT_FOUND');
    assert.match(missing.error?.message ?? '', /causeway device list/);
  });

  void test('device override caps the level until clear-override lifts it; show lists the override; a bad level is refused before any request', async () => {
    const capped = await ok(['device', 'override', 'alice-laptop', '--max-level', 'alwaysdeny', '--reason', 'incident 4711: reported stolen', '--source', 'security-team', '--expires', '8h']);
    assert.match(capped[0] ?? '', new RegExp(`^device/${laptop.id} capped at AlwaysDeny by security-team until \\S+ \\S+; trust now AlwaysDeny$`));
    const shown = (await ok(['device', 'show', laptop.id])).join('\n');
    assert.match(shown, /^trust: +AlwaysDeny/m);
    assert.match(shown, /^ {2}security-team: at most AlwaysDeny, incident 4711: reported stolen \(set by token:\S+ .+, until .+\)$/m);
    assert.equal((await store.getDevice(laptop.id))?.trust?.level, 'AlwaysDeny');

    assert.deepEqual(await ok(['device', 'clear-override', laptop.id, '--source', 'security-team']), [`device/${laptop.id} override of security-team cleared; trust now Low`]);
    const again = await run(['device', 'clear-override', laptop.id, '--source', 'security-team']);
    assert.equal(again.error?.code, 'NOT_FOUND');

    const bad = await run(['device', 'override', laptop.id, '--max-level', 'Highest', '--reason', 'r', '--source', 's']);
    assert.ok(bad.error !== undefined);
    assert.match(bad.err.join(''), /must be one of High, Medium, Low, AlwaysDeny/);
    const noReason = await run(['device', 'override', laptop.id, '--max-level', 'Low', '--source', 's']);
    assert.ok(noReason.error !== undefined, 'a reason is required');
  });

  void test('device rescore, ban, unban and unregister', async () => {
    const rescored = await ok(['device', 'rescore', laptop.id]);
    assert.equal(rescored[0], `device/${laptop.id} trust Low`);
    assert.match(rescored[1] ?? '', /the firewall is off/);
    assert.deepEqual(await ok(['device', 'ban', laptop.id]), [`device/${laptop.id} banned`]);
    assert.equal((await store.getDevice(laptop.id))?.banned, true);
    assert.match((await ok(['device', 'list'])).join('\n'), /\sbanned\s/);
    assert.deepEqual(await ok(['device', 'unban', laptop.id]), [`device/${laptop.id} unbanned`]);
    const alice = await store.getUserByName('alice');
    const spare = await store.registerDevice({ userId: alice?.id ?? '', platform: 'macos', hostname: '\u001b[31mspare' }, { actor });
    assert.ok(!(await ok(['device', 'list'])).join('\n').includes('\u001b'), 'control characters from the server are escaped');
    assert.deepEqual(await ok(['device', 'unregister', spare.id]), [`device/${spare.id} unregistered`]);
    assert.equal(await store.getDevice(spare.id), undefined);
  });

  void test('--expires takes a duration from now or a future ISO time, and refuses the past or nonsense', () => {
    const now = Date.parse('2026-11-27T12:00:00Z');
    assert.equal(parseExpires('8h', now), '2026-11-27T20:00:00.000Z');
    assert.equal(parseExpires('2026-12-01T00:00:00Z', now), '2026-12-01T00:00:00.000Z');
    assert.throws(() => parseExpires('2020-01-01T00:00:00Z', now), /in the past/);
    assert.throws(() => parseExpires('soon', now), /not a time/);
  });
});
