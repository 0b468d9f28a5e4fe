// Write-path benchmark: the cost of auditing, as ratios against an unaudited copy of the same table,
// measured in the same run on the same server. Not a test: it asserts nothing and prints a table.
//
//   npm run bench                          embedded PostgreSQL (default durability settings)
//   DATABASE_URL=postgres://... npm run bench   any server you point it at (a scratch database is made)
//   npm run bench -- --rows 50000 --repeat 1 --rounds 2      quicker
// Bulk numbers are medians of --repeat runs; OLTP numbers are medians of --rounds rounds of --seconds
// seconds each, plain and audited alternating.
import { parseArgs } from "node:util";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { openScratchDatabase } from "./scratch.ts";
import { median, printTable } from "./stats.ts";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "200000" },
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "5" },
    repeat: { type: "string", default: "3" },
    clients: { type: "string", default: "2" },
  },
});
const ROWS = Number(args.rows);
const SECONDS = Number(args.seconds);
const REPEAT = Number(args.repeat);
const CLIENTS = Number(args.clients);
const ROUNDS = Number(args.rounds);

const columns = `
  id bigint primary key, sku text not null, name text not null, category text not null,
  price numeric(10,2) not null, stock integer not null, active boolean not null, weight real,
  created_at timestamptz not null, updated_at timestamptz not null`;
const generated = (from: string, to: string) => `
  select g, 'SKU-' || lpad(g::text, 8, '0'), 'Product number ' || g, 'category-' || (g % 17),
         (g % 1000) / 10.0 + 1, g % 500, g % 3 <> 0, (g % 97) / 3.0, now(), now()
  from generate_series(${from}, ${to}) g`;


async function timed(pool: pg.Pool, sql: string): Promise<number> {
  await pool.query("checkpoint");
  const start = performance.now();
  await pool.query(sql);
  return performance.now() - start;
}

/** The COPY payload, built once before any timing so the client's string building is not measured. */
function copyPayload(): Buffer[] {
  const now = new Date().toISOString();
  const chunks: Buffer[] = [];
  let lines: string[] = [];
  for (let g = 1; g <= ROWS; g++) {
    lines.push(`${g}\tSKU-${String(g).padStart(8, "0")}\tProduct number ${g}\tcategory-${g % 17}\t${(g % 1000) / 10 + 1}\t${g % 500}\t${g % 3 !== 0}\t${(g % 97) / 3}\t${now}\t${now}\n`);
    if (lines.length === 5000) {
      chunks.push(Buffer.from(lines.join("")));
      lines = [];
    }
  }
  if (lines.length) chunks.push(Buffer.from(lines.join("")));
  return chunks;
}

async function timedCopy(pool: pg.Pool, table: string, payload: Buffer[]): Promise<number> {
  await pool.query("checkpoint");
  const client = await pool.connect();
  try {
    const start = performance.now();
    await pipeline(Readable.from(payload), client.query(copyFrom(`copy ${table} from stdin`)));
    return performance.now() - start;
  } finally {
    client.release();
  }
}

/** Transactions per second for `CLIENTS` connections each running `transaction` in a loop. */
async function throughput(url: string, transaction: (client: pg.Client, i: number) => Promise<void>): Promise<number> {
  const clients = await Promise.all(Array.from({ length: CLIENTS }, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    return c;
  }));
  const deadline = performance.now() + SECONDS * 1000;
  let count = 0;
  await Promise.all(clients.map(async (client, worker) => {
    let i = worker;
    while (performance.now() < deadline) {
      await transaction(client, i);
      i += CLIENTS;
      count++;
    }
  }));
  await Promise.all(clients.map((c) => c.end()));
  return count / SECONDS;
}

async function auditBytes(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query(`select sum(pg_total_relation_size(inhrelid))::bigint as bytes
                                       from pg_inherits where inhparent = 'audit_private.log_entries'::regclass`);
  return Number(rows[0].bytes);
}

