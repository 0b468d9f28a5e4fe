// Write-path benchmark: the cost of auditing, as ratios against an unaudited copy of the same table,
// measured in the same run on the same server, for cartop-audit and for two yardsticks written here:
//   - reference: the best row-trigger audit in common use (a row-level AFTER trigger writing the whole old
//     row and the changed new values as hstore into one plain table, no partitions, in the manner of the
//     widely copied audit-trigger "91plus"), and
//   - typed copy: a statement-level trigger copying the rows, typed, into a plain history table (no JSON):
//     the limit any trigger-based audit can approach; and
//   - typed history: the prototype of a storage change (bench/typed-history.sql): cartop-audit's own generated
//     capture (guard, context, statement number, monthly partitions, entity and user indexes) writing typed
//     per-table history and the context once per statement, instead of JSON and the context on every row.
// Every transaction carries the context an API sends (user id, e-mail, IP, user agent, request id, metadata).
// Not a test: it asserts nothing and prints a table.
//
//   npm run bench                                 embedded PostgreSQL (default durability settings)
//   DATABASE_URL=postgres://... npm run bench     any server you point it at (a scratch database is made)
//   npm run bench -- --rows 50000 --repeat 1 --rounds 2      quicker
// Bulk numbers (W2-W5) are medians of --repeat runs; OLTP numbers (W1) are medians of per-round ratios over
// --rounds rounds of --seconds seconds, the tables taking turns, synchronous_commit off.
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
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

const VARIANTS = ["plain", "audited", "reference", "typed", "history"] as const;
type Variant = (typeof VARIANTS)[number];
const LABELS: Record<Exclude<Variant, "plain">, string> = {
  audited: "cartop-audit",
  reference: "row-trigger audit (hstore, one plain table)",
  typed: "typed copy, no JSON (the limit)",
  history: "typed per-table history (prototype)",
};

const columns = `
  id bigint primary key, sku text not null, name text not null, category text not null,
  price numeric(10,2) not null, stock integer not null, active boolean not null, weight real,
  created_at timestamptz not null, updated_at timestamptz not null`;
const generated = (from: string, to: string) => `
  select g, 'SKU-' || lpad(g::text, 8, '0'), 'Product number ' || g, 'category-' || (g % 17),
         (g % 1000) / 10.0 + 1, g % 500, g % 3 <> 0, (g % 97) / 3.0, now(), now()
  from generate_series(${from}, ${to}) g`;
const updateSet = "price = price + 1, stock = stock + 1, updated_at = updated_at + interval '1 second'";

/**
 * The settings an API request sets (src/graphql/preset.ts pgSettingsFor), plus metadata, one statement,
 * transaction-local; with the marker the API and audit.set_context leave once they checked ip and metadata.
 */
function context(): string {
  const setting = (name: string, value: string) => `set_config('${name}', '${value}', true)`;
  const ip = "203.0.113.7";
  const metadata = '{"operation": "updateProduct"}';
  return `select ${[
    setting("audit.user_id", "u-42"), setting("audit.user_email", "ada@example.com"), setting("audit.ip_address", ip),
    setting("audit.user_agent", "Mozilla/5.0 (X11; Linux x86_64) bench"), setting("audit.request_id", randomUUID()),
    setting("audit.metadata", metadata), setting("audit_private.context_checked", `${ip.length}:${ip}|${metadata}`),
  ].join(", ")}`;
}

