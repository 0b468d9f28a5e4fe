// Commands about tracked tables and their history: track, untrack, history, revert.
import type { Command } from "commander";
import { jsonOption, nonNegativeInteger, withDatabase } from "./context.ts";
import { printResult, printRows, revertPreview, type OutputOptions, type RevertStep } from "./output.ts";
import { SQLSTATE, sqlstateOf } from "../db/sqlstate.ts";

interface RevertOptions {
  tx?: number;
  statement?: number;
  logId?: number;
  requestId?: string;
  skipConflicts?: boolean;
  apply?: boolean;
}

export function addTrackingCommands(program: Command): void {
  program
    .command("track")
    .description("start auditing a table (again: set its options; refuses to drop an exclusion or mask unless --drop-protections)")
    .argument("<table>", "schema-qualified table, e.g. app.users")
    .option("--exclude <columns...>", "columns never recorded")
    .option("--mask <columns...>", "columns recorded as changed, never with their value")
    .option("--encrypt <columns...>", "columns kept encrypted under a key per data subject (needs --subject); auditors read them")
    .option("--subject <column>", "the column whose value names each row's data subject (for --encrypt)")
    .option("--drop-protections", "allow columns excluded, masked or encrypted before to reach the trail from now on")
    .addOption(jsonOption())
    .action(async (table: string, options: { exclude?: string[]; mask?: string[]; encrypt?: string[]; subject?: string; dropProtections?: boolean } & OutputOptions) => {
      await withDatabase(async (pool) => {
        try {
          await pool.query(`select audit.enable_tracking($1::regclass, $2::text[], $3::text[], $4,
                                                         encrypted_columns => $5::text[], subject_column => $6)`,
            [table, options.exclude ?? [], options.mask ?? [], options.dropProtections === true, options.encrypt ?? [], options.subject ?? null]);
        } catch (error) {
          // The SQL hint names the SQL argument; say what to type here instead.
          if (sqlstateOf(error) === SQLSTATE.invalidParameterValue && /would no longer/.test((error as Error).message)) {
            throw new Error(`${(error as Error).message}: name them again (--exclude, --mask, --encrypt), or add --drop-protections`);
          }
          throw error;
        }
        const { rows } = await pool.query(
          `select schema_name, table_name, primary_key, excluded_columns, masked_columns, encrypted_columns, subject_column, triggers_active
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
          if (sqlstateOf(error) !== SQLSTATE.undefinedObject) throw error;
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
      const refused = steps.some((s) => s.problem_code !== null && !(options.skipConflicts && s.problem_code === SQLSTATE.objectNotInPrerequisiteState));
      if (refused) process.exitCode = 1;
    });
}
