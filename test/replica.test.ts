// Audit reads on a real streaming standby (DATABASE_READ_URL). The test makes its own PostgreSQL 15 primary
// (initdb, as the postgres OS user) and a standby of it (pg_basebackup -R), on the first free ports from 56100, whichever
// server the rest of the suite runs against: the suite's server need not allow replication connections.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { appendFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import jwt from "jsonwebtoken";
import pg from "pg";
import { freePort } from "../src/db/embedded.ts";
import { runMigrations } from "../src/db/migrate.ts";
import { retryOnPrimary } from "../src/graphql/readRouting.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";

const exec = promisify(execFile);
const BIN = "/usr/lib/postgresql/15/bin";
// The first free ports from 56100: two suite runs (or anything else) on one machine do not collide.
const PRIMARY_PORT = await freePort(56100);
const STANDBY_PORT = await freePort(PRIMARY_PORT + 1);
const SECRET = "replica-test-secret-0123456789abcdef";
const primaryUrl = `postgres://postgres@127.0.0.1:${PRIMARY_PORT}/cartop_replica`;
const standbyUrl = `postgres://postgres@127.0.0.1:${STANDBY_PORT}/cartop_replica`;

let base: string;
let primary: pg.Pool;
let standby: pg.Pool;
/** Tolerates any lag: its reads reach the standby even while replay is paused. */
let tolerant: RunningServer;
/** Falls back to the primary once the standby is more than a second behind. */
let strict: RunningServer;

