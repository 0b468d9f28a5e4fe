// graphile-worker tasks and their schedule. Each task is a thin call into SQL or src/archive.
import type { Task, TaskList } from "graphile-worker";
import type pg from "pg";
import { archiveMonth } from "../archive/archive.ts";
import type { Config } from "../config.ts";

/**
 * Schedule (UTC, graphile-worker crontab syntax). A job key means a run that is already queued is
 * replaced rather than duplicated; `fill` backfills a run missed while the worker was down.
 * - hourly at :05, keep AUDIT_PREMAKE_MONTHS months of partitions ahead;
 * - hourly at :10, summarise finished days for audit.activity_daily;
 * - daily at 03:15, archive months older than AUDIT_RETENTION_MONTHS.
 */
export const crontab = [
  "5 * * * * audit__ensure_partitions ?fill=2h&jobKey=audit__ensure_partitions&jobKeyMode=replace",
  "10 * * * * audit__summarize_activity ?fill=2h&jobKey=audit__summarize_activity&jobKeyMode=replace",
  "15 3 * * * audit__archive_partitions ?fill=2d&jobKey=audit__archive_partitions&jobKeyMode=replace",
].join("\n");

export function makeTasks(pool: pg.Pool, config: Pick<Config, "premakeMonths" | "retentionMonths" | "archiveDir">): TaskList {
  const ensurePartitions: Task = async (_payload, helpers) => {
    const { rows } = await pool.query<{ name: string }>("select * from audit.ensure_partitions($1) as name", [config.premakeMonths]);
    helpers.logger.info(rows.length ? `created partitions ${rows.map((r) => r.name).join(", ")}` : "partitions are ahead");
  };

  const summarizeActivity: Task = async (_payload, helpers) => {
    const { rows } = await pool.query<{ written: number }>("select audit.summarize_activity() as written");
    helpers.logger.info(`activity summary: ${rows[0]!.written} rows written`);
  };

  const archivePartitions: Task = async (_payload, helpers) => {
    // Counts of a month must be summarised before its rows leave the database.
    await pool.query("select audit.summarize_activity()");
    const { rows } = await pool.query<{ month: string }>(
      "select to_char(m, 'YYYY-MM-DD') as month from audit.archivable_months($1) as m", [config.retentionMonths]);
    // Also finish runs that were interrupted after their partition left audit.partitions.
    const { rows: unfinished } = await pool.query<{ month: string }>(
      "select to_char(month, 'YYYY-MM-DD') as month from audit.archives where status in ('verified', 'detached')");
    const months = [...new Set([...rows, ...unfinished].map((r) => r.month))].sort();
    for (const month of months) {
      const result = await archiveMonth(pool, month, { dir: config.archiveDir });
      helpers.logger.info(`archived ${result.month}: ${result.rows} rows → ${result.file}`);
    }
  };

  return {
    audit__ensure_partitions: ensurePartitions,
    audit__summarize_activity: summarizeActivity,
    audit__archive_partitions: archivePartitions,
  };
}
