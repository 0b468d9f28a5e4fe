// Two API instances and two workers against one database: one shared rate limit, no task running twice at
// once (start-up jobs and backfilled cron ticks included), seals and archives that do not race, and the same
// trail-derived metrics from either instance.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Logger, type JobHelpers } from "graphile-worker";
import pg from "pg";
import { readConfig } from "../src/config.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createLogger } from "../src/log.ts";
import { verifySeals } from "../src/seals/seals.ts";
import { makeTasks } from "../src/worker/tasks.ts";
import { startWorker } from "../src/worker/worker.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

let db: TestDatabase;
let dir: string;
let apiA: RunningServer;
let apiB: RunningServer;

// Month starts relative to now (UTC): two months ago is archivable with a retention of one month.
const monthStart = (offset: number) => {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1)).toISOString().slice(0, 10);
};
const twoMonthsAgo = monthStart(-2);
const lastMonth = monthStart(-1);
const ROWS_PER_DAY = 3;
const DAYS = 5;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-instances-test-"));
  await db.pool.query(`create table public.orders (id int primary key); select audit.enable_tracking('public.orders')`);
  await db.pool.query(`select audit.create_partition($1::date), audit.create_partition($2::date)`, [twoMonthsAgo, lastMonth]);
  // Rows on five days of each month, as the capture triggers would have stored them.
  await db.pool.query(`
    insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
    select m + make_interval(days => d, hours => g), 1000 + g, t.id, 'I', (d * 10 + g)::text, jsonb_build_object('id', d * 10 + g), 'app'
    from audit_private.tables t, unnest(array[$1, $2]::date[]) m, generate_series(1, $3::int) d, generate_series(1, $4::int) g
    where t.schema_name = 'public' and t.table_name = 'orders'`, [twoMonthsAgo, lastMonth, DAYS, ROWS_PER_DAY]);
  const config = { port: 0, jwtSecret: undefined, trustProxy: false, rateLimitPerMinute: 4 };
  [apiA, apiB] = await Promise.all([startServer({ databaseUrl: db.url, config }), startServer({ databaseUrl: db.url, config })]);
});
afterAll(async () => {
  await Promise.all([apiA?.close(), apiB?.close()]);
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function gql(api: RunningServer) {
  const response = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ query: "{ products { totalCount } }" }),
  });
  return { status: response.status, retryAfter: response.headers.get("retry-after"), body: await response.json() as { errors?: { message: string }[] } };
}

const quietHelpers = { logger: new Logger(() => () => {}) } as unknown as JobHelpers;

describe("two API instances", () => {
  test("share one rate limit: requests to A and B count together, the excess gets 429 with Retry-After", async () => {
    // Sent at once (all within one minute-long window), three to each instance; the limit is 4 per client.
    const responses = await Promise.all([apiA, apiB, apiA, apiB, apiA, apiB].map(gql));
    expect(responses.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 429, 429]);
    const refused = responses.filter((r) => r.status === 429);
    for (const r of refused) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(Number(r.retryAfter)).toBeLessThanOrEqual(60);
      expect(r.body.errors?.[0]?.message).toBe(`too many requests: at most 4 per 60 s; retry in ${r.retryAfter} s`);
    }
    const { rows } = await db.pool.query(`select key, hits from audit_private.rate_limits`);
    expect(rows).toEqual([{ key: "graphql:4/60000:127.0.0.1", hits: 6 }]);
  });
});