/** The two yardsticks, built beside the audited table. */
const yardsticks = `
  create extension if not exists hstore with schema bench;
  create table bench.reference_log (
    event_id bigserial primary key, schema_name text not null, table_name text not null, relid oid not null,
    session_user_name text, action_tstamp_tx timestamptz not null, action_tstamp_stm timestamptz not null,
    action_tstamp_clk timestamptz not null, transaction_id bigint, application_name text, client_addr inet,
    client_port integer, client_query text, action char(1) not null, row_data bench.hstore,
    changed_fields bench.hstore, statement_only boolean not null);
  create index on bench.reference_log (relid);
  create index on bench.reference_log (action_tstamp_stm);
  create index on bench.reference_log (action);
  create function bench.tg__reference() returns trigger language plpgsql
  set search_path = pg_catalog, bench as $$
  declare
    entry bench.reference_log;
  begin
    entry := row(nextval('bench.reference_log_event_id_seq'), tg_table_schema, tg_table_name, tg_relid,
                 session_user, transaction_timestamp(), statement_timestamp(), clock_timestamp(), txid_current(),
                 current_setting('application_name'), inet_client_addr(), inet_client_port(), null,
                 substring(tg_op, 1, 1), null, null, false);
    if tg_op = 'UPDATE' then
      entry.row_data := hstore(old.*);
      entry.changed_fields := hstore(new.*) - entry.row_data;
      if entry.changed_fields = ''::hstore then return null; end if;
    elsif tg_op = 'DELETE' then
      entry.row_data := hstore(old.*);
    else
      entry.row_data := hstore(new.*);
    end if;
    insert into bench.reference_log values (entry.*);
    return null;
  end $$;
  create trigger reference after insert or update or delete on bench.reference
    for each row execute function bench.tg__reference();

  create table bench.typed_history (action char(1) not null, ${columns.replace("primary key", "")});
  create function bench.tg__typed() returns trigger language plpgsql as $$
  begin
    if tg_op = 'DELETE' then
      insert into bench.typed_history select 'D', o.* from old_rows o;
    else
      insert into bench.typed_history select substring(tg_op, 1, 1), n.* from new_rows n;
    end if;
    return null;
  end $$;
  create trigger typed_insert after insert on bench.typed referencing new table as new_rows
    for each statement execute function bench.tg__typed();
  create trigger typed_update after update on bench.typed referencing new table as new_rows
    for each statement execute function bench.tg__typed();
  create trigger typed_delete after delete on bench.typed referencing old table as old_rows
    for each statement execute function bench.tg__typed();`;

/** Bytes the variant's history holds now, indexes included. */
async function historyBytes(pool: pg.Pool, variant: Variant): Promise<number> {
  const sql = {
    plain: "select 0",
    audited: `select coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint
                from pg_inherits where inhparent = 'audit_private.log_entries'::regclass`,
    reference: "select pg_total_relation_size('bench.reference_log')",
    typed: "select pg_total_relation_size('bench.typed_history')",
    history: `select coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint from pg_inherits
                where inhparent in ('bench.history_history'::regclass, 'bench.history_history_statements'::regclass)`,
  }[variant];
  const { rows } = await pool.query<{ bytes: string }>(`select (${sql}) as bytes`);
  return Number(rows[0]!.bytes);
}

/** One statement in a transaction that carries the API's context; returns milliseconds. */
async function timed(pool: pg.Pool, sql: string): Promise<number> {
  await pool.query("checkpoint");
  const start = performance.now();
  await pool.query(`begin; ${context()}; ${sql}; commit`);
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
    await client.query(`begin; ${context()}`);
    await pipeline(Readable.from(payload), client.query(copyFrom(`copy ${table} from stdin`)));
    await client.query("commit");
    return performance.now() - start;
  } finally {
    client.release();
  }
}

/** Transactions per second for `CLIENTS` connections, each sending `transaction(i)` (one round trip) in a loop. */
async function throughput(url: string, transaction: (i: number) => string): Promise<number> {
  const clients = await Promise.all(Array.from({ length: CLIENTS }, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query("set synchronous_commit = off");
    return c;
  }));
  const deadline = performance.now() + SECONDS * 1000;
  let count = 0;
  await Promise.all(clients.map(async (client, worker) => {
    let i = worker;
    while (performance.now() < deadline) {
      await client.query(transaction(i));
      i += CLIENTS;
      count++;
    }
  }));
  await Promise.all(clients.map((c) => c.end()));
  return count / SECONDS;
}

