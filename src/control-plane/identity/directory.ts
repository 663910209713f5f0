/**
 * The built-in user directory's login check, used by the login page (interactions.ts) and the
 * password grant: user name, password and, when the user has one, a TOTP code.
 *
 * What an attempt can learn is kept small:
 * - an unknown user, a disabled user, a user who logs in through an org IdP (`source` other than
 *   `local`), a user without a password and a wrong password all answer `invalid-credentials`, after
 *   the same scrypt work (a dummy hash stands in where there is no real one);
 * - `totp-required` is only answered once the password was right;
 * - after `maxFailures` failed attempts in a row the account is locked for `lockoutMs` (counted in
 *   the store, so every replica shares it); while locked, even the right password answers `locked`,
 *   and attempts are not evaluated or counted (they cannot extend the lock, so a stranger cannot keep
 *   someone locked out longer than one lock at a time from one address, see the rate limit);
 * - every failed attempt from a source address drains its FailureLimiter bucket (in memory, per
 *   replica); an address that runs out gets `rate-limited` before any work is done (CP-12).
 *
 * TOTP replay: a code is refused when its time step is at or before the last step accepted for that
 * user. The last step is kept in memory (exact within one replica) and in the store's OIDC records
 * (model `TotpLastStep`, two minutes), so another replica refuses it too, except when both check the
 * same code at the same moment (the store write is not compare-and-set).
 *
 * Audit events (store.appendAuditEvent): `login` (actor `user:<name>`), `login-failed` and `locked`
 * (actor `login:<source>`), each with the source address and a reason, never a password or code.
 */
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { errorMessage } from '../../lib/errors.ts';
import type { Logger } from '../../lib/log.ts';
import { silentLogger } from '../../lib/log.ts';
import { FailureLimiter, sourceKey } from '../auth.ts';
import type { Store, UserRecord } from '../store/index.ts';
import { dummyPasswordHash, verifyPassword } from './passwords.ts';
import type { SecretBox } from './secret-box.ts';
import { matchTotp, TOTP_PERIOD_SECONDS } from './totp.ts';

export interface LoginAttempt {
  name: string;
  password: string;
  totp?: string;
  /** The client's IP address. */
  source: string;
}

export type LoginFailure = 'invalid-credentials' | 'totp-required' | 'totp-invalid' | 'locked' | 'rate-limited';

export type LoginResult = { ok: true; user: UserRecord } | { ok: false; code: LoginFailure; message: string; retryAfterSeconds?: number };

export interface Directory {
  authenticate(attempt: LoginAttempt): Promise<LoginResult>;
}

export type DirectoryStore = Pick<Store, 'getUserCredentials' | 'recordLoginFailure' | 'recordLoginSuccess' | 'appendAuditEvent'> & Partial<Pick<Store, 'oidcFind' | 'oidcUpsert'>>;

export interface DirectoryOptions {
  store: DirectoryStore;
  secretBox: Pick<SecretBox, 'open'>;
  clock?: Clock;
  logger?: Logger;
  /** Failed attempts in a row that lock an account. Default 5. */
  maxFailures?: number;
  /** How long a lock lasts. Default 15 minutes. */
  lockoutMs?: number;
  /** Failed attempts per source address. Default: burst 20, one forgiven every 5 s. */
  limiter?: FailureLimiter;
}

export const INVALID_CREDENTIALS_MESSAGE = 'invalid user name or password';
export const TOTP_REQUIRED_MESSAGE = 'a TOTP code is required';
export const TOTP_INVALID_MESSAGE = 'the TOTP code is not valid; use the current code from your authenticator app';

/** The SecretBox context a user's TOTP secret is sealed under. */
export function totpContext(userId: string): string {
  return `totp:${userId}`;
}

/** The longest user name looked up; longer ones cannot exist. */
const MAX_NAME_LENGTH = 256;
const TOTP_STEP_MODEL = 'TotpLastStep';
/** Most users whose last TOTP step is remembered in memory. */
const MAX_REMEMBERED_STEPS = 100_000;

function minutes(ms: number): number {
  return Math.max(1, Math.ceil(ms / 60_000));
}

function lockedMessage(untilMs: number, nowMs: number): string {
  const n = minutes(untilMs - nowMs);
  return `account locked; try again in ${n} minute${n === 1 ? '' : 's'}`;
}

