// The cartop-audit command line, run as a real process against a real database.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import net from "node:net";
import { readFile } from "node:fs/promises";
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
  return cliOn(db.url, {}, ...args);
}

async function cliOn(url: string, extraEnv: Record<string, string>, ...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), ...args], {
      env: { ...process.env, DATABASE_URL: url, AUDIT_ARCHIVE_DIR: dir, NODE_OPTIONS: "", ...extraEnv },
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
      encrypted_columns: [], subject_column: null, triggers_active: 4,
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

  test("track again never drops a protection by accident: it refuses, naming it, unless --drop-protections", async () => {
    await db.pool.query(`create table public.orders (id int primary key, notes text, card_number text)`);
    expect((await cli("track", "public.orders", "--exclude", "notes")).code).toBe(0);
    const refused = await cli("track", "public.orders", "--mask", "card_number");
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(
      "cartop-audit: audit.enable_tracking: public.orders would no longer exclude notes: name them again (--exclude, --mask, --encrypt), or add --drop-protections");
    const kept = await cli("track", "public.orders", "--exclude", "notes", "--mask", "card_number", "--json");
    expect(JSON.parse(kept.stdout)[0]).toMatchObject({ excluded_columns: ["notes"], masked_columns: ["card_number"] });
    const dropped = await cli("track", "public.orders", "--mask", "card_number", "--drop-protections", "--json");
    expect(JSON.parse(dropped.stdout)[0]).toMatchObject({ excluded_columns: [], masked_columns: ["card_number"] });
  });

  test("track --encrypt keeps values under a subject's key; erase-subject destroys it and says so", async () => {
    await db.pool.query(`create table public.patients (id int primary key, diagnosis text, patient_id text)`);
    const tracked = await cli("track", "public.patients", "--encrypt", "diagnosis", "--subject", "patient_id", "--json");
    expect(JSON.parse(tracked.stdout)[0]).toMatchObject({ encrypted_columns: ["diagnosis"], subject_column: "patient_id" });
    await db.pool.query(`insert into public.patients values (1, 'flu', 'p-1')`);
    const before = await cli("history", "public.patients", "1", "--json");
    expect(JSON.parse(before.stdout)[0].data).toEqual({ id: 1, diagnosis: "flu", patient_id: "p-1" });
    const erased = await cli("erase-subject", "p-1", "--json");
    expect(erased.code).toBe(0);
    expect(JSON.parse(erased.stdout)).toMatchObject({ subject: "p-1", keys_destroyed: 1 });
    const after = await cli("history", "public.patients", "1", "--json");
    expect(JSON.parse(after.stdout)[0].data).toEqual({ id: 1, diagnosis: "[erased]", patient_id: "p-1" });
  });

  test("a missing table is a failure (exit 1) with a message naming it", async () => {
    const run = await cli("track", "public.nope");
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('relation "public.nope" does not exist');
  });

  test("a history table fits the width (120 columns off a terminal): long values wrap", async () => {
    await db.pool.query(`select audit.enable_tracking('public.widgets', masked_columns => '{secret}');
                         insert into public.widgets values (2, $1, 'x')`.replace("$1", `'${"a long widget name ".repeat(20)}'`));
    const table = await cli("history", "public.widgets", "2");
    expect(table.code).toBe(0);
    const lines = table.stdout.split("\n");
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(120);
    // Wrapped, not cut: the value's end is there too.
    expect(lines.length).toBeGreaterThan(6);
    expect(table.stdout.replace(/[│\s]+/g, "")).toMatch(/"secret":"\[masked\]"}/);
  });

  test("untrack stops capture; untracking again says so and exits 0", async () => {
    const run = await cli("untrack", "public.widgets", "--json");
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ table: "public.widgets", tracked: false, was_tracked: true });
    const again = await cli("untrack", "public.widgets");
    expect(again).toMatchObject({ code: 0, stdout: "public.widgets was not tracked: nothing to do\n" });
    expect(JSON.parse((await cli("untrack", "public.widgets", "--json")).stdout)).toEqual({ table: "public.widgets", tracked: false, was_tracked: false });
  });
});