async function main(): Promise<void> {
  const scratch = await openScratchDatabase("bench", 55532);
  const { pool, url } = scratch;
  try {
    console.log(`${await scratch.describe()}; ${ROWS} rows, ${REPEAT} repeats (median), ${CLIENTS} clients, ${ROUNDS} rounds x ${SECONDS}s`);
    await pool.query(`create schema bench;
      ${VARIANTS.map((v) => `create table bench.${v} (${columns}) with (autovacuum_enabled = false);`).join("\n")}
      select audit.enable_tracking('bench.audited');
      ${yardsticks}
      ${await readFile(new URL("typed-history.sql", import.meta.url), "utf8")}
      select bench.create_typed_history('bench.history');`);

    type Workload = "insert" | "update" | "delete" | "copy";
    const perVariant = <T>(make: () => T) => Object.fromEntries(VARIANTS.map((v) => [v, make()])) as Record<Variant, T>;
    const times = perVariant<Record<Workload, number[]>>(() => ({ insert: [], update: [], delete: [], copy: [] }));
    const bytesPerUpdate = perVariant<number[]>(() => []);
    const payload = copyPayload();
    for (let r = 0; r < REPEAT; r++) {
      for (const variant of VARIANTS) {
        const t = `bench.${variant}`;
        times[variant].insert.push(await timed(pool, `insert into ${t} ${generated("1", String(ROWS))}`));
        await pool.query(`vacuum analyze ${t}`);
        const before = await historyBytes(pool, variant);
        times[variant].update.push(await timed(pool, `update ${t} set ${updateSet}`));
        bytesPerUpdate[variant].push(((await historyBytes(pool, variant)) - before) / ROWS);
        await pool.query(`vacuum analyze ${t}`);
        times[variant].delete.push(await timed(pool, `delete from ${t}`));
        await pool.query(`vacuum ${t}`);
        times[variant].copy.push(await timedCopy(pool, t, payload));
        await pool.query(`truncate ${t}`);
      }
    }

    // Single-row OLTP on a table of ROWS rows: random single-row UPDATEs (W1a), and INSERT+UPDATE+DELETE
    // transactions (W1b). Throughput drifts by tens of percent on a shared 2-core machine, so the tables
    // take turns in short rounds and the median of the per-round ratios is reported.
    for (const variant of VARIANTS) {
      await pool.query(`insert into bench.${variant} ${generated("1", String(ROWS))}`);
      await pool.query(`vacuum analyze bench.${variant}`);
    }
    const tps = perVariant<{ w1a: number[]; w1b: number[] }>(() => ({ w1a: [], w1b: [] }));
    let nextId = ROWS * 10;
    const randomId = () => 1 + Math.floor(Math.random() * ROWS);
    for (let r = 0; r < ROUNDS; r++) {
      for (const variant of VARIANTS) {
        const t = `bench.${variant}`;
        tps[variant].w1a.push(await throughput(url, () =>
          `begin; ${context()}; update ${t} set ${updateSet} where id = ${randomId()}; commit`));
        tps[variant].w1b.push(await throughput(url, () => {
          const id = nextId++;
          return `begin; ${context()}; insert into ${t} ${generated(String(id), String(id))};
                  update ${t} set ${updateSet} where id = ${randomId()}; delete from ${t} where id = ${id}; commit`;
        }));
      }
    }

    const tpsRatio = (variant: Variant, w: "w1a" | "w1b") =>
      median(tps[variant][w].map((value, round) => value / tps.plain[w][round]!)).toFixed(2);
    const timeRatio = (variant: Variant, w: Workload) => `${(median(times[variant][w]) / median(times.plain[w])).toFixed(1)}x`;
    const row = (variant: Variant, label: string) => [
      label, tpsRatio(variant, "w1a"), tpsRatio(variant, "w1b"), timeRatio(variant, "update"), timeRatio(variant, "insert"),
      timeRatio(variant, "copy"), timeRatio(variant, "delete"), `${median(bytesPerUpdate[variant]).toFixed(0)}`,
    ];
    printTable([
      ["", "W1a 1-row UPDATE", "W1b INS+UPD+DEL tx", "W2 bulk UPDATE", "W3 INSERT..SELECT", "W4 COPY", "W5 bulk DELETE", "B/UPDATE"],
      ["no trigger (absolute)", `${median(tps.plain.w1a).toFixed(0)} tx/s`, `${median(tps.plain.w1b).toFixed(0)} tx/s`,
        `${median(times.plain.update).toFixed(0)} ms`, `${median(times.plain.insert).toFixed(0)} ms`,
        `${median(times.plain.copy).toFixed(0)} ms`, `${median(times.plain.delete).toFixed(0)} ms`, ""],
      row("audited", LABELS.audited),
      row("reference", LABELS.reference),
      row("typed", LABELS.typed),
      row("history", LABELS.history),
      ["aim for cartop-audit", ">= 0.65", ">= 0.60", "<= 2.5x", "<= 2.5x", "<= 2.2x", "<= 5x", "<= 600"],
    ]);
    console.log("W1: throughput ratio to no trigger (higher is better). W2-W5: time ratio (lower is better). " +
      "B/UPDATE: history bytes per updated row, indexes included.");
  } finally {
    await scratch.close();
  }
}

await main();
