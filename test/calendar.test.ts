// The calendar's edges, on a PostgreSQL whose clock is moved with libfaketime (Debian's `faketime`; CI installs
// it): a month that ends while a transaction is open, the first minute of the next month, and the archive
// cut-offs on the last and the first day. The rest of the suite runs at such instants too (.ci/run); this file
// pins them, so the behaviour there is asserted whatever day the suite runs on.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type pg from "pg";
import { archiveMonth, restoreMonth } from "../src/archive/archive.ts";
import { fileStore } from "../src/archive/store.ts";
import { startEmbeddedPostgres, type EmbeddedServer } from "../src/db/embedded.ts";
import { createPool } from "../src/db/pool.ts";
import { runMigrations } from "../src/db/migrate.ts";
import { projectRoot } from "../src/db/sourceSql.ts";
import { databaseUrl } from "../src/db/urls.ts";
import { sealDays, verifySeals } from "../src/seals/seals.ts";

const exec = promisify(execFile);

/** libfaketime's preload library, where Debian (or a local build) puts it. */
export function libfaketime(): string | undefined {
  const candidates = [
    `/usr/lib/${os.arch() === "arm64" ? "aarch64" : "x86_64"}-linux-gnu/faketime/libfaketime.so.1`,
    "/usr/local/lib/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
  ];
  return candidates.find((file) => existsSync(file));
}

/** The environment that makes a new process's clock start at `instant` (UTC) and run on from there. */
function clockAt(library: string, instant: string): Record<string, string> {
  return { LD_PRELOAD: library, FAKETIME: `@${instant}`, FAKETIME_DONT_RESET: "1", TZ: "UTC" };
}

const library = libfaketime();
// Without libfaketime the clock cannot be moved; everything else in the suite still runs. In CI (which installs
// it) a missing library fails the file rather than skipping it.
const withMovedClock = library || process.env.CI ? describe : describe.skip;
if (!library) process.stderr.write("test/calendar.test.ts: libfaketime not found (apt-get install faketime): calendar edges not run\n");

