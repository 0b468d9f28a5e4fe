// The coverage guard finds each silent failure of a trigger-based audit, and is clean when all is well.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { archiveMonth } from "../src/archive/archive.ts";
import { archivePaths } from "../src/archive/files.ts";
import { projectRoot } from "../src/db/sourceSql.ts";
import { COVERAGE_CHECKS } from "../src/metrics.ts";
import { sealDays } from "../src/seals/seals.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

const exec = promisify(execFile);
let db: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-doctor-test-"));
  await db.pool.query(`create table public.guarded (id int primary key, v text); select audit.enable_tracking('public.guarded');`);
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function doctor(): Promise<{ code: number; problems: { check_name: string; object: string; problem: string }[] }> {
  try {
    const { stdout } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), "doctor", "--json"], {
      env: { ...process.env, DATABASE_URL: db.url, AUDIT_ARCHIVE_DIR: dir, AUDIT_PREMAKE_MONTHS: "2", NODE_OPTIONS: "" },
    });
    return { code: 0, problems: JSON.parse(stdout) };
  } catch (error) {
    const e = error as { code: number; stdout: string };
    return { code: e.code, problems: JSON.parse(e.stdout) };
  }
}

test("finished days left unsealed are reported until they are sealed; then the database is clean", async () => {
  // A partition two months back makes the chain start there, whatever today's date.
  const { rows: [{ first }] } = await db.pool.query(
    `select to_char(m, 'YYYY-MM-DD') as first from audit.create_partition((audit_private.current_month() - interval '2 months')::date),
       lateral (select audit_private.current_month() - interval '2 months' as m) s`);
  expect(await doctor()).toEqual({ code: 1, problems: [
    { check_name: "seal_overdue", object: "audit.seals", problem: `finished days since ${first} are not sealed` },
  ] });
  await sealDays(db.pool, { store: fileStore(dir), grace: "0" });
  expect(await doctor()).toEqual({ code: 0, problems: [] });
});

test("each planted fault is found, and gone once repaired", async () => {
  const cases: [string, string, string, { check_name: string; object: string; problem: string }][] = [
    // A plain DROP TABLE ends tracking (tested below); in replica mode no event trigger sees it.
    [`create table public.doomed (id int primary key); select audit.enable_tracking('public.doomed');
      set session_replication_role = replica; drop table public.doomed; reset session_replication_role`,
      "select audit.disable_tracking('public', 'doomed')", "",
      { check_name: "tracked_table_missing", object: "public.doomed",
        problem: "tracked, but the table does not exist; to end its tracking: select audit.disable_tracking('public', 'doomed')" }],
    // A plain DROP TRIGGER is undone at once by the event trigger (tested below); a superuser in replica mode,
    // where event triggers do not fire, is what the check is for.
    ["set session_replication_role = replica; drop trigger _900_audit_update on public.guarded; reset session_replication_role",
      "select audit.enable_tracking('public.guarded')", "",
      { check_name: "capture_trigger_missing", object: "public.guarded", problem: "3 of 4 capture triggers installed, 3 enabled" }],
    // ALTER TABLE … DISABLE TRIGGER is undone at once by the event trigger (see the next test); a superuser
    // editing the catalog, or an install without the event trigger, is what the check is for.
    ["update pg_trigger set tgenabled = 'D' where tgname = '_900_audit_insert' and tgrelid = 'public.guarded'::regclass",
      "update pg_trigger set tgenabled = 'O' where tgname = '_900_audit_insert' and tgrelid = 'public.guarded'::regclass", "",
      { check_name: "capture_trigger_disabled", object: "public.guarded", problem: "4 of 4 capture triggers installed, 3 enabled" }],
    [`create table public.sneaky (id int primary key);
      create trigger _900_audit_insert after insert on public.sneaky for each statement execute function app.tg__touch_updated_at()`,
      "drop table public.sneaky", "",
      { check_name: "foreign_capture_trigger", object: "_900_audit_insert on public.sneaky", problem: "runs app.tg__touch_updated_at()" }],
    ["select 1", "select audit.ensure_partitions(2)", "drop-next-month",
      { check_name: "partition_missing", object: "", problem: "" }],
    [`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      values ('2045-06-01', 1, 1, 'I', 'x', '{}', 'test')`, "select audit.drain_default_partition()", "",
      { check_name: "default_partition_rows", object: "audit.log_default", problem: "1 row(s) of 2045-06" }],
  ];
  const planted = new Set<string>(["seal_overdue"]); // planted in the first test
  for (const [plant, repair, special, expected] of cases) {
    planted.add(expected.check_name);
    if (special === "drop-next-month") {
      const { rows: [{ name }] } = await db.pool.query(
        `select audit_private.partition_name((audit_private.current_month() + interval '1 month')::date) as name`);
      await db.pool.query(`drop table audit.${name}`);
      expected.object = `audit.${name}`;
      expected.problem = `no partition for ${name.slice(4).replace("_", "-")} (keep 2 month(s) ahead)`;
    } else {
      await db.pool.query(plant);
    }
    const found = await doctor();
    expect(found).toEqual({ code: 1, problems: [expected] });
    await db.pool.query(repair);
    expect(await doctor()).toEqual({ code: 0, problems: [] });
  }
  // Every check there is was planted here, and /metrics reports each by name.
  expect([...planted].sort()).toEqual([...COVERAGE_CHECKS].sort());
}, 300_000); // two CLI processes per fault: minutes on a loaded 2-core machine

