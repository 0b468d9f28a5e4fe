// Commands that check the trail: doctor (coverage and archive files), seal, verify (the seals).
import type { Command } from "commander";
import { verifyArchive } from "../archive/archive.ts";
import { openArchiveStore } from "../archive/store.ts";
import { coverageProblems } from "../coverage/problems.ts";
import { exclusively, MAINTENANCE_LOCK } from "../db/locks.ts";
import { sealDays, verifySeals } from "../seals/seals.ts";
import { day, jsonOption, withDatabase } from "./context.ts";
import { printResult, printRows, progress, snakeCase, type OutputOptions } from "./output.ts";
import { ARCHIVED } from "../archive/status.ts";

/** `seal` lists at most this many days; a longer run is summarised. */
const SEAL_ROWS_LISTED = 10;

export function addIntegrityCommands(program: Command): void {
  program
    .command("doctor")
    .description("check capture coverage, partitions ahead, the default partition and archive files (exit 1 on problems)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      const problems = await withDatabase(async (pool, config) => {
        const rows = await coverageProblems(pool, config.premakeMonths);
        const { rows: archived } = await pool.query<{ month: string }>(
          "select to_char(month, 'YYYY-MM-DD') as month from audit.archives where status = any($1) order by month", [ARCHIVED]);
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
    .command("erase-subject")
    .description("destroy one data subject's key: their encrypted values read [erased] everywhere from now on (recorded; cannot be undone)")
    .argument("<subject>", "the subject's value in the tracked tables' subject column")
    .addOption(jsonOption())
    .action(async (subject: string, options: OutputOptions) => {
      await withDatabase(async (pool) => {
        const { rows } = await pool.query("select subject, erased_at, erased_by, keys_destroyed from audit.erase_subject($1)", [subject]);
        printResult(rows[0]!, options);
      });
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
}