/** A name as it goes into the audit log: bounded, with control characters made visible. */
function auditName(name: string): string {
  const bounded = name.length > 128 ? `${name.slice(0, 128)}…` : name;
  return bounded.replace(/[\p{Cc}\p{Zl}\p{Zp}]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function createDirectory(options: DirectoryOptions): Directory {
  const store = options.store;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger();
  const maxFailures = options.maxFailures ?? 5;
  const lockoutMs = options.lockoutMs ?? 15 * 60_000;
  const limiter = options.limiter ?? new FailureLimiter({ clock });
  const lastSteps = new Map<string, number>();
  // Made now, so the first attempt for an unknown user does not take twice as long as later ones.
  dummyPasswordHash().catch((err: unknown) => logger.error({ err: errorMessage(err) }, 'could not prepare the dummy password hash'));

  async function audit(action: string, actor: string, name: string, after: Record<string, unknown>): Promise<void> {
    try {
      await store.appendAuditEvent({ actor, action, kind: 'User', name: auditName(name), after, at: new Date(clock.now()).toISOString() });
    } catch (err) {
      logger.error({ err: errorMessage(err), action }, 'could not record a login audit event');
    }
  }

  /** Whether `step` is newer than any accepted for the user; records it when it is. */
  async function claimTotpStep(userId: string, step: number): Promise<boolean> {
    const remembered = lastSteps.get(userId);
    if (remembered !== undefined && step <= remembered) return false;
    if (store.oidcFind !== undefined) {
      const stored = await store.oidcFind(TOTP_STEP_MODEL, userId);
      if (typeof stored?.step === 'number' && step <= stored.step) return false;
      // Checked again: another attempt in this process may have claimed it while we awaited.
      const again = lastSteps.get(userId);
      if (again !== undefined && step <= again) return false;
    }
    lastSteps.delete(userId);
    lastSteps.set(userId, step);
    if (lastSteps.size > MAX_REMEMBERED_STEPS) {
      const oldest = lastSteps.keys().next();
      if (oldest.done !== true) lastSteps.delete(oldest.value);
    }
    if (store.oidcUpsert !== undefined) {
      const expiresAt = new Date((step + 3) * TOTP_PERIOD_SECONDS * 1000 + 60_000).toISOString();
      await store.oidcUpsert(TOTP_STEP_MODEL, userId, { step }, expiresAt);
    }
    return true;
  }

  return {
    async authenticate(attempt) {
      const source = sourceKey(attempt.source);
      const actor = `login:${source}`;
      const wait = limiter.retryAfter(source);
      if (wait > 0) {
        logger.warn({ source, user: auditName(attempt.name) }, 'login refused: too many failed attempts from this address');
        return { ok: false, code: 'rate-limited', message: `too many failed login attempts from this address; try again in ${wait} s`, retryAfterSeconds: wait };
      }

      const invalid = async (reason: string, name: string): Promise<LoginResult> => {
        limiter.fail(source);
        await audit('login-failed', actor, name, { source, reason });
        return { ok: false, code: 'invalid-credentials', message: INVALID_CREDENTIALS_MESSAGE };
      };

      const name = attempt.name;
      const password = attempt.password;
      const credentials = name === '' || name.length > MAX_NAME_LENGTH ? undefined : await store.getUserCredentials(name);
      const user = credentials?.user;
      const hash = credentials?.passwordHash ?? null;
      const usable = user !== undefined && !user.disabled && user.source === 'local' && hash !== null;
      // The same scrypt work on every path, whether or not there is a real hash to check.
      const passwordOk = (await verifyPassword(password, usable ? hash : await dummyPasswordHash())) && usable;

      if (!usable) {
        const reason = user === undefined ? 'unknown user' : user.disabled ? 'user disabled' : user.source !== 'local' ? `user logs in through ${user.source}` : 'no password set';
        return invalid(reason, name);
      }

      const now = clock.now();
      const lockedUntil = user.lockedUntil === null ? Number.NaN : Date.parse(user.lockedUntil);
      if (lockedUntil > now) {
        limiter.fail(source);
        await audit('login-failed', actor, user.name, { source, reason: 'account locked' });
        return { ok: false, code: 'locked', message: lockedMessage(lockedUntil, now) };
      }

      const fail = async (code: 'invalid-credentials' | 'totp-invalid', reason: string): Promise<LoginResult> => {
        limiter.fail(source);
        const at = new Date(now).toISOString();
        const result = await store.recordLoginFailure(user.id, { at, maxFailures, lockMs: lockoutMs });
        await audit('login-failed', actor, user.name, { source, reason, failedLogins: result.failedLogins });
        const until = result.lockedUntil === null ? Number.NaN : Date.parse(result.lockedUntil);
        if (until > now) {
          await audit('locked', actor, user.name, { source, failedLogins: result.failedLogins, lockedUntil: result.lockedUntil });
          logger.warn({ user: auditName(user.name), source, lockedUntil: result.lockedUntil }, 'account locked after repeated failed logins');
          return { ok: false, code: 'locked', message: lockedMessage(until, now) };
        }
        return { ok: false, code, message: code === 'totp-invalid' ? TOTP_INVALID_MESSAGE : INVALID_CREDENTIALS_MESSAGE };
      };

      if (!passwordOk) return fail('invalid-credentials', 'wrong password');

      const sealedTotp = credentials?.totpSecret ?? null;
      if (sealedTotp !== null) {
        const code = (attempt.totp ?? '').replace(/\s/g, '');
        if (code === '') return { ok: false, code: 'totp-required', message: TOTP_REQUIRED_MESSAGE };
        let secret: string;
        try {
          secret = options.secretBox.open(sealedTotp, totpContext(user.id));
        } catch (err) {
          // A secret that does not open (another key, tampering) is an installation problem: refuse, and say so in the log.
          logger.error({ user: auditName(user.name), err: errorMessage(err) }, 'the TOTP secret of this user cannot be opened; the login is refused');
          return fail('totp-invalid', 'TOTP secret cannot be opened');
        }
        const step = matchTotp(secret, code, now);
        if (step === undefined) return fail('totp-invalid', 'wrong TOTP code');
        if (!(await claimTotpStep(user.id, step))) return fail('totp-invalid', 'TOTP code already used');
      }

      await store.recordLoginSuccess(user.id, new Date(now).toISOString());
      await audit('login', `user:${user.name}`, user.name, { source, totp: sealedTotp !== null });
      return { ok: true, user: { ...user, lockedUntil: null, lastLoginAt: new Date(now).toISOString() } };
    },
  };
}
