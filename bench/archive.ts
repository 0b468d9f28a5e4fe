// Archive formats side by side, in one run: today's gzip-compressed COPY text against the Parquet copy
// (zstd) — export rows/s, file size, restore rows/s (restores read the COPY text), a full scan of the
// archived month through `archive query` (DuckDB over Parquet), and the process's peak memory, which
// should stay flat as the month grows (everything is streamed). Optionally the same archive to a real S3
// server (s3rver on loopback) to show the multipart upload's cost and memory.
//   npm run bench:archive                      embedded PostgreSQL; months of 250k and 1M rows
//   DATABASE_URL=postgres://... npm run bench:archive -- --rows 250000,1000000 [--s3]
import { parseArgs } from "node:util";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { archiveMonth, restoreMonth } from "../src/archive/archive.ts";
import { archiveNames } from "../src/archive/files.ts";
import { exportParquet, queryArchive } from "../src/archive/parquet.ts";
import { fileStore, s3Store, type ArchiveStore } from "../src/archive/store.ts";
import { openScratchDatabase } from "./scratch.ts";
import { insertRealisticAuditRows } from "./seed.ts";
import { printTable } from "./stats.ts";

const { values: args } = parseArgs({ options: { rows: { type: "string", default: "250000,1000000" }, s3: { type: "boolean", default: false } } });
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

const perSecond = (rows: number, ms: number) => String(Math.round(rows / (ms / 1000)));
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const megabytes = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;

const scratch = await openScratchDatabase("bench_archive", 55832);
const pool = scratch.pool;
const dir = await mkdtemp(path.join(os.tmpdir(), "cartop-bench-archive-files-"));
const store = fileStore(dir);
let s3: { server: { close(): Promise<void> }; store: ArchiveStore } | undefined;
if (args.s3) {
  // @ts-expect-error s3rver ships no types
  const { default: S3rver } = await import("s3rver");
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" });
  const server = new S3rver({ address: "127.0.0.1", port: 3301, silent: true, directory: path.join(dir, "s3"), configureBuckets: [{ name: "bench" }] });
  await server.run();
  s3 = { server, store: s3Store("s3://bench/archive", { endpoint: "http://127.0.0.1:3301", region: "us-east-1", forcePathStyle: true }) };
}
try {
  console.log(`${await scratch.describe()}; archive dir ${dir}`);
  // The seeded rows refer to audited tables 1-3; audit.log (and so the Parquet copy) shows only rows of
  // registered tables: register any of those ids the fresh database lacks.
  await pool.query(`insert into audit_private.tables (id, schema_name, table_name, primary_key)
                    overriding system value
                    select g, 'bench', 'table_' || g, '{id}' from generate_series(1, 3) g
                    on conflict do nothing`);
  const lines = [["rows", "format", "export", "export rows/s", "file", "bytes/row", "restore rows/s", "scan rows/s", "peak RSS"]];
  for (const [i, rows] of sizes.entries()) {
    const month = `2020-${String(i + 1).padStart(2, "0")}-01`;
    const label = month.slice(0, 7);
    await pool.query("select audit.create_partition($1::date)", [month]);
    // A realistic mix: ~300-byte rows, a delta on a third of them, context on half.
    await insertRealisticAuditRows(pool, month, rows, 2_500_000);
    await pool.query("checkpoint");

    // Parquet alone, from a snapshot like the archive's (the archive below writes both; this isolates it),
    // into a store of its own so the scan reads this month only.
    const parquetStore = fileStore(path.join(dir, `parquet-only-${label}`));
    const client = await pool.connect();
    const parquet = await measured(async () => {
      await client.query("begin isolation level repeatable read read only");
      try {
        return await exportParquet(client, month, parquetStore, archiveNames(label).parquet);
      } finally {
        await client.query("commit");
      }
    });
    client.release();
    const scan = await measured(() => queryArchive(parquetStore, "select count(*) as n, count(distinct user_id) as users, sum(length(new_value::varchar)) as bytes from audit_log"));

    // Today's format: the full archive (export + read back + detach + drop) with the Parquet copy off, then restore.
    const archived = await measured(() => archiveMonth(pool, month, { store, parquet: false }));
    const restored = await measured(() => restoreMonth(pool, month, { store }));
    lines.push([String(rows), "COPY text, gzip (archive: export + verify + drop)", seconds(archived.ms), perSecond(rows, archived.ms),
      megabytes(archived.result.bytes), (archived.result.bytes / rows).toFixed(0), perSecond(rows, restored.ms), "-",
      `${Math.max(archived.peakMb, restored.peakMb).toFixed(0)} MB`]);
    lines.push([String(rows), "Parquet, zstd (export only)", seconds(parquet.ms), perSecond(rows, parquet.ms), megabytes(parquet.result.bytes),
      (parquet.result.bytes / rows).toFixed(0), "(from COPY text)", perSecond(rows, scan.ms), `${Math.max(parquet.peakMb, scan.peakMb).toFixed(0)} MB`]);
    if (s3) {
      const toS3 = await measured(() => archiveMonth(pool, month, { store: s3!.store }));
      const fromS3 = await measured(() => restoreMonth(pool, month, { store: s3!.store }));
      lines.push([String(rows), "both, to S3 (s3rver, loopback)", seconds(toS3.ms), perSecond(rows, toS3.ms), megabytes(toS3.result.bytes),
        (toS3.result.bytes / rows).toFixed(0), perSecond(rows, fromS3.ms), "-", `${Math.max(toS3.peakMb, fromS3.peakMb).toFixed(0)} MB`]);
    }
  }
  printTable(lines);
} finally {
  s3?.store.close();
  await s3?.server.close();
  await scratch.close();
  await rm(dir, { recursive: true, force: true });
}
