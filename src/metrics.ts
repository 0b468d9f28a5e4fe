// Prometheus metrics for GET /metrics. Two kinds:
// - this process's own: HTTP/GraphQL latency and errors, database pool use, Node's process metrics;
// - the system's, read from the database at each scrape: audit rows written, partitions, archives,
//   seals, the worker's task runs, queue and last coverage check. The worker may run in another process;
//   what it did is in audit.task_runs, so one scrape of the API sees everything.
// Metric names are documented in docs/monitoring.md; ops/prometheus-alerts.yml alerts on the important ones.
import type pg from "pg";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ReadReplica } from "./db/readReplica.ts";
import type { Logger } from "./log.ts";
import { TASK_NAMES } from "./db/taskNames.ts";

const PREFIX = "cartop_audit_";

interface WatchedPool {
  name: string;
  pool: pg.Pool;
}

export interface Metrics {
  /** Observes one HTTP request (route is one of the known paths, or "other"). */
  observeRequest(route: string, method: string, status: number, seconds: number): void;
  /** Counts one GraphQL error by kind: "request" (invalid document), "rejected" (by the database), "internal". */
  countGraphqlError(kind: "request" | "rejected" | "internal"): void;
  /** Reads the database-derived values, then renders everything in the Prometheus text format. */
  render(): Promise<string>;
}

/** Every check of audit.coverage_problems (integrity/02_coverage.sql; test/doctor.test.ts plants each). */
export const COVERAGE_CHECKS = [
  "tracked_table_missing", "capture_trigger_missing", "capture_trigger_disabled", "capture_outdated", "foreign_capture_trigger",
  "partition_missing", "default_partition_rows", "seal_overdue",
] as const;

// Everything but the row counts, read from the database in one round trip.
const SYSTEM_SQL = `
select
  (select coalesce(jsonb_agg(jsonb_build_object('partition', partition_name, 'bytes', total_bytes, 'is_default', is_default,
            'range_start', range_start)), '[]') from audit.partitions) as partitions,
  (select count(*) from audit.log_default) as default_rows,
  (select coalesce(jsonb_object_agg(status, n), '{}') from (select status, count(*) as n from audit.archives group by 1) a) as archives,
  (select coalesce(jsonb_agg(jsonb_build_object('task', task, 'succeeded', succeeded, 'runs', runs, 'last', last)), '[]')
     from (select task, succeeded, count(*) as runs, extract(epoch from max(finished_at)) as last
             from audit.task_runs group by 1, 2) r) as task_runs,
  (select jsonb_build_object('at', extract(epoch from finished_at), 'result', result) from audit.task_runs
    where task = 'audit__check_coverage' and succeeded order by finished_at desc limit 1) as coverage,
  (select extract(epoch from max(day)::timestamp at time zone 'UTC') from audit.seals) as last_sealed_day,
  greatest((now() at time zone 'UTC')::date - audit_private.seal_chain_start(), 0) as unsealed_days,
  to_regclass('graphile_worker.jobs') is not null as worker_installed`;

const WORKER_JOBS_SQL = `
select count(*) filter (where locked_at is null and attempts = 0) as waiting,
       count(*) filter (where locked_at is not null) as locked,
       count(*) filter (where locked_at is null and attempts > 0 and attempts < max_attempts) as failing,
       count(*) filter (where attempts >= max_attempts) as dead
from graphile_worker.jobs`;

interface SystemRow {
  partitions: { partition: string; bytes: number; is_default: boolean; range_start: string | null }[];
  default_rows: string;
  archives: Record<string, number>;
  task_runs: { task: string; succeeded: boolean; runs: number; last: number }[];
  coverage: { at: number; result: { problems: { check_name: string }[] } } | null;
  last_sealed_day: string | null;
  unsealed_days: number;
  worker_installed: boolean;
}

/** Months with a partition after the current one, without a gap. */
function monthsAhead(partitions: SystemRow["partitions"], now = new Date()): number {
  const starts = new Set(partitions.filter((p) => !p.is_default && p.range_start).map((p) => new Date(p.range_start!).toISOString().slice(0, 7)));
  let ahead = 0;
  for (;;) {
    const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + ahead + 1, 1)).toISOString().slice(0, 7);
    if (!starts.has(month)) return ahead;
    ahead++;
  }
}

/**
 * With a read replica, the trail's own queries go there while it is usable; bookkeeping that must see the
 * primary's latest state (the summary's bounds, the settled counts) stays on `ownerPool`.
 */
