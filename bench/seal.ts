// Sealing a busy day: how long the digest of a day of N audit rows takes (sealing and verifying both
// compute it), and whether writers notice: single-row UPDATEs through the capture triggers are timed
// with and without a seal running beside them. Also what one /metrics scrape costs with that day not yet
// summarised (the worst case: it counts those rows) and once it is. Part of `npm run bench`.
//   node bench/seal.ts                        embedded PostgreSQL, a day of 1M rows
//   DATABASE_URL=postgres://... node bench/seal.ts --rows 1000000
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { createLogger } from "../src/log.ts";
import { createMetrics } from "../src/metrics.ts";
import { dayDigest, sealDays, verifySeals } from "../src/seals/seals.ts";
import { openScratchDatabase } from "./scratch.ts";
import { insertRealisticAuditRows } from "./seed.ts";
import { percentile, printTable } from "./stats.ts";
import { fileStore } from "../src/archive/store.ts";

const { values: args } = parseArgs({ options: {
  rows: { type: "string", default: "1000000" },
  writers: { type: "string", default: "2" },
} });
const rows = Number(args.rows);
const writers = Number(args.writers);

const scratch = await openScratchDatabase("bench_seal", 55732);
const pool = scratch.pool;
pool.options.max = writers + 3;
const dir = await mkdtemp(path.join(os.tmpdir(), "cartop-bench-seal-"));
const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);

/** Single-row UPDATEs from `writers` connections until `stop()`; returns each statement's latency in ms. */
function startWriters(): { stop(): Promise<number[]> } {
  let running = true;
  const latencies: number[] = [];
  const loops = Array.from({ length: writers }, async (_, w) => {
    const client = await pool.connect();
    try {
      for (let i = 0; running; i++) {
        const started = performance.now();
        await client.query("update public.seal_bench set n = n + 1 where id = $1", [1 + ((i * writers + w) % 1000)]);
        latencies.push(performance.now() - started);
      }
    } finally {
      client.release();
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      return latencies.sort((a, b) => a - b);
    },
  };
}

const describeLatencies = (label: string, ms: number[], seconds: number) =>
  [label, String(Math.round(ms.length / seconds)), percentile(ms, 50).toFixed(2), percentile(ms, 95).toFixed(2),
    percentile(ms, 99).toFixed(2), ms.at(-1)!.toFixed(1)];

try {
  console.log(`${await scratch.describe()}; ${rows} audit rows on ${yesterday}, ${writers} writer connections`);
  await pool.query("select audit.create_partition($1::date)", [yesterday]);
  // The archive benchmark's rows: ~300 bytes, a delta on a third, request context on half.
  await insertRealisticAuditRows(pool, `${yesterday}T00:00:00Z`, rows, 86_400);
  await pool.query(`create table public.seal_bench (id int primary key, n int not null);
    insert into public.seal_bench select g, 0 from generate_series(1, 1000) g;
    select audit.enable_tracking('public.seal_bench')`);
  await pool.query("vacuum analyze");
  await pool.query("checkpoint");

  // The digest alone, three times (the first run reads the day from disk into the cache).
  const digestMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const client = await pool.connect();
    try {
      await client.query("set work_mem = '256MB'");
      const started = performance.now();
      await dayDigest(client, yesterday);
      digestMs.push(performance.now() - started);
    } finally {
      client.release();
    }
  }

  // /metrics scrapes: the first counts the unsummarised day once; later ones only what came after.
  const metrics = createMetrics(pool, [], createLogger("silent"));
  const scrapeMs: number[] = [];
  for (let i = 0; i < 6; i++) {
    const started = performance.now();
    await metrics.render();
    scrapeMs.push(performance.now() - started);
  }
  const [firstScrape, ...laterScrapes] = scrapeMs;

  // Writers alone, then writers while the whole chain is sealed (every day of the month up to yesterday).
  const baselineSeconds = 8;
  let load = startWriters();
  await new Promise((resolve) => setTimeout(resolve, baselineSeconds * 1000));
  const alone = await load.stop();
  load = startWriters();
  const sealStarted = performance.now();
  const sealed = await sealDays(pool, { store: fileStore(dir), grace: "0" });
  const sealSeconds = (performance.now() - sealStarted) / 1000;
  const during = await load.stop();

  const verifyStarted = performance.now();
  const report = await verifySeals(pool, { store: fileStore(dir) });
  const verifySeconds = (performance.now() - verifyStarted) / 1000;
  if (report.problems.length) throw new Error(`verify found problems: ${JSON.stringify(report.problems)}`);

  console.log(`\ndigest of one day of ${rows} rows: ${digestMs.map((ms) => `${(ms / 1000).toFixed(2)} s`).join(", ")} ` +
    `(${Math.round(rows / (Math.min(...digestMs) / 1000))} rows/s at best)`);
  console.log(`sealing ${sealed.length} days (${sealed.reduce((n, s) => n + s.rows, 0)} rows): ${sealSeconds.toFixed(2)} s; ` +
    `verify of the chain: ${verifySeconds.toFixed(2)} s, ${report.checkedDays} days, no problems\n`);
  console.log(`/metrics scrape: first ${firstScrape!.toFixed(0)} ms (counts the ${rows} unsummarised rows once), ` +
    `then ${percentile(laterScrapes.sort((a, b) => a - b), 50).toFixed(0)} ms (median of 5)\n`);
  printTable([
    ["single-row UPDATEs", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
    describeLatencies("without sealing", alone, baselineSeconds),
    describeLatencies("while sealing", during, sealSeconds),
  ]);
  console.log("\nSealing only reads (ACCESS SHARE): writers slow down by sharing the CPU, never by waiting for a lock.");
} finally {
  await scratch.close();
  await rm(dir, { recursive: true, force: true });
}
