// Read performance for analysts at scale: fills the audit trail with a realistic mix across 13 monthly
// partitions (bulk, not row by row), then times the reporting queries in SQL.
//   npm run bench:reporting                         10M rows, embedded PostgreSQL
//   DATABASE_URL=postgres://... npm run bench:reporting -- --rows 10000000 --runs 200
import { parseArgs } from "node:util";
import { openScratchDatabase } from "./scratch.ts";
import { percentile, printTable } from "./stats.ts";

const { values: args } = parseArgs({ options: { rows: { type: "string", default: "10000000" }, runs: { type: "string", default: "200" } } });
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);
const ENTITIES = 200_000;
const DAYS = 390;


const scratch = await openScratchDatabase("bench_reporting", 55832);
const { pool } = scratch;
try {
  console.log(`${await scratch.describe()}; ${ROWS} audit rows over ${DAYS} days`);
  const { rows: [{ products, users }] } = await pool.query(
    `select (select id from audit_private.tables where table_name = 'products') as products,
            (select id from audit_private.tables where table_name = 'users') as users`);
  const { rows: months } = await pool.query<{ m: string }>(
    `select to_char(audit_private.current_month() - make_interval(months => g), 'YYYY-MM-DD') as m from generate_series(0, 13) g`);
  for (const { m } of months) await pool.query("select audit.create_partition($1::date)", [m]);
  const seedStart = performance.now();
  // In chunks of 1M so each statement's memory and WAL stay bounded.
  for (let from = 1; from <= ROWS; from += 1_000_000) {
    const to = Math.min(ROWS, from + 999_999);
    await pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id, user_email, db_user, application_name)
       select now() - ((${ROWS} - g)::float / ${ROWS}) * interval '${DAYS} days', g / 4,
              case when g % 5 = 0 then $2::int else $1::int end,
              (array['I','U','U','U','U','U','D'])[1 + (g::bigint * 7919) % 7]::"char", (1 + (g::bigint * 104729) % ${ENTITIES})::text,
              jsonb_build_object('id', 1 + (g::bigint * 104729) % ${ENTITIES}, 'name', 'Product ' || g, 'price', g % 1000, 'stock', g % 50,
                                 'attributes', jsonb_build_object('color', (array['red','green','blue'])[1 + g % 3])),
              case when (array['I','U','U','U','U','U','D'])[1 + (g::bigint * 7919) % 7] = 'U'
                   then jsonb_build_object((array['price','stock','name'])[1 + g % 3], g % 997) end,
              'user-' || (g % 1000), 'user' || (g % 1000) || '@example.com', 'cartop_user', 'api'
       from generate_series($3::int, $4::int) g`,
      [products, users, from, to]);
  }
  await pool.query("vacuum analyze audit_private.log_entries");
  const seedSeconds = (performance.now() - seedStart) / 1000;
  console.log(`seeded in ${seedSeconds.toFixed(0)} s (${Math.round(ROWS / seedSeconds)} rows/s, including VACUUM ANALYZE)`);
  // What the worker does hourly: summarise finished days for activity_daily (here all of them at once).
  const summaryStart = performance.now();
  const { rows: [{ written }] } = await pool.query("select audit.summarize_activity() as written");
  await pool.query("analyze audit_private.activity_summary");
  console.log(`summarised ${DAYS} days into ${written} summary rows in ${((performance.now() - summaryStart) / 1000).toFixed(1)} s`);

  const timings = async (label: string, sql: string, params: () => unknown[], runs = RUNS) => {
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      await pool.query(sql, params());
      samples.push(performance.now() - start);
    }
    samples.sort((a, b) => a - b);
    return [label, `${percentile(samples, 50).toFixed(1)} ms`, `${percentile(samples, 95).toFixed(1)} ms`, String(runs)];
  };
  const entity = () => String(1 + Math.floor(Math.random() * ENTITIES));
  const day = () => {
    const d = new Date(Date.now() - (2 + Math.floor(Math.random() * (DAYS - 100))) * 86_400_000);
    d.setUTCHours(0, 0, 0, 0);
    return d;
  };
  const lines = [["query", "p50", "p95", "runs"]];
  lines.push(await timings("entity_history (one entity)", "select * from audit.entity_history('products', $1)", () => [entity()]));
  lines.push(await timings("row_as_of (one entity, random time)", "select audit.row_as_of('products', $1, now() - random() * interval '300 days')", () => [entity()]));
  lines.push(await timings("one day of one table (all rows)",
    `select id, created_at, action, entity_id, user_id, changes from audit.log
      where entity_name = 'products' and created_at >= $1 and created_at < $1::timestamptz + interval '1 day'`,
    () => [day()], 50));
  lines.push(await timings("activity_daily for a quarter",
    `select * from audit.activity_daily where day >= $1::date and day < $1::date + 91`,
    () => [new Date(Date.now() - 200 * 86_400_000).toISOString().slice(0, 10)], 5));
  printTable(lines);
  const { rows: plan } = await pool.query(
    `explain (costs off) select * from audit.activity_daily where day >= current_date - 200 and day < current_date - 109`);
  console.log(`\nplan of activity_daily for a quarter:\n${plan.map((r) => `  ${r["QUERY PLAN"]}`).join("\n")}`);
} finally {
  await scratch.close();
}