/** Runs a PostgreSQL binary as the postgres OS user (the server refuses to run as root). */
async function pgBin(name: string, args: string[]): Promise<string> {
  const asPostgres = process.getuid?.() === 0 ? ["runuser", "-u", "postgres", "--"] : [];
  const [command, ...rest] = [...asPostgres, path.join(BIN, name), ...args];
  return (await exec(command!, rest, { cwd: "/tmp" })).stdout;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** The standby has replayed everything the primary has written. */
const caughtUp = async () => {
  const { rows: [p] } = await primary.query("select pg_current_wal_lsn()::text as lsn");
  const { rows: [s] } = await standby.query("select pg_last_wal_replay_lsn() >= $1::pg_lsn as ok", [p.lsn]);
  return s.ok === true;
};

// pg_basebackup is not in the embedded server's package: on a machine with only Node and npm there is no
// standby to make, and this file is skipped with a note (CI's machine has PostgreSQL 15).
const standbyPossible = existsSync(path.join(BIN, "pg_basebackup"));
if (!standbyPossible) process.stderr.write(`test/replica.test.ts: no ${BIN}/pg_basebackup (Debian: apt-get install postgresql-15): standby tests not run\n`);

beforeAll(async () => {
  if (!standbyPossible) return;
  base = await mkdtemp(path.join(os.tmpdir(), "cartop-replica-test-"));
  if (process.getuid?.() === 0) await exec("chown", ["postgres", base]);
  const [primaryDir, standbyDir] = [path.join(base, "primary"), path.join(base, "standby")];
  await pgBin("initdb", ["-D", primaryDir, "-U", "postgres", "-A", "trust", "--no-sync"]); // allows replication from 127.0.0.1
  const common = `listen_addresses = '127.0.0.1'\nunix_socket_directories = '${base}'\nfsync = off\n`;
  await appendFile(path.join(primaryDir, "postgresql.conf"), `${common}port = ${PRIMARY_PORT}\nwal_level = replica\nmax_wal_senders = 4\n`);
  await pgBin("pg_ctl", ["-D", primaryDir, "-l", path.join(base, "primary.log"), "-w", "start"]);
  const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${PRIMARY_PORT}/postgres` });
  await admin.connect();
  await admin.query("create database cartop_replica");
  await admin.end();
  await runMigrations(primaryUrl);

  await pgBin("pg_basebackup", ["-h", "127.0.0.1", "-p", String(PRIMARY_PORT), "-U", "postgres", "-D", standbyDir, "-R", "-X", "stream"]);
  // A short max_standby_streaming_delay, so that the recovery-conflict test does not wait 30 s; no feedback
  // (the default), so that the primary's vacuum does conflict with the standby's long read.
  await appendFile(path.join(standbyDir, "postgresql.conf"),
    `port = ${STANDBY_PORT}\nhot_standby = on\nmax_standby_streaming_delay = '2s'\nhot_standby_feedback = off\n`);
  await pgBin("pg_ctl", ["-D", standbyDir, "-l", path.join(base, "standby.log"), "-w", "start"]);

  primary = new pg.Pool({ connectionString: primaryUrl, max: 4 });
  standby = new pg.Pool({ connectionString: standbyUrl, max: 4 });
  for (const pool of [primary, standby]) pool.on("error", () => {});
  await until("the standby is streaming", async () => (await standby.query("select pg_is_in_recovery() as r")).rows[0].r === true);
  const config = { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000 };
  tolerant = await startServer({ databaseUrl: primaryUrl, readUrl: standbyUrl, readMaxLagSeconds: 1_000_000, config });
  strict = await startServer({ databaseUrl: primaryUrl, readUrl: standbyUrl, readMaxLagSeconds: 1, config });
}, 300_000);

afterAll(async () => {
  await Promise.all([tolerant?.close(), strict?.close()]);
  await Promise.all([primary?.end(), standby?.end()]);
  for (const dir of ["standby", "primary"]) {
    if (base && existsSync(path.join(base, dir, "postmaster.pid"))) await pgBin("pg_ctl", ["-D", path.join(base, dir), "-m", "immediate", "stop"]).catch(() => {});
  }
  if (base) await rm(base, { recursive: true, force: true });
});

const token = (sub: string, role: "user" | "auditor") => jwt.sign({ sub, role }, SECRET, { expiresIn: "1h" });

async function gql(api: RunningServer, query: string, bearer?: string) {
  const response = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify({ query }),
  });
  const body = await response.json() as { data?: Record<string, { totalCount?: number } | null>; errors?: { message: string }[] };
  return { status: response.status, source: response.headers.get("x-read-source"), body };
}

const productRows = (api: RunningServer, bearer: string) =>
  gql(api, `{ auditLogs(filter: { entityName: { equalTo: "products" } }) { totalCount } }`, bearer);

// In CI (whose machine has PostgreSQL 15's binaries) missing binaries fail the file rather than skip it.
(standbyPossible || process.env.CI ? describe : describe.skip)("audit reads on a streaming standby", () => {
  test("trail queries read the standby, mutations write the primary, and row-level security holds there too", async () => {
    const created = await gql(tolerant, `mutation { createProduct(input: { product: { name: "Lamp", price: "5" } }) { product { rowId } } }`, token("u-1", "user"));
    expect(created.body.errors).toBeUndefined();
    expect(created.source).toBe("primary");
    await gql(tolerant, `mutation { createProduct(input: { product: { name: "Desk", price: "50" } }) { product { rowId } } }`, token("u-2", "user"));
    await until("the standby has the writes", caughtUp);

    // The auditor sees both rows, a user only their own: the same role and audit.user_id on the standby.
    const auditor = await productRows(tolerant, token("a-1", "auditor"));
    expect(auditor).toMatchObject({ status: 200, source: "replica", body: { data: { auditLogs: { totalCount: 2 } } } });
    const user = await productRows(tolerant, token("u-1", "user"));
    expect(user).toMatchObject({ status: 200, source: "replica", body: { data: { auditLogs: { totalCount: 1 } } } });
    const history = await gql(tolerant, `{ userActivity(userId: "u-2") { totalCount } }`, token("a-1", "auditor"));
    expect(history).toMatchObject({ source: "replica", body: { data: { userActivity: { totalCount: 1 } } } });
    // Not only the trail: the primary.
    expect((await gql(tolerant, `{ products { totalCount } auditLogs { totalCount } }`, token("a-1", "auditor"))).source).toBe("primary");
  });

  test("a standby behind by more than DATABASE_READ_MAX_LAG_SECONDS is skipped: reads come from the primary", async () => {
    await standby.query("select pg_wal_replay_pause()");
    try {
      await gql(tolerant, `mutation { createProduct(input: { product: { name: "Chair", price: "20" } }) { product { rowId } } }`, token("u-1", "user"));
      // The tolerant server still reads the paused standby, which has not seen the new row: proof of where it reads.
      expect(await productRows(tolerant, token("a-1", "auditor")))
        .toMatchObject({ source: "replica", body: { data: { auditLogs: { totalCount: 2 } } } });
      // The strict one, once the standby is more than a second behind, reads the primary and sees it.
      await until("the standby is over a second behind", async () => (await productRows(strict, token("a-1", "auditor"))).source === "primary");
      expect(await productRows(strict, token("a-1", "auditor")))
        .toMatchObject({ status: 200, source: "primary", body: { data: { auditLogs: { totalCount: 3 } } } });
    } finally {
      await standby.query("select pg_wal_replay_resume()");
    }
    await until("the standby has caught up", caughtUp);
    await until("the strict server uses the standby again", async () => (await productRows(strict, token("a-1", "auditor"))).source === "replica");
    expect(await productRows(strict, token("a-1", "auditor"))).toMatchObject({ body: { data: { auditLogs: { totalCount: 3 } } } });
  });

  test("/metrics reads the trail counters from the standby and agrees with the primary", async () => {
    const scrape = async (api: RunningServer) => (await (await fetch(`${api.url}/metrics`)).text())
      .split("\n").filter((line) => /^cartop_audit_(rows_written_total\{|read_replica_(usable|lag_seconds) )/.test(line));
    const lines = await scrape(tolerant);
    expect(lines.slice(0, 2)).toEqual([
      `cartop_audit_rows_written_total{table="app.products",action="INSERT"} 3`,
      "cartop_audit_read_replica_usable 1",
    ]);
    // Each request's rate-limit upsert moves the primary on, so the lag is 0 or the few milliseconds since.
    expect(lines[2]).toMatch(/^cartop_audit_read_replica_lag_seconds \d+(\.\d+)?(e-\d+)?$/);
  });

  test("a long read on the standby is cancelled by a recovery conflict (40001) when the primary vacuums, and is one the API retries on the primary", async () => {
    await primary.query(`create table public.churn (id int primary key, v text); insert into public.churn select g, 'x' from generate_series(1, 1000) g`);
    await until("the standby has the table", caughtUp);
    // An analyst's long query on the standby: its snapshot predates the delete below.
    const long = standby.query(`select count(*), pg_sleep(30) from audit_private.log_entries`).then(() => null, (error: Error & { code?: string }) => error);
    await sleep(500);
    await primary.query(`delete from public.churn`);
    await primary.query(`vacuum public.churn`); // removes rows the standby's snapshot may still see
    const error = await long;
    expect(error?.code).toBe("40001");
    expect(error?.message).toBe("canceling statement due to conflict with recovery");
    expect(retryOnPrimary(error)).toBe(true);
  });

  test("a standby that goes down: trail reads fall back to the primary, without an error", async () => {
    await pgBin("pg_ctl", ["-D", path.join(base, "standby"), "-m", "immediate", "stop"]);
    const result = await productRows(tolerant, token("a-1", "auditor"));
    expect(result.status).toBe(200);
    expect(result.body).toEqual({ data: { auditLogs: { totalCount: 3 } } });
    expect(result.source).toMatch(/^primary/);
  });
});
