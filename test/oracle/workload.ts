// A seeded random workload of every kind of write, over tables of many column types, run by several
// clients at once: single and multi-row writes, COPY, upserts, writable CTEs, key changes, MERGE with every
// action, rows moved between partitions (by UPDATE and by MERGE), writes straight into a partition,
// ON DELETE CASCADE, TRUNCATE, savepoints rolled back to, rolled-back transactions, API-style context.
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

export const schemaSql = `
  create schema w;
  create table w.items (
    id bigint primary key, sku text not null, qty integer not null default 0, price numeric(14,4), f float8,
    ok boolean, tags text[], doc jsonb, at timestamptz, d date, b bytea, u uuid, iv interval, r int4range,
    secret text, note text);
  create table w.ev (id integer, region text, v integer not null default 0, payload jsonb, amount numeric,
    primary key (id, region)) partition by list (region);
  create table w.ev_eu partition of w.ev for values in ('eu');
  create table w.ev_us partition of w.ev for values in ('us');
  create table w.ev_ap partition of w.ev for values in ('ap');
  create table w.parent (id integer primary key, name text);
  create table w.child (id integer primary key, parent_id integer not null references w.parent on delete cascade, v text);
  create table w.scratch (id integer primary key, v text);
  -- The whole old row in the WAL, to compare with the trail's old row.
  alter table w.items replica identity full;
  alter table w.ev_eu replica identity full;
  alter table w.ev_us replica identity full;
  alter table w.ev_ap replica identity full;
  alter table w.parent replica identity full;
  alter table w.child replica identity full;
  alter table w.scratch replica identity full;
  select audit.enable_tracking('w.items', excluded_columns => '{note}', masked_columns => '{secret}');
  select audit.enable_tracking('w.ev');
  select audit.enable_tracking('w.parent');
  select audit.enable_tracking('w.child');
  select audit.enable_tracking('w.scratch');
`;

/** Columns left out of the trail, and masked in it, by table. */
export const excluded: Record<string, string[]> = { items: ["note"] };
export const masked: Record<string, string[]> = { items: ["secret"] };
/** Tables whose rows move between partitions, and which partition a row is in. */
export const partitionOf: Record<string, (row: Record<string, string | null>) => string> = {
  ev: (row) => `ev_${row.region}`,
};

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What the oracle needs to know of one transaction the workload ran. */
export interface TxRecord {
  xid: number;
  committed: boolean;
  userId: string | null;
  requestId: string | null;
}

export interface WorkloadOptions {
  url: string;
  seed: number;
  clients: number;
  transactions: number;
}

const pick = <T>(rnd: () => number, values: readonly T[]): T => values[Math.floor(rnd() * values.length)]!;

// Values chosen to catch loss: quotes, backslashes, non-ASCII, JSON null vs SQL NULL, NaN, infinities, -0,
// array bounds, empty ranges.
const texts = ["plain", "it's", 'say "hi"', "back\\slash", "tab\there", "ünïcødé ☃", "", "line\nbreak", "{not,an,array}", "null"];
const prices = ["0", "1.5000", "-0.0001", "NaN", "1234567890.1234", "1.0", null];
const floats = ["0", "-0", "NaN", "Infinity", "-Infinity", "1e-300", "3.141592653589793", "0.1", null];
const tagLists = ["{}", "{a,b}", '{"x y",NULL}', "[0:1]={a,b}", '{"with,comma","q\\"uote"}', null];
const docs = ['{"a": 1}', "null", '"s"', "[1, 2.50]", '{"k": {"n": null}}', '{"b": true, "a": [1, "x"]}', null];
const times = ["infinity", "-infinity", "2026-01-01 12:00:00.123456+02", "1999-12-31 23:59:59+00", null];
const dates = ["2026-02-28", "infinity", "0044-03-15 BC", null];
const byteas = ["\\x00ff", "\\x", "\\x5c27", null];
const intervals = ["1 day 02:03:04", "-1 mons", "00:00:00.000001", null];
const ranges = ["[1,5)", "empty", "(,3]", null];
const regions = ["eu", "us", "ap"] as const;

