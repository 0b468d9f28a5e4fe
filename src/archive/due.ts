// "Archive what is due": the one routine behind both `cartop-audit partitions archive` and the worker's
// audit__archive_partitions, so a DBA at the command line and the daily job do the same thing:
// summarise, seal, then archive every month older than the retention whose days are all sealed, and
// finish months an interrupted run left verified or detached (their partitions are no longer listed).
import type pg from "pg";
import { sealDays, type Seal } from "../seals/seals.ts";
import { archiveMonth, type ArchiveOptions, type ArchiveResult } from "./archive.ts";
import { ARCHIVE_UNFINISHED } from "./status.ts";

export interface DueOptions extends Omit<ArchiveOptions, "onRows"> {
  /** Months entirely older than this many months before the current one. */
  olderThanMonths: number;
  /** Start sealing no new day after this many seconds (the worker's budget); default: seal everything. */
  sealBudgetSeconds?: number;
  /** Per-month progress hooks (the CLI's progress bars). */
  onMonth?: (month: string) => { onRows?: ArchiveOptions["onRows"]; done?: () => void };
}

export interface DueResult {
  sealed: Seal[];
  archived: ArchiveResult[];
  /** Months old enough but not archived this run, with the reason (days not sealed yet). */
  skipped: { month: string; reason: string }[];
}

export async function archiveDue(pool: pg.Pool, options: DueOptions): Promise<DueResult> {
  // A month leaves the database summarised (activity_daily keeps its counts) and sealed.
  await pool.query("select audit.summarize_activity()");
  const sealed = await sealDays(pool, { store: options.store, stopAfterSeconds: options.sealBudgetSeconds });

  const { rows } = await pool.query<{ month: string; unfinished: boolean; sealed_through: string | null }>(
    `with due as (
       select m as month, false as unfinished from audit.archivable_months($1) as m
       union
       select month, true from audit.archives where status = any($2))
     select to_char(month, 'YYYY-MM-DD') as month, bool_or(unfinished) as unfinished,
            (select to_char(max(day), 'YYYY-MM-DD') from audit.seals) as sealed_through
       from due group by month order by month`,
    [options.olderThanMonths, ARCHIVE_UNFINISHED]);

  const result: DueResult = { sealed, archived: [], skipped: [] };
  for (const { month, unfinished, sealed_through } of rows) {
    const lastDay = lastDayOf(month);
    if (!unfinished && (sealed_through === null || sealed_through < lastDay)) {
      result.skipped.push({ month: month.slice(0, 7), reason: `not sealed through ${lastDay} yet (sealed through ${sealed_through ?? "nothing"})` });
      continue;
    }
    const hooks = options.onMonth?.(month.slice(0, 7));
    try {
      result.archived.push(await archiveMonth(pool, month, { ...options, onRows: hooks?.onRows }));
    } finally {
      hooks?.done?.();
    }
  }
  return result;
}

function lastDayOf(month: string): string {
  const date = new Date(`${month}T00:00:00Z`);
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 0)).toISOString().slice(0, 10);
}
