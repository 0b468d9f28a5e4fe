// `cartop-audit partitions archive` does what the daily job does (issue 14): summarise and seal first, then
// archive what is old enough, and finish a month an interrupted run left detached.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { archiveMonth } from "../src/archive/archive.ts";
import { runCli } from "../src/cli/program.ts";
import { createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-archive-due-"));
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** Runs the CLI in this process against the test database; returns its exit code and what it printed. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const saved = { DATABASE_URL: process.env.DATABASE_URL, AUDIT_ARCHIVE_DIR: process.env.AUDIT_ARCHIVE_DIR };
  const printed = { stdout: "", stderr: "" };
  const writes = { stdout: process.stdout.write, stderr: process.stderr.write };
  for (const stream of ["stdout", "stderr"] as const) {
    process[stream].write = ((chunk: string) => { printed[stream] += chunk; return true; }) as typeof process.stdout.write;
  }
  Object.assign(process.env, { DATABASE_URL: db.url, AUDIT_ARCHIVE_DIR: dir });
  try {
    const code = await runCli(["node", "cartop-audit", ...args]);
    return { code, ...printed };
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}

test("partitions archive seals first, archives the old month and finishes one left detached", async () => {
  const { rows: [{ old, older }] } = await db.pool.query(`
    select to_char(audit_private.current_month() - interval '14 months', 'YYYY-MM-DD') as old,
           to_char(audit_private.current_month() - interval '16 months', 'YYYY-MM-DD') as older`);
  for (const month of [older, old]) {
    await db.pool.query(`select audit.create_partition($1::date)`, [month]);
    await db.pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
       select $1::date + interval '2 days' + g * interval '1 minute', 1, 1, 'I', g::text, '{}', 'owner' from generate_series(1, 300) g`,
      [month]);
  }
  // An earlier run died after detaching `older`: its partition no longer shows in audit.partitions.
  const crash = await errorOf(archiveMonth(db.pool, older, { store: fileStore(dir), afterStep: (step) => { if (step === "detached") throw new Error("killed"); } }));
  expect(crash.message).toBe("killed");

  const run = await cli("partitions", "archive", "--older-than", "12", "--json");
  expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
  expect(JSON.parse(run.stdout)).toMatchObject([
    { month: older.slice(0, 7), rows: 300, status: "archived" },
    { month: old.slice(0, 7), rows: 300, status: "archived" },
  ]);
  const { rows: archives } = await db.pool.query(`select to_char(month, 'YYYY-MM-DD') as month, status from audit.archives order by month`);
  expect(archives).toEqual([{ month: older, status: "archived" }, { month: old, status: "archived" }]);
  for (const month of [older, old]) {
    expect((await db.pool.query(`select present from audit_private.partition_state($1::date)`, [month])).rows[0].present).toBe(false);
  }
  // Sealed before it left: every day of the month has a seal, and the seals hold its rows (an archive
  // before sealing would have left those days sealed empty).
  const { rows: [seals] } = await db.pool.query(
    `select count(*)::int as days, sum(rows)::int as rows from audit.seals where date_trunc('month', day) = $1::date`, [old]);
  const daysInMonth = new Date(Date.UTC(Number(old.slice(0, 4)), Number(old.slice(5, 7)), 0)).getUTCDate();
  expect(seals).toEqual({ days: daysInMonth, rows: 300 });
  // Summarised before it left: activity_daily keeps the month's counts.
  const { rows: [counted] } = await db.pool.query(
    `select coalesce(sum(changes), 0)::int as n from audit.activity_daily where day = $1::date + 2`, [old]);
  expect(counted.n).toBe(300);
});

test("archive query runs SQL over the archived months' Parquet copies in the archive directory", async () => {
  const { rows: [{ older }] } = await db.pool.query(
    `select to_char(audit_private.current_month() - interval '16 months', 'YYYY-MM') as older`);
  const json = await cli("archive", "query", "select strftime(created_at, '%Y-%m') as month, count(*)::int as n from audit_log group by 1 order by 1", "--json");
  expect(json.code).toBe(0);
  expect(JSON.parse(json.stdout)).toEqual([{ month: older, n: 300 }, { month: expect.any(String), n: 300 }]);
  const table = await cli("archive", "query", "select count(*)::int as archived_rows from audit_log");
  expect(table.code).toBe(0);
  expect(table.stdout).toMatch(/archived_rows[\s\S]*600/);
  const refused = await cli("archive", "query", "delete from audit_log");
  expect(refused.code).toBe(1);
});
