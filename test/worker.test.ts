// The worker: its schedule, and its tasks run through graphile-worker against the real database.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Logger, parseCrontab, quickAddJob, runOnce } from "graphile-worker";
import { restoreMonth } from "../src/archive/archive.ts";
import { verifySeals } from "../src/seals/seals.ts";
import { createLogger } from "../src/log.ts";
import { readConfig } from "../src/config.ts";
import { crontab, makeTasks } from "../src/worker/tasks.ts";
import { startWorker } from "../src/worker/worker.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-worker-test-"));
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

const config = () => ({ premakeMonths: 4, retentionMonths: 12, store: fileStore(dir) });

/** Queues one job and lets graphile-worker run it (and anything else due) once. */
async function runJob(task: string): Promise<void> {
  await quickAddJob({ pgPool: db.pool }, task, {});
  await runOnce({ pgPool: db.pool, taskList: makeTasks(db.pool, config()), logger: new Logger(() => () => {}) });
}

test("the schedule: upkeep hourly, coverage every 10 minutes, archiving daily, each with a job key so runs never pile up", () => {
  const items = parseCrontab(crontab);
  expect(items.map((item) => [item.task, item.options.jobKey, item.options.jobKeyMode])).toEqual([
    ["audit__ensure_partitions", "audit__ensure_partitions", "replace"],
    ["audit__summarize_activity", "audit__summarize_activity", "replace"],
    ["audit__seal_days", "audit__seal_days", "replace"],
    ["audit__check_coverage", "audit__check_coverage", "replace"],
    ["audit__archive_partitions", "audit__archive_partitions", "replace"],
  ]);
  // Minute 5 of every hour, and 03:15 every day (UTC).
  const at = (iso: string) => {
    const d = new Date(iso);
    return { min: d.getUTCMinutes(), hour: d.getUTCHours(), date: d.getUTCDate(), month: d.getUTCMonth() + 1, dow: d.getUTCDay() };
  };
  expect(items[0]!.match(at("2026-11-27T10:05:00Z"))).toBe(true);
  expect(items[0]!.match(at("2026-11-27T10:06:00Z"))).toBe(false);
  expect(items[1]!.match(at("2026-11-27T10:10:00Z"))).toBe(true);
  expect(items[2]!.match(at("2026-11-27T10:20:00Z"))).toBe(true);
  expect([0, 10, 50].map((min) => items[3]!.match(at(`2026-11-27T10:${String(min).padStart(2, "0")}:00Z`)))).toEqual([true, true, true]);
  expect(items[3]!.match(at("2026-11-27T10:15:00Z"))).toBe(false);
  expect(items[4]!.match(at("2026-11-27T03:15:00Z"))).toBe(true);
  expect(items[4]!.match(at("2026-11-27T04:15:00Z"))).toBe(false);
});

test("audit__ensure_partitions keeps AUDIT_PREMAKE_MONTHS months ahead", async () => {
  const { rows: before } = await db.pool.query(`select partition_name from audit.partitions where not is_default order by range_start`);
  for (const { partition_name } of before) await db.pool.query(`drop table audit.${partition_name}`);
  await runJob("audit__ensure_partitions");
  const { rows } = await db.pool.query(`
    select count(*)::int as n, min(range_start) = audit_private.month_start(audit_private.current_month()) as starts_now
      from audit.partitions where not is_default`);
  expect(rows[0]).toEqual({ n: 5, starts_now: true });
});

