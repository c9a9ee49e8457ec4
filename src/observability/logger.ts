/**
 * The process logger. Redaction is a second line of defence: credentials are never put into log
 * objects in the first place, but a header object that slips through loses its secrets here.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'password',
  '*.password',
  'token',
  '*.token',
  'auth',
  '*.auth',
  'identitytoken',
  '*.identitytoken',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'pullthrough' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

export type { Logger };

/** What domain code needs of a logger; satisfied by pino and by fastify's request loggers. */
export type Log = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
