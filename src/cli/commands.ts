// The `cartop-audit` command line. Exit codes: 0 success, 1 failure (including a failed verify),
// 2 usage error (unknown command or option, bad argument).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import pg from "pg";
import { restoreMonth, verifyArchive } from "../archive/archive.ts";
import { archiveDue } from "../archive/due.ts";
import { queryArchive } from "../archive/parquet.ts";
import { openArchiveStore } from "../archive/store.ts";
import { parseMonth } from "../archive/files.ts";
import { readConfig, type Config } from "../config.ts";
import { openDatabase, type Database } from "../db/database.ts";
import { runMigrations } from "../db/migrate.ts";
import { projectRoot } from "../db/sourceSql.ts";
import { startServer } from "../http/app.ts";
import { createLogger, type Logger } from "../log.ts";
import { sealDays, verifySeals } from "../seals/seals.ts";
import { exclusively, MAINTENANCE_LOCK } from "../db/locks.ts";
import { startWorker } from "../worker/worker.ts";
import { phasedProgress, printResult, printRows, progress, revertPreview, snakeCase, type OutputOptions, type RevertStep } from "./output.ts";
import { recordRunning, runningFile, runningProject } from "./running.ts";

interface RevertOptions {
  tx?: number;
  statement?: number;
  logId?: number;
  requestId?: string;
  skipConflicts?: boolean;
  apply?: boolean;
}

let cliLogger: Logger | undefined;
/** The process's structured logger (stderr), at LOG_LEVEL (info while the configuration is invalid, to report that). */
function logger(): Logger {
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
const log = (line: string) => logger().info(line);
/** Loggers to silence once shutdown starts: Ctrl-C reaches the embedded PostgreSQL too, and its goodbyes are expected. */
const quietOnShutdown: Logger[] = [];

function nonNegativeInteger(text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) throw new InvalidArgumentError("expected a whole number >= 0");
  return value;
}