function uuid(rnd: () => number): string {
  const hex = Array.from({ length: 32 }, () => Math.floor(rnd() * 16).toString(16)).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const itemColumns = ["id", "sku", "qty", "price", "f", "ok", "tags", "doc", "at", "d", "b", "u", "iv", "r", "secret", "note"];
const itemTypes = ["bigint", "text", "integer", "numeric", "float8", "boolean", "text[]", "jsonb", "timestamptz", "date", "bytea", "uuid", "interval", "int4range", "text", "text"];

function itemValues(rnd: () => number, id: number): (string | null)[] {
  return [String(id), pick(rnd, texts) + id, String(Math.floor(rnd() * 100)), pick(rnd, prices), pick(rnd, floats),
    pick(rnd, ["true", "false", null]), pick(rnd, tagLists), pick(rnd, docs), pick(rnd, times), pick(rnd, dates),
    pick(rnd, byteas), rnd() < 0.2 ? null : uuid(rnd), pick(rnd, intervals), pick(rnd, ranges), pick(rnd, texts), pick(rnd, texts)];
}

/** VALUES rows with typed parameters, starting at $first. */
function valuesSql(rows: (string | null)[][], types: string[], first = 1): string {
  let n = first;
  return rows.map((row) => `(${row.map((_, i) => `$${n++}::${types[i]}`).join(", ")})`).join(", ");
}

function copyText(value: string | null): string {
  if (value === null) return "\\N";
  return value.replace(/\\/g, "\\\\").replace(/\t/g, "\\t").replace(/\n/g, "\\n").replace(/\r/g, "\\r");
}

/** One client's writes: each op is one or a few statements inside the current transaction. */
class Client {
  private next = 0;
  private readonly db: pg.Client;
  private readonly rnd: () => number;
  private readonly index: number;
  private readonly clients: number;
  constructor(db: pg.Client, rnd: () => number, index: number, clients: number) {
    this.db = db;
    this.rnd = rnd;
    this.index = index;
    this.clients = clients;
  }

  /** A new id owned by this client (ids of different clients never meet, so clients do not deadlock on rows). */
  private id(): number {
    return this.index + this.clients * ++this.next + 1000;
  }

  private async own(table: string, limit: number): Promise<number[]> {
    const { rows } = await this.db.query<{ id: number }>(
      `select distinct id::int as id from w.${table} where id % $1 = $2 order by id`, [this.clients, this.index]);
    const ids = rows.map((r) => r.id);
    const chosen: number[] = [];
    while (chosen.length < limit && ids.length) chosen.push(...ids.splice(Math.floor(this.rnd() * ids.length), 1));
    return chosen;
  }

  async op(): Promise<void> {
    const rnd = this.rnd;
    const kind = pick(rnd, ["insert", "insert", "update", "update", "delete", "upsert", "copy", "cte", "key", "ev_insert", "ev_insert",
      "ev_move", "ev_merge", "ev_merge", "ev_merge_update", "ev_merge_cte", "ev_leaf", "family", "family_delete", "scratch", "truncate"] as const);
    switch (kind) {
      case "insert": {
        const rows = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => itemValues(rnd, this.id()));
        await this.db.query(`insert into w.items (${itemColumns}) values ${valuesSql(rows, itemTypes)}`, rows.flat());
        return;
      }
      case "update": {
        const ids = await this.own("items", 1 + Math.floor(rnd() * 3));
        if (!ids.length) return;
        const v = itemValues(rnd, 0);
        const [set, params] = pick(rnd, [
          ["qty = qty + 1", []],
          ["price = $2::numeric, f = $3::float8, tags = $4::text[]", [v[3], v[4], v[6]]],
          ["doc = $2::jsonb, at = $3::timestamptz, d = $4::date", [v[7], v[8], v[9]]],
          ["b = $2::bytea, iv = $3::interval, r = $4::int4range, ok = not ok, u = $5::uuid", [v[10], v[12], v[13], v[11]]],
          ["secret = $2, note = $3", [v[14], v[15]]],
          ["note = $2", [v[15]]], // only an excluded column changes: no audit row
          ["sku = sku", []], // nothing changes: no audit row
        ] as const);
        await this.db.query(`update w.items set ${set} where id = any ($1::bigint[])`, [ids, ...params]);
        return;
      }
      case "delete": {
        const ids = await this.own("items", 1 + Math.floor(rnd() * 2));
        await this.db.query("delete from w.items where id = any ($1::bigint[])", [ids]);
        return;
      }
      case "upsert": {
        const existing = await this.own("items", 2);
        const rows = [...existing, this.id()].map((id) => itemValues(rnd, id));
        await this.db.query(`insert into w.items (${itemColumns}) values ${valuesSql(rows, itemTypes)}
            on conflict (id) do ${rnd() < 0.7 ? "update set qty = w.items.qty + excluded.qty, secret = excluded.secret, doc = excluded.doc" : "nothing"}`, rows.flat());
        return;
      }
      case "copy": {
        const rows = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => itemValues(rnd, this.id()));
        const stream = this.db.query(copyFrom(`copy w.items (${itemColumns}) from stdin`));
        await pipeline(Readable.from(rows.map((row) => row.map(copyText).join("\t") + "\n")), stream);
        return;
      }
      case "cte": {
        const [id] = await this.own("items", 1);
        if (id === undefined) return;
        await this.db.query(`with d as (delete from w.items where id = $1 returning *)
            insert into w.items (${itemColumns}) select $2, sku || '!', qty, price, f, ok, tags, doc, at, d, b, u, iv, r, secret, note from d`,
          [id, this.id()]);
        return;
      }
      case "key": {
        const [id] = await this.own("items", 1);
        if (id === undefined) return;
        await this.db.query("update w.items set id = $2, qty = qty + 1 where id = $1", [id, this.id()]);
        return;
      }
      case "ev_insert": {
        const rows = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () =>
          [String(this.id()), pick(rnd, regions), String(Math.floor(rnd() * 10)), pick(rnd, docs), pick(rnd, prices)]);
        await this.db.query(`insert into w.ev (id, region, v, payload, amount) values ${valuesSql(rows, ["integer", "text", "integer", "jsonb", "numeric"])}`, rows.flat());
        return;
      }
      case "ev_move": {
        const ids = await this.own("ev", 2);
        await this.db.query("update w.ev set region = $2, v = v + 1 where id = any ($1::int[])", [ids, pick(rnd, regions)]);
        return;
      }
      case "ev_merge": {
        // Every action: move or change matched rows, delete some, insert the unmatched.
        const ids = await this.own("ev", 3);
        const source = [...ids, this.id()].map((id) => [String(id), pick(rnd, regions), pick(rnd, ["del", "upd", "upd"])]);
        await this.db.query(`merge into w.ev e using (values ${valuesSql(source, ["integer", "text", "text"])}) s(id, region, act) on e.id = s.id
            when matched and s.act = 'del' then delete
            when matched then update set region = s.region, v = e.v + 1, payload = '{"merged": true}'
            when not matched then insert (id, region, v) values (s.id, s.region, 0)`, source.flat());
        return;
      }
      case "ev_merge_update": {
        const ids = await this.own("ev", 3);
        const source = ids.map((id) => [String(id), pick(rnd, regions)]);
        if (!source.length) return;
        await this.db.query(`merge into w.ev e using (values ${valuesSql(source, ["integer", "text"])}) s(id, region) on e.id = s.id
            when matched and e.v > 50 then do nothing
            when matched then update set region = s.region, amount = coalesce(e.amount, 0) + 1`, source.flat());
        return;
      }
      case "ev_merge_cte": {
        // A write to the same table in WITH shares the MERGE's transition tables and statement triggers.
        const [gone, ...ids] = await this.own("ev", 3);
        if (gone === undefined) return;
        const source = [...ids, this.id()].map((id) => [String(id), pick(rnd, regions)]);
        const write = pick(rnd, ["delete from w.ev where id = $1", "update w.ev set v = v + 1 where id = $1",
                                 "insert into w.ev (id, region) values ($1, 'eu')"]);
        await this.db.query(`with w as (${write} returning 1)
            merge into w.ev e using (values ${valuesSql(source, ["integer", "text"], 2)}) s(id, region) on e.id = s.id
            when matched then update set region = s.region
            when not matched then insert (id, region) values (s.id, s.region)`,
          [write.startsWith("insert") ? this.id() : gone, ...source.flat()]);
        return;
      }
      case "ev_leaf": {
        const region = pick(rnd, regions);
        if (rnd() < 0.5) {
          await this.db.query(`insert into w.ev_${region} (id, region, v) values ($1, $2, 1)`, [this.id(), region]);
        } else {
          await this.db.query(`update w.ev_${region} set v = v + 1 where id % $1 = $2`, [this.clients, this.index]);
        }
        return;
      }
      case "family": {
        const parent = this.id();
        await this.db.query("insert into w.parent values ($1, $2)", [parent, pick(rnd, texts)]);
        const children = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => [String(this.id()), String(parent), pick(rnd, texts)]);
        await this.db.query(`insert into w.child values ${valuesSql(children, ["integer", "integer", "text"])}`, children.flat());
        return;
      }
      case "family_delete": {
        const [parent] = await this.own("parent", 1);
        await this.db.query("delete from w.parent where id = $1", [parent ?? -1]); // ON DELETE CASCADE to w.child
        return;
      }
      case "scratch": {
        await this.db.query("insert into w.scratch values ($1, $2), ($3, $4)", [this.id(), pick(rnd, texts), this.id(), null]);
        return;
      }
      case "truncate": {
        const which = rnd();
        if (which < 0.3) {
          await this.db.query("truncate w.scratch");
        } else if (which < 0.4) {
          await this.db.query("truncate w.ev"); // a partitioned table: one TRUNCATE row
        } else if (which < 0.5) {
          // One partition alone is refused (its rows would vanish unaudited); the transaction goes on.
          await this.db.query("savepoint leaf");
          const refused = await this.db.query("truncate w.ev_eu").then(() => null, (error: Error) => error);
          if (!refused?.message.includes("is a partition of the tracked table w.ev")) throw new Error(`truncate of a partition was not refused: ${refused}`);
          await this.db.query("rollback to savepoint leaf");
        }
        return;
      }
    }
  }
}

