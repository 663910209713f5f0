/**
 * Errors with a stable `code`. A `UserError` is something the person running Causeway can fix
 * (its message says how); any other error is a bug or an outage. `retryable` tells supervisors
 * (reconnect loops, enrollment) whether trying again can help.
 */
export interface CausewayErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

export class CausewayError extends Error {
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options: CausewayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CausewayError';
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** An error the user can fix; the message says what to do. */
export class UserError extends CausewayError {
  constructor(code: string, message: string, options: CausewayErrorOptions = {}) {
    super(code, message, options);
    this.name = 'UserError';
  }
}

export function errorCode(err: unknown): string | undefined {
  if (err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
