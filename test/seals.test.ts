// Seals: every finished day is sealed into one chain, copied to the archive directory, and `verify` names
// the first day a superuser tampered with — whatever the tampering.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { projectRoot } from "../src/db/sourceSql.ts";
import { ARCHIVE_COLUMNS, ARCHIVE_SCHEMA_VERSION } from "../src/archive/files.ts";
import { archiveMonth } from "../src/archive/archive.ts";
import { columnsMismatch, storedColumns } from "../src/db/storedColumns.ts";
import { dayDigest, SEAL_COLUMNS_BY_FORMAT, SEAL_FORMAT, sealDays, sealDigest, verifySeals } from "../src/seals/seals.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

const exec = promisify(execFile);
let db: TestDatabase;
let dir: string;

const dayOffset = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);
// Four finished days with rows; today's rows (captured by the triggers) are never sealed.
const [d1, d2, d3, d4] = [-6, -5, -4, -3].map(dayOffset) as [string, string, string, string];
const yesterday = dayOffset(-1);

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-seals-test-"));
  // Partitions for the month of the first day onwards (the chain starts at the oldest partition).
  await db.pool.query(`select audit.create_partition(m::date)
    from generate_series(date_trunc('month', $1::date), date_trunc('month', now()), interval '1 month') m`, [d1]);
  // Rows written on past days, as the capture triggers would have stored them.
  await db.pool.query(`
    insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, user_id, db_user)
    select d + make_interval(mins => g * 7), 1000 + g, 1, 'I', g::text, jsonb_build_object('id', g, 'name', 'row ' || g), 'u' || (g % 3), 'app'
    from unnest(array[$1, $2, $3, $4]::date[]) d, generate_series(1, 25) g`, [d1, d2, d3, d4]);
  await db.pool.query(`create table public.sealed_today (id int primary key); select audit.enable_tracking('public.sealed_today');
    insert into public.sealed_today values (1), (2)`);
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function verify() {
  return verifySeals(db.pool, { store: fileStore(dir) });
}

/** Runs SQL as a superuser who switched the append-only guards off (session_replication_role = replica). */
async function tamper(sql: string, params: unknown[] = []): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query("set session_replication_role = replica");
    await client.query(sql, params);
  } finally {
    await client.query("reset session_replication_role");
    client.release();
  }
}

test("sealable days run from the oldest partition to yesterday, and a grace period holds back the last ones", async () => {
  const days = async (grace: string) =>
    (await db.pool.query(`select to_char(d, 'YYYY-MM-DD') as d from audit.sealable_days($1::interval) d`, [grace])).rows.map((r) => r.d);
  const now = await days("0");
  expect(now[0]).toBe(`${d1.slice(0, 7)}-01`);
  expect(now.at(-1)).toBe(yesterday);
  // With a 72-hour grace the last sealable day ended at least 72 hours ago.
  const later = await days("72 hours");
  const cutoff = new Date(Date.now() - 72 * 3_600_000).toISOString().slice(0, 10);
  expect(later.at(-1)).toBe(new Date(Date.parse(`${cutoff}T00:00:00Z`) - 86_400_000).toISOString().slice(0, 10));
  expect(later.length).toBeLessThan(now.length);
});