async function main(): Promise<void> {
  const scratch = await openScratchDatabase("bench", 55532);
  const { pool, url } = scratch;
  try {
    console.log(`${await scratch.describe()}; ${ROWS} rows, ${REPEAT} repeats (median), ${CLIENTS} clients, ${ROUNDS} rounds x ${SECONDS}s`);
    await pool.query(`
      create schema bench;
      create table bench.plain (${columns}) with (autovacuum_enabled = false);
      create table bench.audited (${columns}) with (autovacuum_enabled = false);
      create table bench.limit_history (${columns.replace("primary key", "")}) with (autovacuum_enabled = false);
      select audit.enable_tracking('bench.audited');`);

    type Op = "insert" | "update" | "delete" | "copy";
    const times: Record<"plain" | "audited" | "limit", Record<Op, number[]>> = {
      plain: { insert: [], update: [], delete: [], copy: [] },
      audited: { insert: [], update: [], delete: [], copy: [] },
      limit: { insert: [], update: [], delete: [], copy: [] },
    };
    const updateSet = "price = price + 1, stock = stock + 1, updated_at = updated_at + interval '1 second'";
    let updateBytes = 0;
    const payload = copyPayload();
    for (let r = 0; r < REPEAT; r++) {
      for (const table of ["plain", "audited"] as const) {
        const t = `bench.${table}`;
        times[table].insert.push(await timed(pool, `insert into ${t} ${generated("1", String(ROWS))}`));
        await pool.query(`vacuum analyze ${t}`);
        const before = await auditBytes(pool);
        times[table].update.push(await timed(pool, `update ${t} set ${updateSet}`));
        if (table === "audited") updateBytes = (await auditBytes(pool)) - before;
        await pool.query(`vacuum analyze ${t}`);
        times[table].delete.push(await timed(pool, `delete from ${t}`));
        await pool.query(`vacuum ${t}`);
        times[table].copy.push(await timedCopy(pool, t, payload));
        await pool.query(`truncate ${t}`);
      }
      // The limit: the same rows also written, as plain typed copies, to a table with no trigger.
      const h = "bench.limit_history";
      times.limit.insert.push(await timed(pool, `with w as (insert into bench.plain ${generated("1", String(ROWS))} returning *) insert into ${h} select * from w`));
      await pool.query(`vacuum analyze bench.plain`);
      times.limit.update.push(await timed(pool, `with w as (update bench.plain set ${updateSet} returning *) insert into ${h} select * from w`));
      await pool.query(`vacuum analyze bench.plain`);
      times.limit.delete.push(await timed(pool, `with w as (delete from bench.plain returning *) insert into ${h} select * from w`));
      await pool.query(`truncate bench.plain, ${h}`);
    }

    // Single-row OLTP: a table of ROWS rows, random single-row UPDATEs, and mixed INSERT+UPDATE+DELETE.
    for (const table of ["plain", "audited"] as const) {
      await pool.query(`insert into bench.${table} ${generated("1", String(ROWS))}`);
      await pool.query(`vacuum analyze bench.${table}`);
    }
    // The server's throughput drifts by tens of percent from second to second on a shared 2-core machine,
    // so plain and audited alternate in short rounds and the median of the per-round ratios is reported.
    const oltp = { update: [] as number[][], mixed: [] as number[][] };
    let nextId = ROWS * 10;
    const randomId = () => 1 + Math.floor(Math.random() * ROWS);
    for (let r = 0; r < ROUNDS; r++) {
      const update: number[] = [];
      const mixed: number[] = [];
      for (const table of ["plain", "audited"] as const) {
        update.push(await throughput(url, async (client) => {
          await client.query({ name: `upd_${table}`, text: `update bench.${table} set ${updateSet} where id = $1`, values: [randomId()] });
        }));
        mixed.push(await throughput(url, async (client) => {
          const id = nextId++;
          await client.query("begin");
          await client.query({ name: `ins_${table}`, text: `insert into bench.${table} ${generated("$1::bigint", "$1::bigint")}`, values: [id] });
          await client.query({ name: `upd_${table}`, text: `update bench.${table} set ${updateSet} where id = $1`, values: [randomId()] });
          await client.query({ name: `del_${table}`, text: `delete from bench.${table} where id = $1`, values: [id] });
          await client.query("commit");
        }));
      }
      oltp.update.push(update);
      oltp.mixed.push(mixed);
    }
    const oltpRow = (label: string, runs: number[][]) => {
      const plain = median(runs.map((x) => x[0]!));
      const audited = median(runs.map((x) => x[1]!));
      const ratioOfRounds = median(runs.map((x) => x[1]! / x[0]!));
      return [label, `${plain.toFixed(0)} tx/s`, `${audited.toFixed(0)} tx/s`, `${ratioOfRounds.toFixed(2)}x`];
    };

    const ratio = (op: Op, who: "audited" | "limit") => median(times[who][op]) / median(times.plain[op]);
    const fmt = (n: number) => n.toFixed(2);
    const rowsOut: string[][] = [
      ["measure", "unaudited", "cartop-audit", "ratio", "limit ratio", "aim"],
      ["bulk INSERT ... SELECT", `${median(times.plain.insert).toFixed(0)} ms`, `${median(times.audited.insert).toFixed(0)} ms`, `${fmt(ratio("insert", "audited"))}x`, `${fmt(ratio("insert", "limit"))}x`, "<= 2.5x"],
      ["bulk UPDATE (3 columns)", `${median(times.plain.update).toFixed(0)} ms`, `${median(times.audited.update).toFixed(0)} ms`, `${fmt(ratio("update", "audited"))}x`, `${fmt(ratio("update", "limit"))}x`, "<= 3.0x"],
      ["bulk DELETE", `${median(times.plain.delete).toFixed(0)} ms`, `${median(times.audited.delete).toFixed(0)} ms`, `${fmt(ratio("delete", "audited"))}x`, `${fmt(ratio("delete", "limit"))}x`, "<= 5x"],
      ["COPY", `${median(times.plain.copy).toFixed(0)} ms`, `${median(times.audited.copy).toFixed(0)} ms`, `${fmt(ratio("copy", "audited"))}x`, "", "<= 2.2x"],
      [...oltpRow(`single-row UPDATE, ${CLIENTS} clients`, oltp.update), "", ">= 0.65x"],
      [...oltpRow(`mixed INSERT+UPDATE+DELETE tx, ${CLIENTS} clients`, oltp.mixed), "", ">= 0.80x"],
      ["audit bytes per captured UPDATE", "", `${(updateBytes / ROWS).toFixed(0)} B`, "", "", "<= 600 B"],
    ];
    printTable(rowsOut);
  } finally {
    await scratch.close();
  }
}

await main();
