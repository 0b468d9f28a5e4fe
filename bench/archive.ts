// Archive and restore throughput (rows/s) and the process's peak memory, for months of growing size:
// memory should stay flat as the month grows (everything is streamed).
//   npm run bench:archive                      embedded PostgreSQL; months of 250k and 1M rows
//   DATABASE_URL=postgres://... npm run bench:archive -- --rows 250000,1000000
import { parseArgs } from "node:util";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { archiveMonth, restoreMonth } from "../src/archive/archive.ts";
import { openScratchDatabase } from "./scratch.ts";
import { printTable } from "./stats.ts";

const { values: args } = parseArgs({ options: { rows: { type: "string", default: "250000,1000000" } } });
const sizes = args.rows.split(",").map(Number);

/** Runs `work` while sampling this process's resident memory; returns the time and the peak. */
async function measured<T>(work: () => Promise<T>): Promise<{ ms: number; peakMb: number; result: T }> {
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
  const start = performance.now();
  try {
    const result = await work();
    return { ms: performance.now() - start, peakMb: peak / 2 ** 20, result };
  } finally {
    clearInterval(sampler);
  }
}

const scratch = await openScratchDatabase("bench_archive", 55632);
const pool = scratch.pool;
const dir = await mkdtemp(path.join(os.tmpdir(), "cartop-bench-archive-files-"));
try {
  console.log(`${await scratch.describe()}; archive dir ${dir}`);
  const lines = [["rows", "archive", "archive rows/s", "restore", "restore rows/s", "peak RSS", "file"]];
  for (const [i, rows] of sizes.entries()) {
    const month = `2020-${String(i + 1).padStart(2, "0")}-01`;
    await pool.query("select audit.create_partition($1::date)", [month]);
    // A realistic mix: ~300-byte rows, a delta on a third of them, context on half.
    await pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id,
                                              user_email, ip_address, request_id, db_user, application_name)
       select $1::timestamptz + (g % 2500000) * interval '1 second', 100000 + g / 50, 1 + g % 3, (array['I','U','D'])[1 + g % 3]::"char",
              g::text,
              jsonb_build_object('id', g, 'sku', 'SKU-' || lpad(g::text, 8, '0'), 'name', 'Product number ' || g,
                                 'price', (g % 1000) / 10.0, 'stock', g % 500, 'active', g % 3 <> 0,
                                 'created_at', $1::timestamptz, 'updated_at', $1::timestamptz + interval '1 day'),
              case when g % 3 = 1 then jsonb_build_object('price', (g % 1000) / 10.0 + 1) end,
              case when g % 2 = 0 then 'user-' || (g % 1000) end, case when g % 2 = 0 then 'u' || (g % 1000) || '@example.com' end,
              case when g % 2 = 0 then '203.0.113.7'::inet end, case when g % 2 = 0 then 'req-' || g end, 'cartop_user', 'api'
       from generate_series(1, $2::int) g`,
      [month, rows],
    );
    await pool.query("checkpoint");
    const archived = await measured(() => archiveMonth(pool, month, { dir }));
    const restored = await measured(() => restoreMonth(pool, month, { dir }));
    lines.push([
      String(rows), `${(archived.ms / 1000).toFixed(1)} s`, String(Math.round(rows / (archived.ms / 1000))),
      `${(restored.ms / 1000).toFixed(1)} s`, String(Math.round(rows / (restored.ms / 1000))),
      `${Math.max(archived.peakMb, restored.peakMb).toFixed(0)} MB`, `${(archived.result.bytes / 2 ** 20).toFixed(1)} MB`,
    ]);
  }
  printTable(lines);
} finally {
  await scratch.close();
  await rm(dir, { recursive: true, force: true });
}