test("sealing writes one chained seal per finished day, copies it to the archive directory, and verifies clean", async () => {
  const sealed = await sealDays(db.pool, { store: fileStore(dir), grace: "0" });
  expect(sealed[0]!.day).toBe(`${d1.slice(0, 7)}-01`);
  expect(sealed.at(-1)!.day).toBe(yesterday);
  const byDay = new Map(sealed.map((s) => [s.day, s]));
  expect([d1, d2, d3, d4].map((d) => byDay.get(d)!.rows)).toEqual([25, 25, 25, 25]);
  expect(byDay.get(yesterday)!.rows).toBe(0);
  // Each seal links to the one before and its digest covers its own fields.
  sealed.forEach((seal, i) => {
    expect(seal.previous_digest).toBe(i === 0 ? null : sealed[i - 1]!.seal_digest);
    expect(seal.seal_digest).toBe(sealDigest(seal));
  });
  const copy = await readFile(path.join(dir, "seals", `${d4.slice(0, 7)}.jsonl`), "utf8");
  expect(copy).toContain(`"seal_digest":"${byDay.get(d4)!.seal_digest}"`);

  // Nothing more to seal; today stays unsealed.
  expect(await sealDays(db.pool, { store: fileStore(dir), grace: "0" })).toEqual([]);
  const report = await verify();
  expect(report).toMatchObject({ problems: [], firstBadDay: null, sealedDays: sealed.length, checkedDays: sealed.length });
});

test("the oldest open transaction, which bounds sealing, is seen from another connection", async () => {
  const open = await db.pool.connect();
  try {
    await open.query("begin");
    const { rows: [{ started }] } = await open.query(`select now()::text as started`);
    const { rows: [seen] } = await db.pool.query(`select audit_private.oldest_open_transaction_start()::text as started`);
    expect(seen).toEqual({ started });
    await open.query("commit");
    const { rows: [after] } = await db.pool.query(`select audit_private.oldest_open_transaction_start() as started`);
    expect(after).toEqual({ started: null });
  } finally {
    open.release();
  }
});

test("a time budget stops a run after the day it is on, and the next run goes on from there", async () => {
  const fresh = await createTestDatabase();
  const freshDir = await mkdtemp(path.join(os.tmpdir(), "cartop-seals-budget-"));
  try {
    // At least six finished days to seal, whatever day of the month the test runs on.
    await fresh.pool.query(`select audit.create_partition(date_trunc('month', $1::date)::date)`, [d1]);
    const first = await sealDays(fresh.pool, { store: fileStore(freshDir), grace: "0", stopAfterSeconds: 0 });
    expect(first).toHaveLength(1);
    const rest = await sealDays(fresh.pool, { store: fileStore(freshDir), grace: "0" });
    expect(rest[0]!.previous_digest).toBe(first[0]!.seal_digest);
    expect(rest.at(-1)!.day).toBe(yesterday);
    expect((await verifySeals(fresh.pool, { store: fileStore(freshDir) })).problems).toEqual([]);
  } finally {
    await fresh.drop();
    await rm(freshDir, { recursive: true, force: true });
  }
});

test("a day's digest does not depend on the session's time zone or date style", async () => {
  const client = await db.pool.connect();
  try {
    const plain = await dayDigest(client, d2);
    await client.query("set timezone = 'America/New_York'; set datestyle = 'SQL, DMY'");
    expect(await dayDigest(client, d2)).toEqual(plain);
    expect(plain.rows).toBe(25);
  } finally {
    await client.query("reset timezone; reset datestyle");
    client.release();
  }
});

