// Commands about the monthly partitions and archived months: partitions list/ensure/check-default/drain-default/
// archive/restore/verify, and archive query.
import type { Command } from "commander";
import { restoreMonth, verifyArchive } from "../archive/archive.ts";
import { archiveDue } from "../archive/due.ts";
import { queryArchive } from "../archive/parquet.ts";
import { openArchiveStore } from "../archive/store.ts";
import { readConfig } from "../config.ts";
import { exclusively, MAINTENANCE_LOCK } from "../db/locks.ts";
import { jsonOption, month, nonNegativeInteger, withDatabase } from "./context.ts";
import { phasedProgress, printResult, printRows, progress, type OutputOptions } from "./output.ts";
import { FILE_WRITTEN } from "../archive/status.ts";

export function addPartitionCommands(program: Command): void {
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
          "select to_char(month, 'YYYY-MM-DD') as month from audit.archives where status = any($1) order by month", [FILE_WRITTEN])).rows.map((r) => r.month);
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
}