describe("two workers", () => {
  test("two seal runs and two archive runs at once leave one seal per day and one archive per month, without error", async () => {
    const config = { premakeMonths: 3, retentionMonths: 1, store: fileStore(dir) };
    const poolB = new pg.Pool({ connectionString: db.url, max: 4 });
    try {
      const a = makeTasks(db.pool, config);
      const b = makeTasks(poolB, config);
      await Promise.all([
        a.audit__seal_days({}, quietHelpers), b.audit__seal_days({}, quietHelpers),
        a.audit__archive_partitions({}, quietHelpers), b.audit__archive_partitions({}, quietHelpers),
      ]);
    } finally {
      await poolB.end();
    }
    const { rows: runs } = await db.pool.query(`select task, succeeded, error from audit.task_runs order by task, id`);
    expect(runs).toEqual([
      { task: "audit__archive_partitions", succeeded: true, error: null },
      { task: "audit__archive_partitions", succeeded: true, error: null },
      { task: "audit__seal_days", succeeded: true, error: null },
      { task: "audit__seal_days", succeeded: true, error: null },
    ]);
    // Every finished day from the oldest partition's first to yesterday, once, in one chain that verifies.
    const { rows: [seals] } = await db.pool.query(`
      select count(*)::int as seals, count(distinct day)::int as days, min(day)::text as first, max(day)::text as last,
             (((now() - interval '1 hour') at time zone 'UTC')::date - 1)::text as last_sealable from audit.seals`);
    // The last finished day past the hour of grace (in the first hour after midnight, the day before it).
    expect(seals).toEqual({ seals: seals.days, days: seals.days, first: twoMonthsAgo, last: seals.last_sealable, last_sealable: seals.last_sealable });
    expect(await verifySeals(db.pool, { store: fileStore(dir) })).toMatchObject({ problems: [], firstBadDay: null, sealedDays: seals.days });
    const sealLines = (await Promise.all((await readdir(path.join(dir, "seals"))).map((f) => readFile(path.join(dir, "seals", f), "utf8"))))
      .flatMap((text) => text.split("\n").filter(Boolean));
    expect(sealLines.length).toBe(seals.days);
    // The month two months ago archived once; last month stays.
    const { rows: archives } = await db.pool.query(`select month::text, status, rows::int from audit.archives`);
    expect(archives).toEqual([{ month: twoMonthsAgo, status: "archived", rows: DAYS * ROWS_PER_DAY }]);
    expect((await readdir(dir)).filter((f) => f !== "seals").sort())
      .toEqual([`audit-${twoMonthsAgo.slice(0, 7)}.copy.gz`, `audit-${twoMonthsAgo.slice(0, 7)}.manifest.json`, "parquet"]);
    expect(existsSync(path.join(dir, `audit-${twoMonthsAgo.slice(0, 7)}.copy.gz.partial`))).toBe(false);
  });

  test("/metrics on either API instance reports the same trail counters", async () => {
    const scrape = async (api: RunningServer) => {
      const text = await (await fetch(`${api.url}/metrics`)).text();
      return text.split("\n").filter((line) => /^cartop_audit_(rows_written_total|partitions|archived_months|task_runs_total|task_last_success_timestamp_seconds|last_sealed_day_timestamp_seconds|unsealed_days|default_partition_rows)\b/.test(line));
    };
    const [a, b] = [await scrape(apiA), await scrape(apiB)];
    expect(a).toEqual(b);
    // And they are right: every row written, the archived month's included (it counts through the summary).
    expect(a).toContain(`cartop_audit_rows_written_total{table="public.orders",action="INSERT"} ${2 * DAYS * ROWS_PER_DAY}`);
    expect(a).toContain(`cartop_audit_archived_months{status="archived"} 1`);
    expect(a).toContain(`cartop_audit_task_runs_total{task="audit__archive_partitions",outcome="success"} 2`);
  });

  test("two workers never run the same task at once, with start-up jobs and backfilled cron ticks from both", async () => {
    const fresh = await createTestDatabase();
    const freshDir = await mkdtemp(path.join(os.tmpdir(), "cartop-instances-workers-"));
    const config = { ...readConfig({ AUDIT_ARCHIVE_DIR: freshDir }), retentionMonths: 1 };
    const logger = createLogger("silent");
    try {
      await fresh.pool.query(`select audit.create_partition($1::date)`, [lastMonth]); // a month of days to seal
      const startBoth = () => Promise.all([startWorker(fresh.url, config, logger), startWorker(fresh.url, config, logger)]);
      const settle = async () => {
        // Until no job is waiting or running (each worker adds its start-up jobs; cron may add backfills).
        for (let quiet = 0, i = 0; quiet < 5 && i < 600; i++) {
          await new Promise((resolve) => setTimeout(resolve, 200));
          const { rows: [jobs] } = await fresh.pool.query(`select count(*)::int as n from graphile_worker.jobs`);
          quiet = jobs.n === 0 ? quiet + 1 : 0;
        }
      };
      let workers = await startBoth();
      await settle();
      await Promise.all(workers.map((w) => w.stop()));
      // As if both had been down for two hours: each worker, starting, backfills the cron ticks it missed.
      await fresh.pool.query(`update graphile_worker._private_known_crontabs set last_execution = now() - interval '2 hours 30 minutes'`);
      workers = await startBoth();
      await settle();
      await Promise.all(workers.map((w) => w.stop()));

      const { rows: runs } = await fresh.pool.query<{ task: string; started_at: Date; finished_at: Date; succeeded: boolean }>(
        `select task, started_at, finished_at, succeeded from audit.task_runs order by task, started_at`);
      expect(runs.filter((r) => !r.succeeded)).toEqual([]);
      const tasks = new Set(runs.map((r) => r.task));
      // Start-up tasks, and the hourly ones whose ticks were backfilled.
      for (const task of ["audit__ensure_partitions", "audit__seal_days", "audit__check_coverage", "audit__summarize_activity"]) {
        expect(tasks).toContain(task);
      }
      const overlaps = runs.filter((run, i) => i > 0 && runs[i - 1]!.task === run.task && run.started_at < runs[i - 1]!.finished_at);
      expect(overlaps).toEqual([]);
      // Each day sealed once.
      const { rows: [seals] } = await fresh.pool.query(`select count(*)::int as n, count(distinct day)::int as days from audit.seals`);
      expect(seals.n).toBe(seals.days);
    } finally {
      await fresh.drop();
      await rm(freshDir, { recursive: true, force: true });
    }
  });
});