function day(text: string): string {
  const parsed = new Date(`${text}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== text) {
    throw new InvalidArgumentError(`"${text}" is not a day: expected YYYY-MM-DD`);
  }
  return text;
}

function month(text: string): string {
  try {
    return parseMonth(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** Opens the database and a pool, runs `work`, and closes both. */
async function withDatabase<T>(work: (pool: pg.Pool, config: Config, database: Database) => Promise<T>): Promise<T> {
  const config = readConfig();
  const database = await openDatabase(config, log);
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  try {
    return await work(pool, config, database);
  } finally {
    await pool.end();
    await database.stop();
  }
}

/** Runs until Ctrl-C / SIGTERM, then runs the shutdown actions in reverse order. */
async function runUntilSignalled(start: (onShutdown: (action: () => Promise<void>) => void) => Promise<void>): Promise<void> {
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
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
  try {
    await start((action) => actions.push(action));
  } catch (error) {
    await shutdown();
    throw error;
  }
}

function psqlHint(database: Database): string {
  const u = new URL(database.url);
  const password = database.embedded && u.password ? `:${u.password}` : "";
  return `psql "postgres://${u.username}${password}@${u.host}${u.pathname}"`;
}

function jsonOption() {
  return new Option("--json", "print JSON instead of a table");
}

/** `seal` lists at most this many days; a longer run is summarised. */
const SEAL_ROWS_LISTED = 10;

/** The README's example activity (`cartop-audit demo`). */
export const demoActivityFile = path.join(projectRoot, "bench/example-activity.sql");

async function packageVersion(): Promise<string> {
  return (JSON.parse(await readFile(path.join(projectRoot, "package.json"), "utf8")) as { version: string }).version;
}

export async function buildProgram(): Promise<Command> {
  const program = new Command()
    .name("cartop-audit")
    .version(await packageVersion(), "-V, --version", "print the version")
    .description("PostgreSQL audit trail captured by triggers: migrate, run the worker, manage tracking and partitions")
    .showHelpAfterError()
    .exitOverride();

  /** Opens the database for a long-running command, then the parts asked for; all stop at shutdown. */
  const boot = async (
    onShutdown: (action: () => Promise<void>) => void,
    parts: { migrate?: boolean; worker?: boolean; api?: boolean },
  ) => {
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
  };

  program
    .command("start")
    .description("the whole system: migrate, then run the worker and the GraphQL API until Ctrl-C")
    .action(async () => {
      const config = readConfig();
      const file = runningFile(config.embeddedDataDir);
      const running = await runningProject(file);
      if (running) {
        throw new Error(`this project is already running (pid ${running.pid}, since ${running.startedAt}): ` +
          `API ${running.api}/graphql, database ${running.psql}. Stop it with Ctrl-C in its terminal (or kill ${running.pid}); ` +
          "other commands (npx cartop-audit partitions list, …) use it as it is");
      }
      await runUntilSignalled(async (onShutdown) => {
        const { database, api } = await boot(onShutdown, { migrate: true, worker: true, api: true });
        onShutdown(await recordRunning(file, { pid: process.pid, startedAt: new Date().toISOString(), api: api!, psql: psqlHint(database) }));
        log(`database ready; connect with: ${psqlHint(database)}`);
        log("the example schema is app (app.users, app.products); the audit trail is audit.log");
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("serve")
    .description("run the GraphQL API only until Ctrl-C")
    .action(async () => {
      await runUntilSignalled(async (onShutdown) => {
        await boot(onShutdown, { api: true });
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("migrate")
    .description("apply committed migrations, then exit")
    .action(async () => {
      await withDatabase(async (_pool, _config, database) => {
        await runMigrations(database.url, { log });
        log("database is up to date");
      });
    });

  program
    .command("worker")
    .description("run the graphile-worker process only (partition upkeep and archiving) until Ctrl-C")
    .action(async () => {
      await runUntilSignalled(async (onShutdown) => {
        await boot(onShutdown, { worker: true });
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("demo")
    .description("migrate, then load the README's example activity (API writes with context, a bulk fix, deletions)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      await withDatabase(async (pool, _config, database) => {
        await runMigrations(database.url, { log });
        // Its own connection, named, so the rows written without a user show where they came from.
        const client = new pg.Client({ connectionString: database.url, application_name: "cartop-audit demo" });
        await client.connect();
        try {
          const { rowCount } = await client.query("select from app.users where email = 'grace@example.com'");
          if (rowCount) throw new Error("demo: the example activity is already loaded here (app.users has grace@example.com); load it into a fresh database");
          // One statement at a time, as psql -f would send them: each gets its own statement time (created_at),
          // as writes from an application would.
          for (const statement of (await readFile(demoActivityFile, "utf8")).split(/;\s*\n/)) {
            if (statement.replace(/--.*$/gm, "").trim()) await client.query(statement);
          }
        } finally {
          await client.end();
        }
        const { rows } = await pool.query(
          `select entity_name, action, count(*)::int as rows from audit.log where request_id like 'req-10%' or application_name = 'cartop-audit demo' group by 1, 2 order by 1, 2`);
        printRows(rows, options);
      });
    });

  program
    .command("track")
    .description("start auditing a table (again: set its options; refuses to drop an exclusion or mask unless --drop-protections)")
    .argument("<table>", "schema-qualified table, e.g. app.users")
    .option("--exclude <columns...>", "columns never recorded")
    .option("--mask <columns...>", "columns recorded as changed, never with their value")
    .option("--drop-protections", "allow columns excluded or masked before to reach the trail from now on")
    .addOption(jsonOption())
    .action(async (table: string, options: { exclude?: string[]; mask?: string[]; dropProtections?: boolean } & OutputOptions) => {
      await withDatabase(async (pool) => {
        try {
          await pool.query("select audit.enable_tracking($1::regclass, $2::text[], $3::text[], $4)",
            [table, options.exclude ?? [], options.mask ?? [], options.dropProtections === true]);
        } catch (error) {
          // The SQL hint names the SQL argument; say what to type here instead.
          if ((error as { code?: string }).code === "22023" && /would no longer/.test((error as Error).message)) {
            throw new Error(`${(error as Error).message}: name them again (--exclude, --mask), or add --drop-protections`);
          }
          throw error;
        }
        const { rows } = await pool.query(
          `select schema_name, table_name, primary_key, excluded_columns, masked_columns, triggers_active
             from audit.tracked_tables where to_regclass(format('%I.%I', schema_name, table_name)) = $1::regclass`, [table]);
        printRows(rows, options);
      });
    });

  program
    .command("untrack")
    .description("stop auditing a table (its history stays)")
    .argument("<table>", "schema-qualified table")
    .addOption(jsonOption())
    .action(async (table: string, options: OutputOptions) => {
      await withDatabase(async (pool) => {
        try {
          await pool.query("select audit.disable_tracking($1::regclass)", [table]);
        } catch (error) {
          // Not tracked: already in the state asked for, so not a failure (exit 0), but say so.
          if ((error as { code?: string }).code !== "42704") throw error;
          if (!options.json) process.stdout.write(`${table} was not tracked: nothing to do\n`);
          else printResult({ table, tracked: false, was_tracked: false }, options);
          return;
        }
        printResult(options.json ? { table, tracked: false, was_tracked: true } : { table, tracked: false }, options);
      });
    });

  program
    .command("history")
    .description("the audit history of one row, newest first")
    .argument("<table>", "schema-qualified table, e.g. app.products")
    .argument("<id>", "primary key as text (composite keys: the JSON array, e.g. '[42, \"eu\"]')")
    .option("--limit <n>", "at most this many rows", nonNegativeInteger, 50)
    .addOption(jsonOption())
    .action(async (table: string, id: string, options: { limit: number } & OutputOptions) => {
      await withDatabase(async (pool) => {
        const { rows } = await pool.query(
          `select l.id, l.created_at, l.action, coalesce(l.changes, l.new_value, l.old_value) as data, l.user_id, l.db_user
             from audit.log l
             join pg_class c on c.oid = $1::regclass
             join pg_namespace n on n.oid = c.relnamespace
            where l.entity_schema = n.nspname and l.entity_name = c.relname and l.entity_id = $2
            order by l.id desc limit $3`, [table, id, options.limit]);
        printRows(rows, options, `no audit rows for ${table} ${id}`);
      });
    });

  const revertCommand = program
    .command("revert")
    .description("undo a transaction, one statement of it, one audit row or one request: a preview (a diff per row) unless --apply; exit 1 when a conflict refuses it")
    .option("--tx <tx_id>", "the transaction (audit.log tx_id)", nonNegativeInteger)
    .option("--statement <n>", "only this statement of the transaction (audit.log statement_number)", nonNegativeInteger)
    .option("--log-id <id>", "only this audit row", nonNegativeInteger)
    .option("--request-id <id>", "every change of this request (audit.log request_id)")
    .option("--skip-conflicts", "leave conflicting rows as they are and revert the rest")
    .option("--apply", "make the changes (default: a dry run that changes nothing)")
    .addOption(jsonOption())
    .action(async (options: RevertOptions & OutputOptions) => {
      if (options.statement !== undefined && options.tx === undefined) {
        revertCommand.error("error: --statement needs --tx", { exitCode: 2, code: "commander.usage" });
      }
      const steps = await withDatabase(async (pool) => {
        const { rows } = await pool.query<RevertStep>(
          `select * from audit.revert(log_id => $1, tx_id => $2, statement_number => $3, request_id => $4,
                                      dry_run => $5, on_conflict => $6)`,
          [options.logId ?? null, options.tx ?? null, options.statement ?? null, options.requestId ?? null,
            !options.apply, options.skipConflicts ? "skip" : "refuse"]);
        return rows;
      });
      if (options.json) {
        process.stdout.write(`${JSON.stringify(steps, null, 2)}\n`);
      } else {
        process.stdout.write(revertPreview(steps, Boolean(options.apply)));
      }
      // A dry run that finds a problem is a revert that would be refused (skipped conflicts aside).
      const refused = steps.some((s) => s.problem_code !== null && !(options.skipConflicts && s.problem_code === "55000"));
      if (refused) process.exitCode = 1;
    });

  program
    .command("doctor")
    .description("check capture coverage, partitions ahead, the default partition and archive files (exit 1 on problems)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      const problems = await withDatabase(async (pool, config) => {
        const { rows } = await pool.query<{ check_name: string; object: string; problem: string }>(
          "select check_name, object, problem from audit.coverage_problems($1)", [config.premakeMonths]);
        const { rows: archived } = await pool.query<{ month: string }>(
          "select to_char(month, 'YYYY-MM-DD') as month from audit.archives where status = 'archived' order by month");
        const store = openArchiveStore(config);
        for (const { month } of archived) {
          const result = await verifyArchive(pool, month, { store });
          if (!result.ok) rows.push({ check_name: "archive_unverified", object: result.file, problem: result.problem ?? "" });
        }
        printRows(rows, options, "no problems found");
        return rows.length;
      });
      if (problems) process.exitCode = 1;
    });

  program
    .command("seal")
    .description("seal every finished day not sealed yet (the worker does this hourly)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      await withDatabase(async (pool, config) => {
        const sealed = (await exclusively(pool, MAINTENANCE_LOCK, () => sealDays(pool, { store: openArchiveStore(config) }))).map(({ day, rows, seal_digest }) => ({ day, rows, seal_digest }));
        if (options.json || sealed.length <= SEAL_ROWS_LISTED) return printRows(sealed, options, "nothing to seal");
        // A backlog (the first run over a long trail) is one summary, not a line per day.
        const rows = sealed.reduce((sum, s) => sum + Number(s.rows), 0);
        process.stdout.write(`sealed ${sealed.length} days, ${sealed[0]!.day} to ${sealed.at(-1)!.day} (${rows} audit rows); the last ${SEAL_ROWS_LISTED}:\n`);
        printRows(sealed.slice(-SEAL_ROWS_LISTED), options);
      });
    });

  program
    .command("verify")
    .description("recompute the seals of the audit trail and name the first day that no longer matches (exit 1)")
    .option("--from <day>", "recompute rows from this day (YYYY-MM-DD)", day)
    .option("--to <day>", "recompute rows up to this day (YYYY-MM-DD)", day)
    .addOption(jsonOption())
    .action(async (options: { from?: string; to?: string } & OutputOptions) => {
      const bar = progress("verify", options, "days");
      const report = await withDatabase((pool, config) =>
        verifySeals(pool, { store: openArchiveStore(config), from: options.from, to: options.to, onProgress: (n, t) => bar.update(n, t) }))
        .finally(() => bar.stop());
      if (options.json) {
        printResult(snakeCase({ ...report }), options);
      } else {
        const { problems, ...summary } = snakeCase(report);
        printResult(summary, options);
        if (problems.length) printRows(problems.map((p) => ({ ...p })), options);
        else process.stdout.write("every sealed day matches its rows\n");
      }
      if (report.firstBadDay) process.exitCode = 1;
    });

  const partitions = program.command("partitions").description("monthly partitions of the audit trail");

  partitions
    .command("list")
    .description("partitions with their range, rows and size; archived months too")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      await withDatabase(async (pool) => {
        const { rows } = await pool.query(
          `select partition_name, range_start, range_end, estimated_rows, pg_size_pretty(total_bytes) as size, is_default
             from audit.partitions`);
        printRows(rows, options);
        const { rows: archives } = await pool.query(
          `select to_char(month, 'YYYY-MM') as month, status, rows, file_name, archived_at, restored_at, last_error
             from audit.archives order by month`);
        if (archives.length && !options.json) {
          process.stdout.write("\narchives:\n");
          printRows(archives, options);
        }
      });
    });

  partitions
    .command("ensure")
    .description("create the current month's partition and the next N")
    .option("--months <n>", "months ahead (default AUDIT_PREMAKE_MONTHS)", nonNegativeInteger)
    .addOption(jsonOption())
    .action(async (options: { months?: number } & OutputOptions) => {
      await withDatabase(async (pool, config) => {
        const { rows } = await pool.query("select * from audit.ensure_partitions($1) as created",
          [options.months ?? config.premakeMonths]);
        printRows(rows, options, "all partitions already exist");
      });
    });

  partitions
    .command("check-default")
    .description("report rows waiting in the default partition (exit 1 if there are any)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      const waiting = await withDatabase(async (pool) => {
        const { rows } = await pool.query(
          "select to_char(month, 'YYYY-MM') as month, rows::bigint as rows from audit.default_partition_months()");
        printRows(rows.map((r) => ({ month: r.month, rows: Number(r.rows) })), options, "the default partition is empty");
        return rows.length;
      });
      if (waiting) process.exitCode = 1;
    });

  partitions
    .command("drain-default")
    .description("move rows out of the default partition into monthly partitions (creating them)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      await withDatabase(async (pool) => {
        const { rows } = await pool.query("select * from audit.drain_default_partition() as partition");
        printRows(rows, options, "the default partition was already empty");
      });
    });

  partitions
    .command("archive")
    .description("summarise and seal, then archive (export, verify, detach, drop) months entirely older than N months before this one, and finish interrupted ones")
    .option("--older-than <n>", "months (default AUDIT_RETENTION_MONTHS)", nonNegativeInteger)
    .addOption(jsonOption())
    .action(async (options: { olderThan?: number } & OutputOptions) => {
      // Waits for a worker's (or another CLI's) seal or archive run to finish first.
      await withDatabase((pool, config) => exclusively(pool, MAINTENANCE_LOCK, async () => {
        const { archived, skipped } = await archiveDue(pool, {
          store: openArchiveStore(config), parquet: config.archiveParquet, olderThanMonths: options.olderThan ?? config.retentionMonths,
          onMonth: (label) => {
            const bar = phasedProgress(`archive ${label}`, ["export", "verify"], options);
            return { onRows: (n, t) => bar.update(n, t), done: () => bar.stop() };
          },
        });
        for (const s of skipped) process.stderr.write(`not archived ${s.month}: ${s.reason}\n`);
        printRows(archived.map((r) => ({ ...r })), options, "nothing to archive");
      }));
    });

  partitions
    .command("restore")
    .description("bring an archived month back (its checksum is verified first)")
    .argument("<month>", "YYYY-MM", month)
    .addOption(jsonOption())
    .action(async (first: string, options: OutputOptions) => {
      await withDatabase(async (pool, config) => {
        const { rows: known } = await pool.query<{ month: string; status: string }>(
          "select to_char(month, 'YYYY-MM') as month, status from audit.archives order by month");
        if (!known.some((a) => a.month === first.slice(0, 7))) {
          const archived = known.filter((a) => a.status === "archived").map((a) => a.month);
          throw new Error(`partitions restore: ${first.slice(0, 7)} was never archived (audit.archives has no row for it); ` +
            (archived.length ? `archived months: ${archived.join(", ")}` : "no month is archived"));
        }
        const bar = progress(`restore ${first.slice(0, 7)}`, options);
        try {
          printResult({ ...(await restoreMonth(pool, first, { store: openArchiveStore(config), onRows: (n, t) => bar.update(n, t) })) }, options);
        } finally {
          bar.stop();
        }
      });
    });

  partitions
    .command("verify")
    .description("re-check archive files against their manifests (all archived months, or one)")
    .argument("[month]", "YYYY-MM", month)
    .addOption(jsonOption())
    .action(async (first: string | undefined, options: OutputOptions) => {
      const failed = await withDatabase(async (pool, config) => {
        const months = first ? [first] : (await pool.query<{ month: string }>(
          "select to_char(month, 'YYYY-MM-DD') as month from audit.archives where status <> 'exporting' order by month")).rows.map((r) => r.month);
        const results = [];
        const store = openArchiveStore(config);
        for (const m of months) results.push(await verifyArchive(pool, m, { store }));
        printRows(results.map((r) => ({ ...r })), options, "no archives");
        return results.some((r) => !r.ok);
      });
      if (failed) process.exitCode = 1;
    });

  program
    .command("archive")
    .description("archived months, read in place")
    .command("query")
    .description("run one SELECT over every archived month (their Parquet copies), as the table audit_log with audit.log's columns")
    .argument("<sql>", "e.g. \"select created_at, user_id, changes from audit_log where entity_name = 'products' and entity_id = '42'\"")
    .addOption(jsonOption())
    .action(async (sql: string, options: OutputOptions) => {
      // Needs no database: the archive store alone (AUDIT_ARCHIVE_URL / AUDIT_ARCHIVE_DIR).
      const result = await queryArchive(openArchiveStore(readConfig()), sql);
      printRows(result.rows, options, "no rows");
    });

  return program;
}

/** Parses and runs; returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = await buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    const e = error as { code?: string; exitCode?: number; message?: string };
    if (e.code === "commander.helpDisplayed" || e.code === "commander.help" || e.code === "commander.version") return 0;
    if (e.code?.startsWith("commander.")) return 2; // commander already printed the message
    // A failed command speaks to the person who ran it, in plain words (logs are for running services).
    process.stderr.write(`cartop-audit: ${e.message ?? String(error)}\n`);
    const hint = (error as { hint?: unknown }).hint;
    if (typeof hint === "string" && hint) process.stderr.write(`hint: ${hint}\n`);
    return 1;
  }
}