test("audit__archive_partitions archives every month older than the retention, and only those", async () => {
  const { rows: [{ old, recent }] } = await db.pool.query(`
    select to_char(audit_private.current_month() - interval '14 months', 'YYYY-MM-DD') as old,
           to_char(audit_private.current_month() - interval '11 months', 'YYYY-MM-DD') as recent`);
  for (const month of [old, recent]) {
    await db.pool.query(`select audit.create_partition($1::date)`, [month]);
    await db.pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
       select $1::date + interval '1 day', 1, 1, 'I', g::text, '{}', 'owner' from generate_series(1, 100) g`, [month]);
  }
  await runJob("audit__archive_partitions");
  const { rows } = await db.pool.query(`select to_char(month, 'YYYY-MM-DD') as month, status, rows from audit.archives`);
  expect(rows).toEqual([{ month: old, status: "archived", rows: "100" }]);
  // The archived month's counts were summarised first, so activity_daily still shows them.
  const { rows: [counted] } = await db.pool.query(
    `select coalesce(sum(changes), 0)::int as n from audit.activity_daily where day = $1::date + 1`, [old]);
  expect(counted.n).toBe(100);
  expect((await db.pool.query(`select present from audit_private.partition_state($1::date)`, [recent])).rows[0].present).toBe(true);
  // The month left sealed: its days are in audit.seals and in the copy beside the archive.
  expect((await readdir(dir)).sort()).toEqual([`audit-${old.slice(0, 7)}.copy.gz`, `audit-${old.slice(0, 7)}.manifest.json`, "parquet", "seals"]);
  const { rows: [seals] } = await db.pool.query(
    `select count(*)::int as days, sum(rows)::int as rows from audit.seals where date_trunc('month', day) = $1::date`, [old]);
  const daysInMonth = new Date(Date.UTC(Number(old.slice(0, 4)), Number(old.slice(5, 7)), 0)).getUTCDate();
  expect(seals).toEqual({ days: daysInMonth, rows: 100 });
  // Verify still passes with the month gone: its days are skipped (the archive file is checked separately).
  const report = await verifySeals(db.pool, { store: fileStore(dir) });
  expect(report).toMatchObject({ problems: [], archivedDays: daysInMonth });
  // Restored, the month is recomputed and still matches its seals: restore brings back the same rows.
  await restoreMonth(db.pool, old, { store: fileStore(dir) });
  expect(await verifySeals(db.pool, { store: fileStore(dir) })).toMatchObject({ problems: [], archivedDays: 0 });
});

test("a failed run whose failure cannot be recorded still fails with its own error", async () => {
  const notADirectory = path.join(dir, "plain-file");
  await writeFile(notADirectory, "");
  await db.pool.query(`alter table audit.task_runs rename to task_runs_away`);
  try {
    await quickAddJob({ pgPool: db.pool }, "audit__seal_days", {}, { jobKey: "unrecordable" });
    await runOnce({ pgPool: db.pool, taskList: makeTasks(db.pool, { ...config(), store: fileStore(notADirectory) }), logger: new Logger(() => () => {}) });
    // graphile-worker records a failure without awaiting it, so runOnce can return while the job is still locked.
    let rows: { last_error: string | null }[] = [];
    for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      ({ rows } = await db.pool.query(`select last_error from graphile_worker._private_jobs where key = 'unrecordable' and locked_at is null`));
      if (rows.length) break;
    }
    // Not 'relation "audit.task_runs" does not exist': the failure to record it does not replace it.
    expect(rows).toEqual([{ last_error: `ENOTDIR: not a directory, scandir '${path.join(notADirectory, "seals")}'` }]);
  } finally {
    await db.pool.query(`alter table audit.task_runs_away rename to task_runs; delete from graphile_worker._private_jobs`);
  }
});

test("the worker, once started, premakes partitions, seals and checks coverage at once, in that order", async () => {
  const started = await db.pool.query(`select coalesce(max(id), 0) as last from audit.task_runs`);
  const worker = await startWorker(db.url, { ...readConfig({}), ...config() }, createLogger("silent"));
  try {
    let tasks: string[] = [];
    for (let i = 0; i < 100 && tasks.length < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      tasks = (await db.pool.query(`select task from audit.task_runs where id > $1 and succeeded order by id`, [started.rows[0].last]))
        .rows.map((r) => r.task);
    }
    expect(tasks).toEqual(["audit__ensure_partitions", "audit__seal_days", "audit__check_coverage"]);
  } finally {
    await worker.stop();
  }
});