test("disabling a capture trigger with ALTER TABLE is undone at once: capture cannot be switched off quietly", async () => {
  await db.pool.query(`alter table public.guarded disable trigger _900_audit_insert`);
  const { rows } = await db.pool.query(
    `select triggers_installed, triggers_active from audit.tracked_tables where table_name = 'guarded'`);
  expect(rows).toEqual([{ triggers_installed: 4, triggers_active: 4 }]);
  await db.pool.query(`insert into public.guarded values (7, 'still audited')`);
  const { rows: audited } = await db.pool.query(`select count(*)::int as n from audit.log where entity_name = 'guarded' and entity_id = '7'`);
  expect(audited[0].n).toBe(1);
});

test("dropping a capture trigger of a tracked table re-attaches capture at once, with a warning", async () => {
  const client = await db.pool.connect();
  const warnings: string[] = [];
  client.on("notice", (notice) => warnings.push(`${notice.severity}: ${notice.message}`));
  try {
    await client.query(`drop trigger _900_audit_update on public.guarded`);
  } finally {
    client.release();
  }
  expect(warnings).toEqual(["WARNING: cartop-audit: a capture trigger of public.guarded, which is tracked, was dropped; capture was re-attached"]);
  const { rows } = await db.pool.query(
    `select triggers_installed, triggers_active from audit.tracked_tables where table_name = 'guarded'`);
  expect(rows).toEqual([{ triggers_installed: 4, triggers_active: 4 }]);
  await db.pool.query(`insert into public.guarded values (8, 'new'); update public.guarded set v = 'still audited' where id = 8`);
  const { rows: audited } = await db.pool.query(
    `select count(*)::int as n from audit.log where entity_name = 'guarded' and entity_id = '8' and action = 'UPDATE'`);
  expect(audited[0].n).toBe(1);
  // Stopping auditing the intended way drops the triggers without a fight.
  await db.pool.query(`select audit.disable_tracking('public.guarded')`);
  const { rows: after } = await db.pool.query(`select count(*)::int as n from pg_trigger where tgrelid = 'public.guarded'::regclass and tgname like '\_900\_audit\_%'`);
  expect(after[0].n).toBe(0);
  await db.pool.query(`select audit.enable_tracking('public.guarded')`);
});