test("verify names the day of each tampering, and is clean again once it is undone", async () => {
  // The stored row as JSON (exact to the microsecond), to put it back afterwards.
  const one = async (day: string, n: number) => (await db.pool.query(
    `select to_jsonb(e) as row from audit_private.log_entries e
     where created_at >= $1::date and created_at < $1::date + 1 and entity_id = $2`, [day, String(n)])).rows[0].row;

  // A changed value.
  await tamper(`update audit_private.log_entries set row_data = row_data || '{"name": "forged"}' where created_at::date = $1 and entity_id = '7'`, [d2]);
  let report = await verify();
  expect(report.firstBadDay).toBe(d2);
  expect(report.problems).toEqual([{ day: d2, problem: "rows differ from what was sealed (same count, 25)" }]);
  await tamper(`update audit_private.log_entries set row_data = row_data || '{"name": "row 7"}' where created_at::date = $1 and entity_id = '7'`, [d2]);
  expect((await verify()).problems).toEqual([]);

  // A changed statement number (format 2 digests every stored column).
  await tamper(`update audit_private.log_entries set statement_number = 2 where created_at::date = $1 and entity_id = '8'`, [d2]);
  expect((await verify()).problems).toEqual([{ day: d2, problem: "rows differ from what was sealed (same count, 25)" }]);
  await tamper(`update audit_private.log_entries set statement_number = null where created_at::date = $1 and entity_id = '8'`, [d2]);
  expect((await verify()).problems).toEqual([]);

  // A deleted row.
  const deleted = await one(d3, 11);
  await tamper(`delete from audit_private.log_entries where id = $1`, [deleted.id]);
  report = await verify();
  expect(report.firstBadDay).toBe(d3);
  expect(report.problems).toEqual([{ day: d3, problem: "24 rows, but 25 were sealed" }]);
  await tamper(`insert into audit_private.log_entries select (jsonb_populate_record(null::audit_private.log_entries, $1::jsonb)).*`, [deleted]);
  expect((await verify()).problems).toEqual([]);

  // An inserted row.
  await tamper(`insert into audit_private.log_entries (id, created_at, tx_id, table_id, action, entity_id, row_data, db_user)
    values (999999, $1::date + time '12:00', 1, 1, 'I', 'ghost', '{}', 'app')`, [d1]);
  report = await verify();
  expect(report.firstBadDay).toBe(d1);
  expect(report.problems).toEqual([{ day: d1, problem: "26 rows, but 25 were sealed" }]);
  await tamper(`delete from audit_private.log_entries where id = 999999`);
  expect((await verify()).problems).toEqual([]);

  // Rows moved between days: both days change, the earlier is named first.
  const moved = await one(d4, 3);
  await tamper(`update audit_private.log_entries set created_at = created_at - interval '1 day' where id = $1`, [moved.id]);
  report = await verify();
  expect(report.firstBadDay).toBe(d3);
  expect(report.problems).toEqual([
    { day: d3, problem: "26 rows, but 25 were sealed" },
    { day: d4, problem: "24 rows, but 25 were sealed" },
  ]);
  await tamper(`update audit_private.log_entries set created_at = created_at + interval '1 day' where id = $1`, [moved.id]);
  expect((await verify()).problems).toEqual([]);
});

test("rewriting or deleting seals is caught too: by the chain and by the copy in the archive directory", async () => {
  const { rows: [{ seal }] } = await db.pool.query(`select to_jsonb(s) as seal from audit.seals s where day = $1`, [d2]);
  // A superuser recomputes the seal for forged rows but cannot rewrite the chain after it consistently.
  await tamper(`update audit.seals set rows = 24 where day = $1`, [d2]);
  let report = await verify();
  expect(report.firstBadDay).toBe(d2);
  expect(report.problems).toEqual([
    { day: d2, problem: "seal digest does not match its own fields (the seal was edited)" },
    { day: d2, problem: "seal differs from its copy in the archive directory" },
    { day: d2, problem: "25 rows, but 24 were sealed" },
  ]);
  await tamper(`update audit.seals set rows = 25 where day = $1`, [d2]);

  await tamper(`delete from audit.seals where day = $1`, [d2]);
  report = await verify();
  expect(report.firstBadDay).toBe(d2);
  expect(report.problems).toEqual(expect.arrayContaining([
    { day: d2, problem: `no seal between ${d1} and ${d3} (seals were deleted)` },
    { day: d2, problem: "sealed in the archive directory, but the seal is gone from audit.seals" },
  ]));
  await tamper(`insert into audit.seals select (jsonb_populate_record(null::audit.seals, $1::jsonb)).*`, [seal]);
  expect((await verify()).problems).toEqual([]);
});

