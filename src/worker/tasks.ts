// graphile-worker tasks and their schedule. Each task is a thin call into SQL, src/archive or src/seals,
// and every run is recorded in audit.task_runs (what /metrics reports, whichever process runs the worker).
import type { JobHelpers, Task, TaskList } from "graphile-worker";
import type pg from "pg";
import { archiveDue } from "../archive/due.ts";
import type { ArchiveStore } from "../archive/store.ts";
import type { Config } from "../config.ts";
import { coverageProblems } from "../coverage/problems.ts";
import { exclusively, MAINTENANCE_LOCK } from "../db/locks.ts";
import { TASK_NAMES } from "../db/taskNames.ts";
import { sealDays } from "../seals/seals.ts";

/**
 * Schedule (UTC, graphile-worker crontab syntax). Every worker instance declares the same crontab;
 * graphile-worker schedules each tick once (its known_crontabs table), whichever instances run.
 * A job key means a run that is already queued is replaced rather than duplicated; a named queue per task
 * (`queue`) means a task never runs twice at the same time, even when a new job for it was added while one
 * ran on another instance; `fill` backfills a run missed while every worker was down.
 * - hourly at :05, keep AUDIT_PREMAKE_MONTHS months of partitions ahead;
 * - hourly at :10, summarise finished days for audit.activity_daily;
 * - hourly at :20, seal finished days (a day is sealed about an hour after it ends);
 * - every 10 minutes, the capture-coverage check (audit.coverage_problems);
 * - daily at 03:15, seal, then archive months older than AUDIT_RETENTION_MONTHS.
 */
export const crontab = [
  "5 * * * * audit__ensure_partitions ?fill=2h&jobKey=audit__ensure_partitions&jobKeyMode=replace&queue=audit__ensure_partitions",
  "10 * * * * audit__summarize_activity ?fill=2h&jobKey=audit__summarize_activity&jobKeyMode=replace&queue=audit__summarize_activity",
  "20 * * * * audit__seal_days ?fill=2h&jobKey=audit__seal_days&jobKeyMode=replace&queue=audit__seal_days",
  "*/10 * * * * audit__check_coverage ?jobKey=audit__check_coverage&jobKeyMode=replace&queue=audit__check_coverage",
  "15 3 * * * audit__archive_partitions ?fill=2d&jobKey=audit__archive_partitions&jobKeyMode=replace&queue=audit__archive_partitions",
].join("\n");

/** A backlog (the first run on a long trail) is sealed over several runs, so other tasks are not held up. */
const SEAL_BUDGET_SECONDS = 300;

type TaskConfig = Pick<Config, "premakeMonths" | "retentionMonths"> & {
  /** Where archives and seal copies go (openArchiveStore). */
  store: ArchiveStore;
  /** Also write archived months as Parquet (default true). */
  parquet?: boolean;
};

/** Records each run (success with its result, or failure with its error, which graphile-worker then retries). */
function recorded(pool: pg.Pool, name: string, run: (helpers: JobHelpers) => Promise<object>): Task {
  return async (_payload, helpers) => {
    const startedAt = new Date();
    let result: object;
    try {
      result = await run(helpers);
    } catch (error) {
      // Recording the failure must not hide it (the database may be what failed).
      await pool.query(
        "insert into audit.task_runs (task, started_at, succeeded, error) values ($1, $2, false, $3)",
        [name, startedAt, (error as Error).message || String(error)],
      ).catch((recordError: Error) => helpers.logger.error(`could not record the failed run: ${recordError.message}`));
      throw error;
    }
    await pool.query("insert into audit.task_runs (task, started_at, succeeded, result) values ($1, $2, true, $3)",
      [name, startedAt, JSON.stringify(result)]);
  };
}

export function makeTasks(pool: pg.Pool, config: TaskConfig): TaskList & Record<(typeof TASK_NAMES)[number], Task> {
  const sealFinishedDays = async (helpers: JobHelpers) => {
    const sealed = await sealDays(pool, { store: config.store, stopAfterSeconds: SEAL_BUDGET_SECONDS });
    if (sealed.length) {
      const days = sealed.length === 1 ? sealed[0]!.day : `${sealed.length} days, ${sealed[0]!.day} to ${sealed.at(-1)!.day}`;
      helpers.logger.info(`sealed ${days} (${sealed.reduce((n, s) => n + s.rows, 0)} audit rows)`);
    }
    return { sealed: sealed.map((s) => s.day) };
  };

  return {
    audit__ensure_partitions: recorded(pool, "audit__ensure_partitions", async (helpers) => {
      const { rows } = await pool.query<{ name: string }>("select * from audit.ensure_partitions($1) as name", [config.premakeMonths]);
      helpers.logger.info(rows.length ? `created partitions ${rows.map((r) => r.name).join(", ")}` : "partitions are ahead");
      return { created: rows.map((r) => r.name) };
    }),

    audit__summarize_activity: recorded(pool, "audit__summarize_activity", async (helpers) => {
      const { rows } = await pool.query<{ written: number }>("select audit.summarize_activity() as written");
      helpers.logger.info(`activity summary: ${rows[0]!.written} rows written`);
      return { written: rows[0]!.written };
    }),

    audit__seal_days: recorded(pool, "audit__seal_days", (helpers) => exclusively(pool, MAINTENANCE_LOCK, () => sealFinishedDays(helpers))),

    audit__check_coverage: recorded(pool, "audit__check_coverage", async (helpers) => {
      const rows = await coverageProblems(pool, config.premakeMonths);
      for (const p of rows) helpers.logger.warn(`coverage: ${p.check_name} ${p.object}: ${p.problem}`);
      return { problems: rows };
    }),

    audit__archive_partitions: recorded(pool, "audit__archive_partitions", (helpers) => exclusively(pool, MAINTENANCE_LOCK, async () => {
      const { sealed, archived, skipped } = await archiveDue(pool, {
        store: config.store, parquet: config.parquet, olderThanMonths: config.retentionMonths, sealBudgetSeconds: SEAL_BUDGET_SECONDS,
      });
      if (sealed.length) helpers.logger.info(`sealed ${sealed.length} days before archiving`);
      for (const r of archived) helpers.logger.info(`archived ${r.month}: ${r.rows} rows → ${r.file}`);
      for (const s of skipped) helpers.logger.warn(`not archived ${s.month}: ${s.reason}`);
      return { archived: archived.map((r) => ({ month: r.month, rows: r.rows })), skipped };
    })),
  };
}