describe("partitions", () => {
  test("list --json shows the partitions; ensure is idempotent", async () => {
    const list = await cli("partitions", "list", "--json");
    expect(list.code).toBe(0);
    const names = JSON.parse(list.stdout).map((p: { partition_name: string }) => p.partition_name);
    expect(names).toContain(oldPartition);
    expect(names).toContain("log_default");
    // The template was migrated when the suite began, maybe in the month before: the first run may premake
    // the month that came into the horizon since; a second run has nothing to do.
    // The calendar-edge CI run crosses midnight at a month's end: when the month turns between two runs, the
    // second rightly premakes the one month that came into the horizon, and a third has nothing to do.
    const horizonNow = async () => (await db.pool.query(`select audit_private.partition_name(m::date) as name
      from generate_series(audit_private.current_month(), audit_private.current_month() + interval '3 months', interval '1 month') m`)).rows as { name: string }[];
    const created = async () => {
      const run = await cli("partitions", "ensure", "--json");
      expect(run.code).toBe(0);
      return (JSON.parse(run.stdout) as { created: string }[]).map((c) => c.created);
    };
    const horizonBefore = await horizonNow();
    const first = await created();
    let horizon = await horizonNow();
    for (const name of first) expect([...horizonBefore, ...horizon].map((h) => h.name)).toContain(name);
    let again = await created();
    horizon = await horizonNow();
    if (horizon.at(-1)!.name !== horizonBefore.at(-1)!.name) {
      expect(again.every((name) => name === horizon.at(-1)!.name)).toBe(true);
      again = await created();
      horizon = await horizonNow();
    }
    expect(again).toEqual([]);
    const listed = JSON.parse((await cli("partitions", "list", "--json")).stdout).map((p: { partition_name: string }) => p.partition_name);
    for (const { name } of horizon) expect(listed).toContain(name);
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

  test("restore of a month that was never archived says so and lists the archived ones", async () => {
    const run = await cli("partitions", "restore", "1999-01");
    expect(run.code).toBe(1);
    expect(run.stderr).toBe("cartop-audit: partitions restore: 1999-01 was never archived (audit.archives has no row for it); no month is archived\n");
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

  test("--version prints the package version", async () => {
    const { version } = JSON.parse(await readFile(path.join(projectRoot, "package.json"), "utf8")) as { version: string };
    expect(await cli("--version")).toMatchObject({ code: 0, stdout: `${version}\n` });
  });

  test("--help exits 0 and lists the commands", async () => {
    const run = await cli("--help");
    expect(run.code).toBe(0);
    for (const command of ["start", "migrate", "worker", "track", "untrack", "history", "partitions"]) {
      expect(run.stdout).toContain(command);
    }
  });
});

test("a busy PORT is one sentence, not a stack trace", async () => {
  const busy = net.createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  const { port } = busy.address() as net.AddressInfo;
  try {
    const run = await cliOn(db.url, { PORT: String(port), LOG_LEVEL: "silent" }, "serve");
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`cartop-audit: port ${port} is already in use (another cartop-audit, or another program): stop it, or set PORT to a free port\n`);
  } finally {
    busy.close();
  }
});

test("seal summarises a backlog in one line and lists only the last days; --json lists every day", async () => {
  const fresh = await createTestDatabase();
  const second = await createTestDatabase();
  try {
    // Last month's partition: a backlog of at least 28 finished days, whatever today is.
    for (const each of [fresh, second]) {
      await each.pool.query(`select audit.create_partition(date_trunc('month', now() - interval '1 month')::date)`);
    }
    const listed = JSON.parse((await cliOn(fresh.url, { LOG_LEVEL: "silent" }, "seal", "--json")).stdout) as unknown[];
    // Every finished day of last month (the last one may still be in its hour of grace) and of this one.
    expect(listed.length).toBeGreaterThanOrEqual(27);
    const days = listed.length;
    // The same backlog as a table: a summary line, then the last 10 days.
    const run = await cliOn(second.url, { LOG_LEVEL: "silent" }, "seal");
    expect(run.code).toBe(0);
    const lines = run.stdout.split("\n");
    expect(lines[0]).toMatch(new RegExp(`^sealed ${days} days, \\d{4}-\\d{2}-01 to \\d{4}-\\d{2}-\\d{2} \\(0 audit rows\\); the last 10:$`));
    expect(lines.filter((l) => /^│ \d{4}-\d{2}-\d{2}/.test(l))).toHaveLength(10);
  } finally {
    await fresh.drop();
    await second.drop();
  }
});
