// Structured logs on stderr (stdout is the CLI's output), level from LOG_LEVEL: one JSON object per line,
// or, on a terminal, pino-pretty's readable lines (LOG_FORMAT=json keeps JSON there too).
// Every line written while a request is being handled carries its requestId, whichever code logs it:
// the HTTP layer runs each request inside `withRequestContext`, and the logger mixes that context in.
import { AsyncLocalStorage } from "node:async_hooks";
import { pino, stdSerializers, type DestinationStream, type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

interface RequestContext {
  requestId: string;
}

const requestContext = new AsyncLocalStorage<RequestContext>();

/** Runs `fn` (and everything it starts) with the request id attached to every log line. */
export function withRequestContext<T>(context: RequestContext, fn: () => T): T {
  return requestContext.run(context, fn);
}

/**
 * Errors are logged with their type, message, code and stack only: PostgreSQL errors carry `detail`,
 * `where` and query parameters, which can hold row values (a password hash in a failing row, say).
 */
function errorSerializer(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: String(error) };
  const { type, message, stack } = stdSerializers.err(error);
  const code = (error as { code?: unknown }).code;
  return { type, message, ...(typeof code === "string" ? { code } : {}), stack };
}

export const LOG_FORMATS = ["json", "pretty"] as const;

/** Where lines go by default: pretty on a terminal (unless LOG_FORMAT=json), JSON otherwise. */
function defaultDestination(format: (typeof LOG_FORMATS)[number] | undefined): DestinationStream {
  if (format === "pretty" || (format === undefined && process.stderr.isTTY)) {
    return pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname,service" });
  }
  return pino.destination({ fd: 2, sync: true });
}

export function createLogger(level: string, destination?: DestinationStream, format?: (typeof LOG_FORMATS)[number]): Logger {
  return pino(
    {
      level,
      base: { service: "cartop-audit" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: () => ({ ...requestContext.getStore() }),
      serializers: { err: errorSerializer, error: errorSerializer },
      // Belt and braces: nothing we log should hold these, and if it ever does they never reach the log.
      redact: {
        paths: ["authorization", "*.authorization", "*.headers.authorization", "*.headers.cookie", "password", "*.password", "token", "*.token", "jwtSecret", "*.jwtSecret"],
        censor: "[redacted]",
      },
    },
    destination ?? defaultDestination(format),
  );
}