withMovedClock("a month that ends while a transaction is open (server clock at 2027-01-31 23:59)", () => {
  const dataDir = path.join(os.tmpdir(), `cartop-calendar-${process.pid}`);
  const archiveDir = path.join(os.tmpdir(), `cartop-calendar-archive-${process.pid}`);
  let server: EmbeddedServer | undefined;
  let pool: pg.Pool;
  let url: string;

  /** Starts the cluster in `dataDir` with its clock starting at `instant`. */
  async function startAt(instant: string): Promise<void> {
    const saved = { ...process.env };
    Object.assign(process.env, clockAt(library!, instant));
    try {
      server = await startEmbeddedPostgres({
        dataDir, port: 56432, persistent: true,
        settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off", TimeZone: "UTC" },
      });
    } finally {
      for (const name of Object.keys(clockAt("", ""))) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    }
    url = databaseUrl(server.url, "postgres");
    // Connections the server closes when it is stopped between clocks are not test failures.
    pool = createPool(url, { max: 4 });
  }
  async function stop(): Promise<void> {
    await pool?.end();
    await server?.stop();
    server = undefined;
  }
  const one = async <T>(sql: string, params: unknown[] = []): Promise<T> => (await pool.query(sql, params)).rows[0] as T;
  const archivable = async (olderThan: number) =>
    (await pool.query(`select to_char(m, 'YYYY-MM') as m from audit.archivable_months($1) m order by 1`, [olderThan])).rows.map((r) => r.m);
  /** Audit rows of public.ledger by partition, with their statement month. */
  const placed = async () =>
    (await pool.query(`select e.tableoid::regclass::text as part, to_char(e.created_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI') as at, e.entity_id
                         from audit_private.log_entries e join audit_private.tables t on t.id = e.table_id
                        where t.table_name = 'ledger' order by e.id`)).rows;

  beforeAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
    // A system that ran through January: migrated, premade, tracking a table, older months present, days sealed.
    await startAt("2027-01-31 23:40:00");
    await runMigrations(url);
    await pool.query(`select audit.create_partition(m::date) from generate_series('2026-11-01'::date, '2026-12-01', interval '1 month') m;
      select audit.ensure_partitions(3);
      create table public.ledger (id int primary key, amount numeric not null);
      select audit.enable_tracking('public.ledger');
      insert into public.ledger values (1, 10), (2, 20);`);
    await sealDays(pool, { store: fileStore(archiveDir), grace: "1 hour" });
    await stop();
  });
  afterAll(async () => {
    await stop();
    await rm(dataDir, { recursive: true, force: true });
    await rm(archiveDir, { recursive: true, force: true });
  });

  test("the open transaction's rows land in January; January is then sealed, summarised, archived and restored whole; doctor is green at 00:00", async () => {
    // Seconds before midnight: a transaction writes in January and is still open when February begins.
    await startAt("2027-01-31 23:59:50");
    const open = await pool.connect();
    try {
      await open.query("begin");
      await open.query(`update public.ledger set amount = amount + 1 where id = 1; insert into public.ledger values (3, 30)`);
      const { rows: [{ started }] } = await open.query(`select to_char(statement_timestamp() at time zone 'UTC', 'YYYY-MM-DD') as started`);
      expect(started).toBe("2027-01-31"); // else this machine took over 10 s to start a server: the test is not valid

      // Wait (by the server's clock) for February.
      for (let i = 0; ; i++) {
        const { now } = await one<{ now: string }>(`select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as now`);
        if (now >= "2027-02-01 00:00:01") break;
        if (i > 200) throw new Error(`the server clock did not reach February (at ${now})`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await pool.query(`insert into public.ledger values (4, 40)`);
      // January 31 cannot be sealed while a transaction that began on it is open.
      const sealable = async () => (await pool.query(`select to_char(d, 'YYYY-MM-DD') as d from audit.sealable_days('0') d`)).rows.map((r) => r.d);
      expect(await sealable()).toEqual([]);
      await open.query("commit");
      expect(await sealable()).toEqual(["2027-01-31"]);
    } finally {
      open.release();
    }

    // Every row in the partition of its statement's month; nothing in the default partition.
    expect(await placed()).toEqual([
      { part: "audit.log_2027_01", at: "2027-01-31 23:40", entity_id: "1" },
      { part: "audit.log_2027_01", at: "2027-01-31 23:40", entity_id: "2" },
      { part: "audit.log_2027_01", at: "2027-01-31 23:59", entity_id: "1" },
      { part: "audit.log_2027_01", at: "2027-01-31 23:59", entity_id: "3" },
      { part: "audit.log_2027_02", at: "2027-02-01 00:00", entity_id: "4" },
    ]);
    expect(await one(`select count(*)::int as n from audit.log_default`)).toEqual({ n: 0 });

    // doctor, run by a CLI whose clock reads the same instant: green in the first minute of February.
    const { now } = await one<{ now: string }>(`select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') as now`);
    const doctor = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), "doctor", "--json"], {
      env: { ...process.env, ...clockAt(library!, now), DATABASE_URL: url, AUDIT_ARCHIVE_DIR: archiveDir, NODE_OPTIONS: "" },
    }).catch((error: { code: number; stdout: string }) => error);
    expect(JSON.parse(doctor.stdout)).toEqual([]);

    // January 31 sealed with the late transaction's rows; the chain verifies.
    const sealed = await sealDays(pool, { store: fileStore(archiveDir), grace: "0" });
    expect(sealed.map((s) => [s.day, s.rows])).toEqual([["2027-01-31", 4]]);
    expect((await verifySeals(pool, { store: fileStore(archiveDir) })).problems).toEqual([]);

    // Summarised: the finished day counts both January transactions.
    await pool.query(`select audit.summarize_activity()`);
    expect((await pool.query(`select day::text, action, changes::int from audit.activity_daily
                                where entity_name = 'ledger' order by day, action`)).rows).toEqual([
      { day: "2027-01-31", action: "INSERT", changes: 3 },
      { day: "2027-01-31", action: "UPDATE", changes: 1 },
      { day: "2027-02-01", action: "INSERT", changes: 1 },
    ]);

    // Archived and restored whole.
    const digest = () => one<{ md5: string }>(`select md5(string_agg(e::text, ',' order by id)) as md5 from audit_private.log_entries e
                                                  where created_at >= '2027-01-01' and created_at < '2027-02-01'`);
    const before = await digest();
    expect(await archiveMonth(pool, "2027-01-01", { store: fileStore(archiveDir) })).toMatchObject({ month: "2027-01", rows: 4, status: "archived" });
    expect(await restoreMonth(pool, "2027-01-01", { store: fileStore(archiveDir) })).toMatchObject({ rows: 4 });
    expect(await digest()).toEqual(before);
  });

  test("archive cut-offs name the right months on the last day of a month and on the first", async () => {
    await stop();
    await startAt("2027-01-31 12:00:00");
    expect(await archivable(1)).toEqual(["2026-11"]);
    expect(await archivable(0)).toEqual(["2026-11", "2026-12"]);
    await stop();
    await startAt("2027-02-01 00:00:30");
    expect(await archivable(1)).toEqual(["2026-11", "2026-12"]);
    expect(await archivable(0)).toEqual(["2026-11", "2026-12", "2027-01"]);
    await stop();
    await startAt("2027-03-31 23:59:00");
    expect(await archivable(2)).toEqual(["2026-11", "2026-12"]);
  });
});
