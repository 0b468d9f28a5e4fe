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
import { insertRealisticAuditRows } from "./seed.ts";
import { printTable } from "./stats.ts";
import { fileStore } from "../src/archive/store.ts";

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
    await insertRealisticAuditRows(pool, month, rows, 2_500_000);
    await pool.query("checkpoint");
    const archived = await measured(() => archiveMonth(pool, month, { store: fileStore(dir) }));
    const restored = await measured(() => restoreMonth(pool, month, { store: fileStore(dir) }));
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
