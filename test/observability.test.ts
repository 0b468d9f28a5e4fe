// /metrics moves when its causes happen, and the structured log carries request ids but never secrets.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { Logger as WorkerLogger, quickAddJob, runOnce } from "graphile-worker";
import jwt from "jsonwebtoken";
import pg from "pg";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { projectRoot } from "../src/db/sourceSql.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics } from "../src/metrics.ts";
import { makeTasks } from "../src/worker/tasks.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";
import { fileStore } from "../src/archive/store.ts";

const SECRET = "observability-secret-0123456789-abcdef";
const METRICS_TOKEN = "scrape-token-42";
let db: TestDatabase;
let api: RunningServer;
let dir: string;
const logLines: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-observability-test-"));
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      callback();
    },
  });
  api = await startServer({
    databaseUrl: db.url,
    config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000, metricsToken: METRICS_TOKEN },
    logger: createLogger("debug", sink),
  });
  await db.pool.query(`create table public.metered (id int primary key, v text); select audit.enable_tracking('public.metered')`);
});
afterAll(async () => {
  await api?.close();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function scrape(): Promise<string> {
  const response = await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return response.text();
}

/** The value of one series, e.g. value(text, 'cartop_audit_rows_written_total{table="public.metered",action="INSERT"}'); 0 if absent. */
function value(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

async function runTask(task: string, archiveDir = dir): Promise<void> {
  await quickAddJob({ pgPool: db.pool }, task, {}, { maxAttempts: 3 });
  await runOnce({
    pgPool: db.pool,
    taskList: makeTasks(db.pool, { premakeMonths: 1, retentionMonths: 12, store: fileStore(archiveDir) }),
    logger: new WorkerLogger(() => () => {}),
  });
}

async function graphql(query: string, headers: Record<string, string> = {}, variables: Record<string, unknown> = {}) {
  const response = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json", ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, body: await response.json() as { data?: any; errors?: { message: string }[] } };
}

describe("GET /metrics", () => {
  test("needs the METRICS_TOKEN when one is set", async () => {
    expect((await fetch(`${api.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${api.url}/metrics`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
  });

  test("audit rows written rise with writes, by table and action, are never counted twice, and survive the daily summary", async () => {
    const inserts = 'cartop_audit_rows_written_total{table="public.metered",action="INSERT"}';
    const updates = 'cartop_audit_rows_written_total{table="public.metered",action="UPDATE"}';
    const deletes = 'cartop_audit_rows_written_total{table="public.metered",action="DELETE"}';
    // Rows written yesterday (before this server's first scrape), in yesterday's month (on the 1st, the last one).
    await db.pool.query(`select audit.create_partition(date_trunc('month', now() - interval '1 day')::date)`);
    await db.pool.query(`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      select now() - interval '1 day', 1, (select id from audit_private.tables where table_name = 'metered'), 'D', g::text, '{}', 'app'
      from generate_series(100, 102) g`);
    const before = await scrape();
    expect(value(before, deletes)).toBe(3);
    await db.pool.query(`insert into public.metered select g, 'x' from generate_series(1, 5) g`);
    await db.pool.query(`update public.metered set v = 'y' where id <= 2`);
    const after = await scrape();
    expect(value(after, inserts) - value(before, inserts)).toBe(5);
    expect(value(after, updates) - value(before, updates)).toBe(2);
    expect(after).toMatch(/^# TYPE cartop_audit_rows_written_total counter$/m);
    // Scraping again counts nothing twice; summarising the finished day moves counts, not totals.
    const again = await scrape();
    const summarised = (await db.pool.query(`select audit.summarize_activity()`), await scrape());
    for (const text of [again, summarised]) {
      expect([inserts, updates, deletes].map((s) => value(text, s))).toEqual([inserts, updates, deletes].map((s) => value(after, s)));
    }
  });

  test("concurrent scrapes are served one at a time and agree", async () => {
    const fresh = createMetrics(db.pool, [], createLogger("silent"));
    const series = 'cartop_audit_rows_written_total{table="public.metered",action="DELETE"}';
    const texts = await Promise.all([fresh.render(), fresh.render(), fresh.render()]);
    expect(texts.map((t) => value(t, series))).toEqual([3, 3, 3]);
  });

  test("with the database unreachable, /metrics still answers and says so", async () => {
    const unreachable = new pg.Pool({ connectionString: "postgres://nobody@127.0.0.1:1/none", connectionTimeoutMillis: 2000 });
    try {
      const text = await createMetrics(unreachable, [], createLogger("silent")).render();
      expect(value(text, "cartop_audit_database_up")).toBe(0);
      expect(text).toContain("# TYPE process_cpu_seconds_total counter");
    } finally {
      await unreachable.end();
    }
  });

  test("rows in the default partition and missing months show in the partition gauges", async () => {
    const before = await scrape();
    expect(value(before, "cartop_audit_default_partition_rows")).toBe(0);
    expect(value(before, "cartop_audit_partition_months_ahead")).toBeGreaterThanOrEqual(1);
    expect(value(before, 'cartop_audit_partition_bytes{partition="log_default"}')).toBeGreaterThan(0);
    await db.pool.query(`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
      select '2045-06-01'::timestamptz, 1, 1, 'I', g::text, '{}', 'app' from generate_series(1, 4) g`);
    expect(value(await scrape(), "cartop_audit_default_partition_rows")).toBe(4);
    await db.pool.query(`select audit.drain_default_partition()`);
    const drained = await scrape();
    expect(value(drained, "cartop_audit_default_partition_rows")).toBe(0);
    expect(value(drained, "cartop_audit_partitions")).toBe(value(before, "cartop_audit_partitions") + 1);
  });

  test("a failed archive run raises the failure counter and shows as a failing job; a good run sets the last success", async () => {
    const failures = 'cartop_audit_task_runs_total{task="audit__archive_partitions",outcome="failure"}';
    const before = await scrape();
    expect(before).toContain(`${failures} 0`); // there before the first failure, so increase() sees it
    // The archive directory is a file: the run fails when it tries to write.
    const notADirectory = path.join(dir, "not-a-directory");
    await writeFile(notADirectory, "");
    await db.pool.query(`select audit.create_partition((audit_private.current_month() - interval '14 months')::date)`);
    await runTask("audit__archive_partitions", notADirectory);
    const failed = await scrape();
    expect(value(failed, failures) - value(before, failures)).toBe(1);
    expect(value(failed, 'cartop_audit_worker_jobs{state="failing"}')).toBe(1);
    const { rows } = await db.pool.query(`select succeeded, error from audit.task_runs where task = 'audit__archive_partitions'`);
    expect(rows).toEqual([{ succeeded: false, error: expect.stringMatching(/ENOTDIR|EEXIST|not a directory/) }]);

    await db.pool.query(`delete from graphile_worker._private_jobs`);
    await runTask("audit__archive_partitions");
    const succeeded = await scrape();
    expect(value(succeeded, 'cartop_audit_task_runs_total{task="audit__archive_partitions",outcome="success"}')).toBe(1);
    expect(value(succeeded, 'cartop_audit_task_last_success_timestamp_seconds{task="audit__archive_partitions"}'))
      .toBeGreaterThan(Date.now() / 1000 - 60);
    expect(value(succeeded, 'cartop_audit_archived_months{status="archived"}')).toBe(1);
    expect(value(succeeded, 'cartop_audit_worker_jobs{state="failing"}')).toBe(0);
    // That run sealed every finished day first (in the first hour after midnight, yesterday waits: the grace period).
    const inGrace = new Date().getUTCHours() === 0;
    expect(value(succeeded, "cartop_audit_unsealed_days")).toBe(inGrace ? 1 : 0);
    expect(value(succeeded, "cartop_audit_last_sealed_day_timestamp_seconds"))
      .toBe(Date.parse(`${new Date(Date.now() - (inGrace ? 2 : 1) * 86_400_000).toISOString().slice(0, 10)}T00:00:00Z`) / 1000);
  });

  test("the worker's coverage check is exposed: a dropped capture trigger shows until it is repaired", async () => {
    const missing = 'cartop_audit_coverage_problems{check="capture_trigger_missing"}';
    await runTask("audit__check_coverage");
    const clean = await scrape();
    expect(value(clean, missing)).toBe(0);
    expect(clean).toContain(missing); // present with 0, so an alert can tell "checked, fine" from "never checked"
    expect(value(clean, "cartop_audit_coverage_checked_timestamp_seconds")).toBeGreaterThan(Date.now() / 1000 - 60);
    // A superuser in replica mode (no event triggers) drops it: nothing puts it back.
    await db.pool.query(`set session_replication_role = replica; drop trigger _900_audit_delete on public.metered; reset session_replication_role`);
    await runTask("audit__check_coverage");
    expect(value(await scrape(), missing)).toBe(1);
    await db.pool.query(`select audit.enable_tracking('public.metered')`);
    await runTask("audit__check_coverage");
    expect(value(await scrape(), missing)).toBe(0);
  });

  test("GraphQL requests are timed, errors counted by kind, and pool use is shown", async () => {
    const requests = 'cartop_audit_http_request_duration_seconds_count{route="/graphql",method="POST",status="200"}';
    const before = await scrape();
    expect((await graphql(`{ products { totalCount } }`)).status).toBe(200);
    expect((await graphql(`{ noSuchField }`)).body.errors).toHaveLength(1);
    const after = await scrape();
    expect(value(after, requests) - value(before, requests)).toBe(2);
    expect(value(after, 'cartop_audit_graphql_errors_total{kind="request"}') - value(before, 'cartop_audit_graphql_errors_total{kind="request"}')).toBe(1);
    // The API pool's gauges are there (how many connections are open depends on the pool's idle timeout, 10 s,
    // which a slow scrape on a loaded machine can pass).
    for (const state of ["total", "idle", "waiting"]) {
      expect(after).toMatch(new RegExp(`^cartop_audit_db_pool_connections\\{pool="api",state="${state}"\\} \\d+$`, "m"));
    }
    expect(value(after, "cartop_audit_database_up")).toBe(1);
  });

  test("malformed, too deep, too costly and non-JSON documents count under route /graphql and as request errors", async () => {
    const requestErrors = 'cartop_audit_graphql_errors_total{kind="request"}';
    const refused = 'cartop_audit_http_request_duration_seconds_count{route="/graphql",method="POST",status="400"}';
    const before = await scrape();
    const deep = `{ ${"query { ".repeat(13)}__typename${" }".repeat(13)} }`;
    expect((await graphql(`{ products { totalCount }`)).status).toBe(400);
    expect((await graphql(deep)).status).toBe(400);
    expect((await graphql(`{ products { nodes { name } } }`)).status).toBe(400);
    const notJson = await fetch(`${api.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
    expect(notJson.status).toBe(400);
    const after = await scrape();
    expect(value(after, refused) - value(before, refused)).toBe(4);
    expect(value(after, requestErrors) - value(before, requestErrors)).toBe(4);
    expect(value(after, 'cartop_audit_http_request_duration_seconds_count{route="other",method="POST",status="400"}')).toBe(0);
  });

  test("/metrics is rate-limited per client", async () => {
    const limited = await startServer({ databaseUrl: db.url, config: { port: 0, jwtSecret: undefined, trustProxy: false, rateLimitPerMinute: 10_000 },
      metricsScrapesPerWindow: 2, rateLimitWindowMs: 60_000 });
    try {
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(`${limited.url}/metrics`)).status);
      expect(statuses).toEqual([200, 200, 429]);
    } finally {
      await limited.close();
    }
  });

  test("the example alert rules are well-formed, and every metric they use is one /metrics exposes", async () => {
    const rules = readFileSync(path.join(projectRoot, "ops/prometheus-alerts.yml"), "utf8");
    const parsed = parseYaml(rules) as { groups: { name: string; rules: Record<string, any>[] }[] };
    const alerts = parsed.groups.flatMap((g) => g.rules);
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    for (const rule of alerts) {
      expect(rule).toMatchObject({ alert: expect.stringMatching(/^CartopAudit\w+$/), expr: expect.any(String),
        labels: { severity: expect.stringMatching(/^(critical|warning)$/) }, annotations: { summary: expect.any(String) } });
    }
    const used = new Set([...rules.matchAll(/\b(cartop_audit_\w+?)(?:_bucket|_count|_sum)?\b/g)].map((m) => m[1]!));
    const exposed = await scrape();
    expect(used.size).toBeGreaterThanOrEqual(8);
    for (const name of used) expect({ name, exposed: exposed.includes(`# TYPE ${name} `) }).toEqual({ name, exposed: true });
  });
});

describe("structured logs", () => {
  test("every line logged for a request carries its request id, and no token or password appears anywhere", async () => {
    const password = "hunter2-Do-Not-Log-Me";
    const token = jwt.sign({ sub: "logger-id", role: "admin" }, SECRET, { algorithm: "HS256", expiresIn: "5m" });
    const forged = jwt.sign({ sub: "mallory", role: "auditor" }, "not-the-secret", { algorithm: "HS256" });
    const from = logLines.length;
    const created = await graphql(
      `mutation($input: CreateUserInput!) { createUser(input: $input) { result { rowId } } }`,
      { authorization: `Bearer ${token}`, "x-request-id": "trace-me-123" },
      { input: { email: "logged@example.com", password } });
    expect(created.body.errors).toBeUndefined();
    expect((await graphql(`{ __typename }`, { authorization: `Bearer ${forged}`, "x-request-id": "trace-me-401" })).status).toBe(401);
    // A database rejection: the same email again (unique constraint).
    await graphql(`mutation($input: CreateUserInput!) { createUser(input: $input) { result { rowId } } }`,
      { authorization: `Bearer ${token}`, "x-request-id": "trace-me-dup" }, { input: { email: "logged@example.com", password } });

    const lines = logLines.slice(from).map((line) => JSON.parse(line) as Record<string, any>);
    const of = (id: string) => lines.filter((l) => l.requestId === id);
    expect(of("trace-me-123")).toEqual([expect.objectContaining({
      level: "info", msg: "request completed", req: { method: "POST", path: "/graphql", remoteAddress: expect.any(String) }, res: { statusCode: 200 },
    })]);
    expect(of("trace-me-401")).toEqual([expect.objectContaining({ level: "warn", res: { statusCode: 401 } })]);
    expect(of("trace-me-dup").map((l) => l.msg)).toEqual(["GraphQL error returned to the client", "request completed"]);
    // Nothing logged during these requests lacks its request id.
    expect(lines.filter((l) => !l.requestId)).toEqual([]);
    const everything = logLines.join("\n");
    for (const secret of [token, forged, password, SECRET, METRICS_TOKEN]) expect(everything).not.toContain(secret);
  });

  test("LOG_LEVEL is validated", async () => {
    const { readConfig } = await import("../src/config.ts");
    expect(readConfig({ LOG_LEVEL: "WARN" }).logLevel).toBe("warn");
    expect(() => readConfig({ LOG_LEVEL: "loud" })).toThrow('LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"');
  });
});