/** Runs the workload; returns every transaction it began, committed or not. */
export async function runWorkload(options: WorkloadOptions): Promise<TxRecord[]> {
  const records: TxRecord[] = [];
  // Every client runs to its end (or its first unexpected error) before the first error is reported.
  const outcomes = await Promise.allSettled(Array.from({ length: options.clients }, async (_, index) => {
    const rnd = random(options.seed * 1000 + index);
    const db = new pg.Client({ connectionString: options.url });
    db.on("error", () => {}); // a server stopped under it is reported by the query that fails
    await db.connect();
    const client = new Client(db, rnd, index, options.clients);
    try {
      for (let n = 0; n < options.transactions; n++) {
        const shape = rnd();
        const withContext = shape < 0.9;
        const userId = withContext ? `user-${index}` : null;
        const requestId = withContext ? `req-${options.seed}-${index}-${n}` : null;
        let xid = 0;
        try {
          await db.query("begin");
          xid = Number((await db.query<{ x: string }>("select txid_current() as x")).rows[0]!.x);
          if (withContext) await db.query("select audit.set_context(user_id => $1, request_id => $2)", [userId, requestId]);
          await client.op();
          if (shape < 0.15) {
            // A savepoint rolled back to: its writes are gone, the rest commits.
            await db.query("savepoint s");
            await client.op();
            await db.query("rollback to savepoint s");
          }
          if (rnd() < 0.6) await client.op();
          if (shape > 0.82) {
            await db.query("rollback");
            records.push({ xid, committed: false, userId, requestId });
          } else {
            await db.query("commit");
            records.push({ xid, committed: true, userId, requestId });
          }
        } catch (error) {
          // Deadlocks and lock timeouts between clients (TRUNCATE) roll a transaction back; that is part of the test.
          await db.query("rollback").catch(() => undefined);
          if (!/deadlock|could not serialize|canceling statement/.test(String(error))) throw error;
          records.push({ xid, committed: false, userId, requestId });
        }
      }
    } finally {
      await db.end();
    }
  }));
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
  if (failed) throw failed.reason;
  return records;
}
