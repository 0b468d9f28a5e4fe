// What an encrypted column costs on the write path, next to a masked one (the same column, the same rows):
// a bulk UPDATE that changes the protected column, and single-row UPDATE transactions. Ratios to an unaudited
// copy of the table, in the same run. Not a test: it asserts nothing and prints a table.
//
//   npm run bench:sensitive                         embedded PostgreSQL
//   DATABASE_URL=postgres://... npm run bench:sensitive -- --rows 20000 --repeat 3 --transactions 2000
import { parseArgs } from "node:util";
import { openScratchDatabase } from "./scratch.ts";
import { median, printTable } from "./stats.ts";

const { values: args } = parseArgs({
  options: { rows: { type: "string", default: "20000" }, repeat: { type: "string", default: "3" }, transactions: { type: "string", default: "2000" } },
});
const ROWS = Number(args.rows);
const REPEAT = Number(args.repeat);
const TRANSACTIONS = Number(args.transactions);
const VARIANTS = ["plain", "masked", "encrypted"] as const;

const scratch = await openScratchDatabase("sensitive", 55542);
try {
  const { pool } = scratch;
  await pool.query(`create schema bench`);
  for (const v of VARIANTS) {
    await pool.query(`create table bench.${v} (id bigint primary key, name text not null, email text, owner_id text not null);
      insert into bench.${v} select g, 'Person ' || g, 'person' || g || '@example.com', 'subject-' || g from generate_series(1, ${ROWS}) g`);
  }
  await pool.query(`select audit.enable_tracking('bench.masked', masked_columns => '{email}');
    select audit.enable_tracking('bench.encrypted', encrypted_columns => '{email}', subject_column => 'owner_id');
    -- Every subject's key exists already, as it would after the first write.
    update bench.encrypted set email = email || '.'`);
  await pool.query("vacuum analyze");

  const bulk: Record<string, number[]> = { plain: [], masked: [], encrypted: [] };
  const single: Record<string, number[]> = { plain: [], masked: [], encrypted: [] };
  for (let r = 0; r < REPEAT; r++) {
    for (const v of VARIANTS) {
      await pool.query("checkpoint");
      let start = performance.now();
      await pool.query(`update bench.${v} set email = email || 'x'`);
      bulk[v]!.push(performance.now() - start);
      const client = await pool.connect();
      try {
        start = performance.now();
        for (let i = 0; i < TRANSACTIONS; i++) {
          await client.query(`begin; update bench.${v} set email = email || 'y' where id = ${1 + ((i * 7919) % ROWS)}; commit`);
        }
        single[v]!.push(performance.now() - start);
      } finally {
        client.release();
      }
    }
  }
  const b = (v: string) => median(bulk[v]!);
  const s = (v: string) => median(single[v]!);
  console.log(`${await scratch.describe()}; ${ROWS} rows, ${TRANSACTIONS} single-row transactions, ${REPEAT} repeats (median)`);
  printTable([
    ["", "bulk UPDATE of the column", "1-row UPDATE transactions"],
    ["no trigger (absolute)", `${b("plain").toFixed(0)} ms`, `${(TRANSACTIONS / (s("plain") / 1000)).toFixed(0)} tx/s`],
    ["cartop-audit, masked column", `${(b("masked") / b("plain")).toFixed(1)}x`, `${(s("plain") / s("masked")).toFixed(2)}`],
    ["cartop-audit, encrypted column", `${(b("encrypted") / b("plain")).toFixed(1)}x`, `${(s("plain") / s("encrypted")).toFixed(2)}`],
  ]);
  console.log("Bulk: time ratio to no trigger (lower is better). 1-row: throughput ratio to no trigger (higher is better).");
} finally {
  await scratch.close();
}