test("dropping a tracked table, or its schema, ends its tracking with a notice and keeps its history", async () => {
  await db.pool.query(`create schema doomed_schema;
    create table public.dropped (id int primary key); create table doomed_schema.dropped_too (id int primary key);
    select audit.enable_tracking('public.dropped'); select audit.enable_tracking('doomed_schema.dropped_too');
    insert into public.dropped values (1); insert into doomed_schema.dropped_too values (1)`);
  const registry = () => db.pool.query(`select t.table_name, t.enabled,
      (select count(*)::int from pg_proc p where p.proname like 'capture\\_%\\_' || t.id) as capture_functions,
      (select count(*)::int from audit.log l where l.entity_schema = t.schema_name and l.entity_name = t.table_name) as history
    from audit_private.tables t where t.table_name in ('dropped', 'dropped_too') order by 1`);
  expect((await registry()).rows).toEqual([
    { table_name: "dropped", enabled: true, capture_functions: 4, history: 1 },
    { table_name: "dropped_too", enabled: true, capture_functions: 4, history: 1 },
  ]);
  const client = await db.pool.connect();
  const notices: string[] = [];
  client.on("notice", (notice) => notices.push(`${notice.severity}: ${notice.message}`));
  try {
    await client.query(`drop table public.dropped`);
    await client.query(`drop schema doomed_schema cascade`);
  } finally {
    client.release();
  }
  expect(notices.filter((n) => n.includes("cartop-audit"))).toEqual([
    "NOTICE: cartop-audit: tracked table public.dropped was dropped; tracking ended, its audit history is kept",
    "NOTICE: cartop-audit: tracked table doomed_schema.dropped_too was dropped; tracking ended, its audit history is kept",
  ]);
  expect((await registry()).rows).toEqual([
    { table_name: "dropped", enabled: false, capture_functions: 0, history: 1 },
    { table_name: "dropped_too", enabled: false, capture_functions: 0, history: 1 },
  ]);
  expect(await doctor()).toEqual({ code: 0, problems: [] });
  await expect(db.pool.query(`select audit.disable_tracking('public', 'dropped')`))
    .rejects.toThrow("audit.disable_tracking: table public.dropped is not tracked");
});

test("an archive file that no longer matches its manifest is reported", async () => {
  await db.pool.query(`select audit.create_partition('2020-02-01');
    insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
    select '2020-02-03', 1, 1, 'I', g::text, '{}', 'test' from generate_series(1, 50) g`);
  await archiveMonth(db.pool, "2020-02-01", { store: fileStore(dir) });
  expect((await doctor()).code).toBe(0);
  await writeFile(archivePaths(dir, "2020-02").data, "tampered");
  const found = await doctor();
  expect(found.code).toBe(1);
  expect(found.problems).toEqual([{
    check_name: "archive_unverified", object: archivePaths(dir, "2020-02").data,
    problem: expect.stringMatching(/^checksum mismatch: /),
  }]);
});

test("audit.coverage checks the premake horizon the deployment keeps, for auditors too", async () => {
  const fresh = await createTestDatabase();
  try {
    const coverage = async () => {
      const client = await fresh.pool.connect();
      try {
        await client.query("set role cartop_auditor");
        return (await client.query(`select * from audit.coverage where check_name = 'partition_missing'`)).rows;
      } finally {
        await client.query("reset role");
        client.release();
      }
    };
    // AUDIT_PREMAKE_MONTHS reaches the database through the worker's ensure_partitions.
    await fresh.pool.query(`select audit.ensure_partitions(5)`);
    expect((await fresh.pool.query(`select months_ahead from audit_private.partition_horizon`)).rows).toEqual([{ months_ahead: 5 }]);
    expect(await coverage()).toEqual([]);
    const { rows: [{ name, month }] } = await fresh.pool.query(`select audit_private.partition_name(m::date) as name, to_char(m, 'YYYY-MM') as month
      from (select date_trunc('month', (now() - interval '1 hour') at time zone 'UTC') + interval '5 months' as m) s`);
    await fresh.pool.query(`drop table audit.${name}`);
    expect(await coverage()).toEqual([{ check_name: "partition_missing", object: `audit.${name}`, problem: `no partition for ${month} (keep 5 month(s) ahead)` }]);
    // A deployment that keeps fewer months ahead is not told to premake more.
    await fresh.pool.query(`select audit.ensure_partitions(2)`);
    expect(await coverage()).toEqual([]);
    await expect(fresh.pool.query(`select audit.ensure_partitions(-1)`)).rejects.toMatchObject({
      message: "audit.ensure_partitions: months_ahead must be >= 0, got -1", code: "22023" });
  } finally {
    await fresh.drop();
  }
});