test("verify pointed at an archive directory without the copies says so once", async () => {
  const elsewhere = await mkdtemp(path.join(os.tmpdir(), "cartop-seals-elsewhere-"));
  try {
    const report = await verifySeals(db.pool, { store: fileStore(elsewhere) });
    expect(report.problems).toEqual([{ day: `${d1.slice(0, 7)}-01`, problem: `no seal copies in ${path.join(elsewhere, "seals")} (is AUDIT_ARCHIVE_URL or AUDIT_ARCHIVE_DIR right?)` }]);
  } finally {
    await rm(elsewhere, { recursive: true, force: true });
  }
});

test("seals are append-only and only extend the chain", async () => {
  await expect(db.pool.query(`update audit.seals set rows = 0`)).rejects.toThrow("audit trail is append-only: UPDATE on audit.seals is not allowed");
  await expect(db.pool.query(`delete from audit.seals`)).rejects.toThrow("audit trail is append-only: DELETE on audit.seals is not allowed");
  await expect(db.pool.query(
    `insert into audit.seals (day, rows, rows_digest, previous_digest, seal_digest, format)
     values ($1, 0, repeat('a', 64), repeat('b', 64), repeat('c', 64), 1)`, [d2],
  )).rejects.toThrow(`seal for ${d2} does not extend the chain, which ends at ${yesterday}`);
  // Auditors read the seals.
  const client = await db.pool.connect();
  try {
    await client.query("set role cartop_auditor");
    const { rows } = await client.query(`select count(*)::int as n from audit.seals where day = $1`, [d2]);
    expect(rows).toEqual([{ n: 1 }]);
  } finally {
    await client.query("reset role");
    client.release();
  }
});

test("cartop-audit verify exits 1 naming the first bad day, and 0 on an untouched trail", async () => {
  const run = async (...args: string[]) => {
    try {
      const { stdout } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), "verify", "--json", ...args], {
        env: { ...process.env, DATABASE_URL: db.url, AUDIT_ARCHIVE_DIR: dir, NODE_OPTIONS: "" },
      });
      return { code: 0, report: JSON.parse(stdout) };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      return { code: e.code, report: e.stdout ? JSON.parse(e.stdout) : null, stderr: e.stderr };
    }
  };
  expect(await run()).toMatchObject({ code: 0, report: { first_bad_day: null, problems: [] } });
  await tamper(`update audit_private.log_entries set user_id = 'someone else' where created_at::date = $1 and entity_id = '5'`, [d3]);
  expect(await run()).toMatchObject({ code: 1, report: { first_bad_day: d3 } });
  expect(await run("--from", "2026-02-30")).toMatchObject({ code: 2, stderr: expect.stringContaining('"2026-02-30" is not a day: expected YYYY-MM-DD') });
});

test("every stored column is in the current archive format and seal format", async () => {
  // When this fails, a column was added to audit_private.log_entries: add it to ARCHIVE_COLUMNS and bump
  // ARCHIVE_SCHEMA_VERSION (src/archive/files.ts), add it to SEAL_COLUMNS_BY_FORMAT and bump SEAL_FORMAT.
  const stored = await storedColumns(db.pool);
  expect(columnsMismatch(stored, ARCHIVE_COLUMNS, `archive format ${ARCHIVE_SCHEMA_VERSION}`)).toBeNull();
  expect(columnsMismatch(stored, SEAL_COLUMNS_BY_FORMAT[SEAL_FORMAT]!, `seal format ${SEAL_FORMAT}`)).toBeNull();
});

