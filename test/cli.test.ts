// The cartop-audit command line, run as a real process against a real database.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { projectRoot } from "../src/db/sourceSql.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

const exec = promisify(execFile);
let db: TestDatabase;
let dir: string;
// An archivable month 13 months back (archiving seals every day from the oldest month first).
const now = new Date();
const old = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 13, 1)).toISOString().slice(0, 7);
const oldPartition = `log_${old.replace("-", "_")}`;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-cli-test-"));
  await db.pool.query(`
    create table public.widgets (id integer primary key, name text, secret text);
    select audit.create_partition('${old}-01');
    insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
    select '${old}-02'::timestamptz + g * interval '1 minute', 1, 1, 'I', g::text, '{}', 'owner' from generate_series(1, 500) g;`);
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cartop-audit args…` with the project's Node, against the test database. */
async function cli(...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), ...args], {
      env: { ...process.env, DATABASE_URL: db.url, AUDIT_ARCHIVE_DIR: dir, NODE_OPTIONS: "" },
      cwd: dir,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("tracking", () => {
  test("track prints the tracked table; --json parses; history shows the row's changes", async () => {
    const tracked = await cli("track", "public.widgets", "--mask", "secret", "--json");
    expect(tracked.code).toBe(0);
    expect(JSON.parse(tracked.stdout)).toEqual([{
      schema_name: "public", table_name: "widgets", primary_key: ["id"], excluded_columns: [], masked_columns: ["secret"],
      triggers_active: 4,
    }]);
    await db.pool.query(`insert into public.widgets values (1, 'a', 's1'); update public.widgets set name = 'b', secret = 's2'`);
    const history = await cli("history", "public.widgets", "1", "--json");
    expect(history.code).toBe(0);
    expect(JSON.parse(history.stdout).map((r: { action: string; data: unknown }) => [r.action, r.data])).toEqual([
      ["UPDATE", { name: { old: "a", new: "b" }, secret: { old: "[masked]", new: "[masked]" } }],
      ["INSERT", { id: 1, name: "a", secret: "[masked]" }],
    ]);
    const table = await cli("history", "public.widgets", "1");
    expect(table.stdout).toContain("│ UPDATE │");
  });

  test("a missing table is a failure (exit 1) with a message naming it", async () => {
    const run = await cli("track", "public.nope");
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('relation "public.nope" does not exist');
  });

  test("untrack stops capture", async () => {
    const run = await cli("untrack", "public.widgets", "--json");
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ table: "public.widgets", tracked: false });
  });
});

describe("partitions", () => {
  test("list --json shows the partitions; ensure is idempotent", async () => {
    const list = await cli("partitions", "list", "--json");
    expect(list.code).toBe(0);
    const names = JSON.parse(list.stdout).map((p: { partition_name: string }) => p.partition_name);
    expect(names).toContain(oldPartition);
    expect(names).toContain("log_default");
    const ensure = await cli("partitions", "ensure", "--json");
    expect(ensure.code).toBe(0);
    expect(JSON.parse(ensure.stdout)).toEqual([]);
  });

  test("archive, verify and restore a month", async () => {
    const archive = await cli("partitions", "archive", "--older-than", "12", "--json");
    expect(archive.code).toBe(0);
    expect(JSON.parse(archive.stdout)).toMatchObject([{ month: old, rows: 500, status: "archived" }]);
    const verify = await cli("partitions", "verify", "--json");
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.stdout)).toMatchObject([{ month: old, ok: true, problem: null }]);
    const restore = await cli("partitions", "restore", old, "--json");
    expect(restore.code).toBe(0);
    expect(JSON.parse(restore.stdout)).toEqual({ month: old, rows: 500, partition: `audit.${oldPartition}` });
    const again = await cli("partitions", "restore", old);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`refusing to restore ${old}: audit.${oldPartition} already holds 500 rows. Nothing was changed.`);
  });

  test("check-default exits 1 while rows wait in the default partition; drain-default moves them", async () => {
    expect((await cli("partitions", "check-default")).code).toBe(0);
    await db.pool.query(`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
                         values ('2038-02-03', 1, 1, 'I', 'x', '{}', 'owner')`);
    const check = await cli("partitions", "check-default", "--json");
    expect(check.code).toBe(1);
    expect(JSON.parse(check.stdout)).toEqual([{ month: "2038-02", rows: 1 }]);
    const drain = await cli("partitions", "drain-default", "--json");
    expect(drain.code).toBe(0);
    expect(JSON.parse(drain.stdout)).toEqual([{ partition: "log_2038_02" }]);
    expect((await cli("partitions", "check-default")).code).toBe(0);
  });

  test("verify of a month without an archive fails with exit 1", async () => {
    const run = await cli("partitions", "verify", "1999-01", "--json");
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout)).toMatchObject([{ month: "1999-01", ok: false, problem: "audit.archives has no record of 1999-01: nothing to check the file against" }]);
  });
});

describe("usage errors exit with 2 and say what is wrong", () => {
  test.each([
    [["partitions", "restore", "2021-13"], '"2021-13" is not a month: expected YYYY-MM'],
    [["partitions", "archive", "--older-than", "x"], "expected a whole number >= 0"],
    [["frobnicate"], "unknown command 'frobnicate'"],
    [["partitions", "list", "--bogus"], "unknown option '--bogus'"],
  ])("%j", async (args, message) => {
    const run = await cli(...args);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(message);
  });

  test("--help exits 0 and lists the commands", async () => {
    const run = await cli("--help");
    expect(run.code).toBe(0);
    for (const command of ["start", "migrate", "worker", "track", "untrack", "history", "partitions"]) {
      expect(run.stdout).toContain(command);
    }
  });
});