export function createMetrics(ownerPool: pg.Pool, watched: WatchedPool[], logger: Logger, replica?: ReadReplica): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new Gauge({ name: PREFIX + name, help, labelNames, registers: [registry] });
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new Counter({ name: PREFIX + name, help, labelNames, registers: [registry] });

  const requestDuration = new Histogram({
    name: `${PREFIX}http_request_duration_seconds`,
    help: "HTTP request latency by route, method and status (route /graphql is the GraphQL API)",
    labelNames: ["route", "method", "status"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const graphqlErrors = counter("graphql_errors_total", "GraphQL errors returned, by kind: request (invalid document), rejected (by the database: permission, constraint), internal", ["kind"]);
  for (const kind of ["request", "rejected", "internal"]) graphqlErrors.inc({ kind }, 0);

  const poolConnections = gauge("db_pool_connections", "Database pool connections of this process by pool and state (total, idle, waiting clients)", ["pool", "state"]);
  const databaseUp = gauge("database_up", "1 if the last scrape could read the system metrics from the database, else 0");
  const rowsWritten = counter("rows_written_total", "Audit rows written, by audited table and action (INSERT, UPDATE, DELETE, TRUNCATE); archived months included", ["table", "action"]);
  const partitionCount = gauge("partitions", "Monthly partitions of the audit trail attached now (the default partition not counted)");
  const partitionMonthsAhead = gauge("partition_months_ahead", "Months after the current one that already have a partition (AUDIT_PREMAKE_MONTHS is the target)");
  const defaultRows = gauge("default_partition_rows", "Audit rows in the default partition (whose month had no partition); should be 0");
  const partitionBytes = gauge("partition_bytes", "Size of each partition, indexes included", ["partition"]);
  const archives = gauge("archived_months", "Months in audit.archives by status (archived, restored, or a step still in progress)", ["status"]);
  const taskRuns = counter("task_runs_total", "Runs of the worker's scheduled tasks by task and outcome (success, failure)", ["task", "outcome"]);
  const taskLastSuccess = gauge("task_last_success_timestamp_seconds", "When each worker task last succeeded (Unix time)", ["task"]);
  const coverageProblems = gauge("coverage_problems", "Problems the worker's last capture-coverage check found, by check (audit.coverage)", ["check"]);
  const coverageCheckedAt = gauge("coverage_checked_timestamp_seconds", "When the worker last ran the capture-coverage check (Unix time)");
  const lastSealedDay = gauge("last_sealed_day_timestamp_seconds", "Start of the last sealed UTC day (Unix time)");
  const unsealedDays = gauge("unsealed_days", "Finished UTC days not sealed yet (0 normally; 1 in the hour after midnight, before the day is sealed)");
  const replicaUsable = gauge("read_replica_usable", "1 if audit reads go to the read replica (DATABASE_READ_URL) now, 0 if they fall back to the primary (only with a replica)");
  const replicaLag = gauge("read_replica_lag_seconds", "How far the read replica is behind the primary, in seconds (only with a replica that answers)");
  const workerJobs = gauge("worker_jobs", "graphile-worker jobs by state: waiting, locked (running), failing (will retry), dead (out of attempts)", ["state"]);

  const rowCounts = rowsWrittenReader(ownerPool);
  let scraping: Promise<unknown> = Promise.resolve();

  async function readSystem(): Promise<void> {
    const replicaState = await replica?.state();
    if (replicaState) {
      replicaUsable.set(replicaState.usable ? 1 : 0);
      if (replicaState.lagSeconds !== null && Number.isFinite(replicaState.lagSeconds)) replicaLag.set(replicaState.lagSeconds);
    }
    const reader = replica && replicaState?.usable ? replica.pool : ownerPool;
    const { rows: [row] } = await reader.query<SystemRow>(SYSTEM_SQL);
    const system = row!;
    rowsWritten.reset();
    for (const r of await rowCounts.read(reader)) rowsWritten.inc({ table: r.table, action: r.action }, r.rows);
    const monthly = system.partitions.filter((p) => !p.is_default);
    partitionCount.set(monthly.length);
    partitionMonthsAhead.set(monthsAhead(system.partitions));
    defaultRows.set(Number(system.default_rows));
    partitionBytes.reset();
    for (const p of system.partitions) partitionBytes.set({ partition: p.partition }, Number(p.bytes));
    archives.reset();
    for (const [status, n] of Object.entries(system.archives)) archives.set({ status }, Number(n));
    taskRuns.reset();
    taskLastSuccess.reset();
    // Zeros first: an alert on increase() only sees a first failure if the series existed before it.
    for (const task of TASK_NAMES) for (const outcome of ["success", "failure"]) taskRuns.inc({ task, outcome }, 0);
    for (const t of system.task_runs) {
      taskRuns.inc({ task: t.task, outcome: t.succeeded ? "success" : "failure" }, Number(t.runs));
      if (t.succeeded) taskLastSuccess.set({ task: t.task }, Number(t.last));
    }
    coverageProblems.reset();
    if (system.coverage) {
      coverageCheckedAt.set(Number(system.coverage.at));
      for (const check of COVERAGE_CHECKS) coverageProblems.set({ check }, 0);
      for (const problem of system.coverage.result.problems) coverageProblems.inc({ check: problem.check_name });
    }
    if (system.last_sealed_day !== null) lastSealedDay.set(Number(system.last_sealed_day));
    unsealedDays.set(Number(system.unsealed_days));
    workerJobs.reset();
    if (system.worker_installed) {
      const { rows: [jobs] } = await reader.query<Record<string, string>>(WORKER_JOBS_SQL);
      for (const [state, n] of Object.entries(jobs!)) workerJobs.set({ state }, Number(n));
    }
  }

  return {
    observeRequest(route, method, status, seconds) {
      requestDuration.observe({ route, method, status: String(status) }, seconds);
    },
    countGraphqlError(kind) {
      graphqlErrors.inc({ kind });
    },
    render() {
      // One scrape at a time: a scrape resets and refills shared series, and adds to the running totals.
      const next = scraping.then(scrape, scrape);
      scraping = next.catch(() => {});
      return next;
    },
  };

  async function scrape(): Promise<string> {
    for (const { name, pool } of watched) {
      poolConnections.set({ pool: name, state: "total" }, pool.totalCount);
      poolConnections.set({ pool: name, state: "idle" }, pool.idleCount);
      poolConnections.set({ pool: name, state: "waiting" }, pool.waitingCount);
    }
    try {
      await readSystem();
      databaseUp.set(1);
    } catch (error) {
      logger.warn({ error: (error as Error).message }, "metrics: cannot read the system metrics from the database");
      databaseUp.set(0);
    }
    return registry.metrics();
  }
}

// ---- audit rows written, without recounting the day at every scrape ----

interface RowCount {
  table: string;
  action: string;
  rows: number;
}

/** Where the summary ends, and up to when the trail can no longer change (see rowsWrittenReader). */
const BOUNDS_SQL = `
select audit_private.activity_live_from() as live_from,
       least(now() - interval '5 minutes', audit_private.oldest_open_transaction_start()) as settled_until`;

const SUMMARY_COUNTS_SQL = `
select t.schema_name || '.' || t.table_name as table, audit_private.action_name(s.action) as action, sum(s.changes)::bigint as rows
from audit_private.activity_summary s join audit_private.tables t on t.id = s.table_id
group by 1, 2`;

const RANGE_COUNTS_SQL = `
select t.schema_name || '.' || t.table_name as table, audit_private.action_name(e.action) as action, count(*)::bigint as rows
from audit_private.log_entries e join audit_private.tables t on t.id = e.table_id
where e.created_at >= $1 and e.created_at < $2
group by 1, 2`;

/**
 * Rows written = the daily summary (audit.activity_daily's, which also keeps archived months) + the rows
 * after it. Counting every row after the summary at each scrape costs ~0.5 s per million, so this keeps
 * running totals: the summary's, re-read only when the summary moves on, and the rows up to the
 * "settled" instant — five minutes ago, or the start of the oldest open transaction if earlier (rows
 * stamped before it can no longer appear) — counted once, in increments. Only the rows after that instant
 * are counted at each scrape.
 */
function rowsWrittenReader(pool: pg.Pool) {
  let liveFrom: string | undefined;
  let summary = new Map<string, RowCount>();
  let settled = new Map<string, RowCount>();
  let settledUntil: Date | number | undefined;

  const query = async (sql: string, params: unknown[] = [], on: pg.Pool = pool) =>
    (await on.query<{ table: string; action: string; rows: string }>(sql, params)).rows
      .map((r) => ({ table: r.table, action: r.action, rows: Number(r.rows) }));
  const add = (into: Map<string, RowCount>, counts: RowCount[]) => {
    for (const c of counts) {
      const key = `${c.table}\u0000${c.action}`;
      const current = into.get(key);
      if (current) current.rows += c.rows;
      else into.set(key, { ...c });
    }
  };

  return {
    /** `tailPool` counts the rows after the settled instant (the replica may serve that). */
    async read(tailPool: pg.Pool = pool): Promise<RowCount[]> {
      // node-postgres reads -infinity (no summary yet) as the number -Infinity.
      const { rows: [bounds] } = await pool.query<{ live_from: Date | number; settled_until: Date }>(BOUNDS_SQL);
      const from = bounds!.live_from;
      // Query everything first and change the running totals only once all queries succeeded.
      const summaryMoved = String(from) !== liveFrom;
      const summaryCounts = summaryMoved ? await query(SUMMARY_COUNTS_SQL) : undefined;
      const countedUntil = summaryMoved ? from : settledUntil!;
      const newlySettled = bounds!.settled_until > countedUntil
        ? await query(RANGE_COUNTS_SQL, [pgTime(countedUntil), pgTime(bounds!.settled_until)]) : undefined;
      const nowSettledUntil = newlySettled ? bounds!.settled_until : countedUntil;
      const tail = await query(RANGE_COUNTS_SQL, [pgTime(nowSettledUntil), "infinity"], tailPool);

      if (summaryCounts) {
        liveFrom = String(from);
        summary = new Map();
        add(summary, summaryCounts);
        settled = new Map();
      }
      if (newlySettled) add(settled, newlySettled);
      settledUntil = nowSettledUntil;

      const total = new Map<string, RowCount>();
      add(total, [...summary.values()]);
      add(total, [...settled.values()]);
      add(total, tail);
      return [...total.values()];
    },
  };
}

/** A timestamptz parameter, infinities included. */
function pgTime(value: Date | number): string {
  if (value === -Infinity) return "-infinity";
  if (value === Infinity) return "infinity";
  return new Date(value).toISOString();
}