test("days sealed in format 1 still verify with format 1's columns; new days are sealed in format 2", async () => {
  const fresh = await createTestDatabase();
  const store = fileStore(await mkdtemp(path.join(os.tmpdir(), "cartop-seals-format-")));
  try {
    await fresh.pool.query(`select audit.create_partition(m::date)
      from generate_series(date_trunc('month', $1::date), date_trunc('month', now()), interval '1 month') m`, [d1]);
    await fresh.pool.query(`
      insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user, statement_number)
      select d + make_interval(mins => g), 1, 1, 'I', g::text, jsonb_build_object('id', g), 'app', 1
      from generate_series(date_trunc('month', $1::date), (now() at time zone 'UTC')::date - 1, interval '1 day') d, generate_series(1, 3) g`, [d1]);
    // The first day sealed as an earlier version did: format 1, without statement numbers.
    const { rows: [oldest] } = await fresh.pool.query(`select to_char(min(d), 'YYYY-MM-DD') as day from audit.sealable_days('1 hour') d`);
    const old = { day: oldest.day as string, rows: 0, rows_digest: "", previous_digest: null, format: 1 };
    Object.assign(old, await dayDigest(fresh.pool, old.day, 1).then(({ rows, digest }) => ({ rows, rows_digest: digest })));
    await fresh.pool.query(`insert into audit.seals (day, rows, rows_digest, previous_digest, seal_digest, format) values ($1, $2, $3, null, $4, 1)`,
      [old.day, old.rows, old.rows_digest, sealDigest(old)]);
    const sealed = await sealDays(fresh.pool, { store });
    expect(sealed.length).toBeGreaterThan(0);
    expect(new Set(sealed.map((s) => s.format))).toEqual(new Set([2]));
    expect((await verifySeals(fresh.pool, { store })).problems).toEqual([]);
    // A format-1 day is checked with its own columns: a changed value is caught, a changed statement number is
    // not (format 1 never covered it); on a format-2 day it is.
    const forge = async (sql: string, day: string) => {
      const client = await fresh.pool.connect();
      try {
        await client.query("set session_replication_role = replica");
        await client.query(`update audit_private.log_entries set ${sql} where created_at >= $1::date and created_at < $1::date + 1 and entity_id = '2'`, [day]);
      } finally {
        await client.query("reset session_replication_role");
        client.release();
      }
    };
    const newer = sealed[0]!.day;
    await forge("statement_number = 7", old.day);
    expect((await verifySeals(fresh.pool, { store })).problems).toEqual([]);
    await forge("statement_number = 7", newer);
    await forge("row_data = '{\"id\": 99}'", old.day);
    expect((await verifySeals(fresh.pool, { store })).problems).toEqual([
      { day: old.day, problem: "rows differ from what was sealed (same count, 3)" },
      { day: newer, problem: "rows differ from what was sealed (same count, 3)" },
    ]);
  } finally {
    await fresh.drop();
  }
});

test("sealing and archiving refuse while storage has a column their format would leave out", async () => {
  const fresh = await createTestDatabase();
  const dir = await mkdtemp(path.join(os.tmpdir(), "cartop-seals-column-"));
  try {
    const month = (await fresh.pool.query(`select to_char(audit_private.current_month() - interval '14 months', 'YYYY-MM-DD') as m`)).rows[0].m;
    await fresh.pool.query(`select audit.create_partition($1::date)`, [month]);
    await fresh.pool.query(`alter table audit_private.log_entries add column tenant text`);
    await expect(sealDays(fresh.pool, { store: fileStore(dir) })).rejects.toThrow(
      `seal: audit_private.log_entries has columns ${[...SEAL_COLUMNS_BY_FORMAT[SEAL_FORMAT]!, "tenant"].join(", ")}; seal format ${SEAL_FORMAT} has ` +
      `${SEAL_COLUMNS_BY_FORMAT[SEAL_FORMAT]!.join(", ")} (it would leave out tenant): update SEAL_COLUMNS_BY_FORMAT and bump SEAL_FORMAT (src/seals/seals.ts)`);
    await expect(archiveMonth(fresh.pool, month, { store: fileStore(dir) })).rejects.toThrow("(it would leave out tenant)");
    expect((await fresh.pool.query(`select count(*)::int as n from audit.seals`)).rows).toEqual([{ n: 0 }]);
  } finally {
    await fresh.drop();
    await rm(dir, { recursive: true, force: true });
  }
});
