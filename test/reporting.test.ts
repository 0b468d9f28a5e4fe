// Reporting: point-in-time reconstruction, the per-field and per-day views, and history that survives
// being copied into another database (where every table has a different OID).
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { pipeline } from "node:stream/promises";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`create schema bank;
    create table bank.accounts (id integer primary key, balance integer not null, label text);
    select audit.enable_tracking('bank.accounts');`);
});
afterAll(async () => db?.drop());

/** A deterministic pseudo-random sequence, so a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

describe("row_as_of", () => {
  test("reconstructs every row exactly at every step of a long random history", async () => {
    const next = random(42);
    const ids = [1, 2, 3, 4, 5, 6, 7, 8];
    const snapshots: { at: string; rows: Map<number, unknown> }[] = [];
    const client = await db.pool.connect();
    try {
      for (let step = 0; step < 80; step++) {
        const { rows: present } = await client.query<{ id: number }>("select id from bank.accounts");
        const existing = present.map((r) => r.id);
        const absent = ids.filter((id) => !existing.includes(id));
        const pick = <T>(list: T[]) => list[Math.floor(next() * list.length)]!;
        const roll = next();
        if (step % 37 === 36) {
          await client.query("truncate bank.accounts");
        } else if (!existing.length || (roll < 0.3 && absent.length)) {
          await client.query("insert into bank.accounts values ($1, $2, $3)", [pick(absent), Math.floor(next() * 1000), `step ${step}`]);
        } else if (roll < 0.6) {
          await client.query("update bank.accounts set balance = balance + $2, label = $3 where id = $1",
            [pick(existing), Math.floor(next() * 100) - 50, next() < 0.2 ? null : `step ${step}`]);
        } else if (roll < 0.8 && absent.length) {
          await client.query("update bank.accounts set id = $2 where id = $1", [pick(existing), pick(absent)]);
        } else {
          await client.query("delete from bank.accounts where id = $1", [pick(existing)]);
        }
        const { rows: state } = await client.query("select id, to_jsonb(a) as row from bank.accounts a");
        const { rows: [{ at }] } = await client.query("select clock_timestamp()::text as at");
        snapshots.push({ at, rows: new Map(state.map((r) => [r.id, r.row])) });
      }
    } finally {
      client.release();
    }
    for (const { at, rows } of snapshots) {
      const { rows: rebuilt } = await db.pool.query(
        `select id, audit.row_as_of('bank.accounts', id::text, $1::timestamptz) as row from unnest($2::int[]) as id order by id`,
        [at, ids]);
      expect(rebuilt).toEqual(ids.map((id) => ({ id, row: rows.get(id) ?? null })));
    }
    // The history really had key changes and truncates in it.
    const { rows: [kinds] } = await db.pool.query(`select count(*) filter (where old_entity_id is not null)::int as key_changes,
        count(*) filter (where action = 'T')::int as truncates from audit_private.log_entries`);
    expect(kinds.key_changes).toBeGreaterThan(3);
    expect(kinds.truncates).toBe(2);
  });

  test("works across monthly partitions", async () => {
    for (const m of ["2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01"]) await db.pool.query("select audit.create_partition($1::date)", [m]);
    const { rows: [{ id: tableId }] } = await db.pool.query(`select id from audit_private.tables where table_name = 'accounts'`);
    await db.pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, old_entity_id, row_data, delta, db_user) values
        ('2025-01-10', 1, $1, 'I', '100', null, '{"id": 100, "balance": 5, "label": "jan"}', null, 'test'),
        ('2025-02-10', 2, $1, 'U', '100', null, '{"id": 100, "balance": 5, "label": "jan"}', '{"balance": 7}', 'test'),
        ('2025-03-10', 3, $1, 'U', '101', '100', '{"id": 100, "balance": 7, "label": "jan"}', '{"id": 101}', 'test'),
        ('2025-04-10', 4, $1, 'D', '101', null, '{"id": 101, "balance": 7, "label": "jan"}', null, 'test')`, [tableId]);
    const at = async (id: string, time: string) =>
      (await db.pool.query(`select audit.row_as_of('accounts', $1, $2::timestamptz) as row`, [id, time])).rows[0].row;
    expect(await at("100", "2025-01-01")).toBeNull();
    expect(await at("100", "2025-01-20")).toEqual({ id: 100, balance: 5, label: "jan" });
    expect(await at("100", "2025-02-10")).toEqual({ id: 100, balance: 7, label: "jan" });
    expect(await at("100", "2025-03-20")).toBeNull();
    expect(await at("101", "2025-03-20")).toEqual({ id: 101, balance: 7, label: "jan" });
    expect(await at("101", "2025-05-01")).toBeNull();
  });
});

describe("reporting views", () => {
  test("audit.changes and audit.activity_daily agree with counts from the raw rows", async () => {
    const { rows: [check] } = await db.pool.query(`
      select (select count(*) from audit.changes)::int as change_rows,
             (select coalesce(sum((select count(*) from jsonb_object_keys(delta))), 0) from audit_private.log_entries where action = 'U')::int as changed_fields,
             (select sum(changes) from audit.activity_daily)::int as daily_total,
             (select count(*) from audit.log)::int as log_total`);
    expect(check.change_rows).toBe(check.changed_fields);
    expect(check.daily_total).toBe(check.log_total);
    const { rows: byAction } = await db.pool.query(`
      select a.action, a.total::int, l.total::int as raw
      from (select action, sum(changes) as total from audit.activity_daily where entity_name = 'accounts' group by 1) a
      join (select action, count(*) as total from audit.log where entity_name = 'accounts' group by 1) l using (action)
      order by 1`);
    expect(byAction.length).toBe(4);
    for (const row of byAction) expect(row.total).toBe(row.raw);
    const { rows: fields } = await db.pool.query(`select distinct field from audit.changes where entity_name = 'accounts' order by 1`);
    expect(fields.map((f) => f.field)).toEqual(["balance", "id", "label"]);
  });

  test("activity_daily is the same before and after finished days are summarised, and a quarter reads the summary", async () => {
    const { rows: [{ id: tableId }] } = await db.pool.query(`select id from audit_private.tables where table_name = 'accounts'`);
    await db.pool.query(
      `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, user_id, db_user)
       select now() - (g % 20) * interval '1 day', g, $1, (array['I','D'])[1 + g % 2]::"char", g::text, '{}', 'u' || (g % 3), 'test'
       from generate_series(1, 600) g`, [tableId]);
    const read = async () => (await db.pool.query(
      `select day::text, entity_name, action, user_id, changes::int from audit.activity_daily order by 1, 2, 3, 4`)).rows;
    const raw = (await db.pool.query(
      `select (created_at at time zone 'UTC')::date::text as day, entity_name, action, user_id, count(*)::int as changes
         from audit.log group by 1, 2, 3, 4 order by 1, 2, 3, 4`)).rows;
    expect(await read()).toEqual(raw);
    const { rows: [{ written }] } = await db.pool.query(`select audit.summarize_activity() as written`);
    expect(written).toBeGreaterThan(0);
    expect(await read()).toEqual(raw);
    expect((await db.pool.query(`select audit.summarize_activity() as written`)).rows[0].written).toBe(0);
    // New rows today still show at once.
    await db.pool.query(`insert into bank.accounts values (500, 1, 'today')`);
    const today = (await read()).filter((r) => r.action === "INSERT" && r.day === new Date().toISOString().slice(0, 10));
    expect(today.reduce((sum, r) => sum + r.changes, 0)).toBeGreaterThan(0);
    const { rows: plan } = await db.pool.query(
      `explain (costs off) select * from audit.activity_daily where day >= current_date - 90 and day < current_date`);
    const text = plan.map((r) => r["QUERY PLAN"]).join("\n");
    // Finished days come from the summary; the trail is read only from where the summary stops.
    expect(text).toContain("activity_summary");
    expect(text).toMatch(/Subplans Removed: \d+/);
  });

  test("every column of the reporting views is documented (BI tools show these comments)", async () => {
    const { rows } = await db.pool.query(`
      select c.relname, a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relnamespace = 'audit'::regnamespace and c.relname in ('log', 'changes', 'activity_daily')
        and a.attnum > 0 and col_description(c.oid, a.attnum) is null`);
    expect(rows).toEqual([]);
  });
});

test("history survives being copied into another database, where every OID is different", async () => {
  const target = await createTestDatabase();
  try {
    // Different creation order and extra tables: the copies get different OIDs.
    await target.pool.query(`create table public.padding_1 (x int); create table public.padding_2 (x int);
      create schema bank; create table bank.accounts (id integer primary key, balance integer not null, label text);`);
    for (const table of ["audit_private.tables", "audit_private.log_entries"]) {
      const source = await db.pool.connect();
      const sink = await target.pool.connect();
      try {
        if (table === "audit_private.tables") await sink.query("delete from audit_private.tables");
        await pipeline(source.query(copyTo(`copy (select * from ${table}) to stdout`)), sink.query(copyFrom(`copy ${table} from stdin`)));
      } finally {
        source.release();
        sink.release();
      }
    }
    // As pg_dump does: sequences continue after the copied ids.
    await target.pool.query(`select setval(pg_get_serial_sequence('audit_private.tables', 'id'), (select max(id) from audit_private.tables));
      select setval('audit_private.log_id_seq', (select max(id) from audit_private.log_entries));
      select audit.enable_tracking('bank.accounts');`);
    const oid = async (pool: typeof db.pool) => (await pool.query(`select 'bank.accounts'::regclass::oid::int as oid`)).rows[0].oid;
    expect(await oid(target.pool)).not.toBe(await oid(db.pool));
    const read = async (pool: typeof db.pool) => (await pool.query(`
      select (select jsonb_agg(to_jsonb(h) order by h.id) from audit.entity_history('bank.accounts', '3') h) as history,
             (select jsonb_agg(audit.row_as_of('accounts', i::text, now()) order by i) from generate_series(1, 8) i) as now`)).rows[0];
    expect(await read(target.pool)).toEqual(await read(db.pool));
    // And capture continues under the same table id.
    await target.pool.query(`insert into bank.accounts values (99, 1, 'after copy')`);
    const { rows } = await target.pool.query(`select entity_name from audit.log where entity_id = '99' and new_value->>'label' = 'after copy'`);
    expect(rows).toEqual([{ entity_name: "accounts" }]);
  } finally {
    await target.drop();
  }
});
