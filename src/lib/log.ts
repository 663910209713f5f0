import { pino } from 'pino';
import type { Logger as PinoLogger, DestinationStream } from 'pino';

export type Logger = PinoLogger;

/**
 * Structured JSON logs. Values that could carry secrets are redacted by path; callers never log
 * tokens or keys in the first place, this is the second line of defence. Every value is JSON-encoded,
 * so CR/LF or ANSI escapes in user input stay inside one log line (THREATS CP-09).
 */
export function createLogger(options: { name: string; level?: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      name: options.name,
      level: options.level ?? 'info',
      redact: {
        paths: ['password', 'token', 'secret', 'privateKey', 'keyPem', '*.password', '*.token', '*.secret', '*.privateKey', '*.keyPem', 'headers.authorization', 'headers["proxy-authorization"]'],
        censor: '[redacted]',
      },
    },
    options.destination,
  );
}

/** A logger that drops everything, for tests and embedding. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
