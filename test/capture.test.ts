// Capture: every kind of write to a tracked table yields exactly the audit rows it should.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { from as copyFrom } from "pg-copy-streams";
import { auditRowsOf, countAuditRows, createTestDatabase, inTransaction, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create schema shop;
    create table shop.items (id integer primary key, sku text not null unique, qty integer not null default 0, note text);
    select audit.enable_tracking('shop.items');
  `);
});
afterAll(async () => db?.drop());

describe("single-row writes", () => {
  test("INSERT, UPDATE and DELETE record exact old_value, new_value and changes", async () => {
    await db.pool.query(`
      create table shop.single (id integer primary key, name text, price numeric(8,2), tags text[]);
      select audit.enable_tracking('shop.single');
      insert into shop.single values (1, 'pen', 1.50, '{blue}');
      update shop.single set price = 2.00, tags = '{blue,red}' where id = 1;
      delete from shop.single where id = 1;
    `);
    expect(await auditRowsOf(db.pool, "shop.single")).toEqual([
      {
        entity_schema: "shop", entity_name: "single", entity_id: "1", action: "INSERT",
        old_value: null,
        new_value: { id: 1, name: "pen", price: 1.5, tags: ["blue"] },
        changes: null,
      },
      {
        entity_schema: "shop", entity_name: "single", entity_id: "1", action: "UPDATE",
        old_value: { id: 1, name: "pen", price: 1.5, tags: ["blue"] },
        new_value: { id: 1, name: "pen", price: 2.0, tags: ["blue", "red"] },
        changes: { price: { old: 1.5, new: 2.0 }, tags: { old: ["blue"], new: ["blue", "red"] } },
      },
      {
        entity_schema: "shop", entity_name: "single", entity_id: "1", action: "DELETE",
        old_value: { id: 1, name: "pen", price: 2.0, tags: ["blue", "red"] },
        new_value: null,
        changes: null,
      },
    ]);
  });

  test("a one-row UPDATE (direct pairing) records exactly what the same change records inside a bulk UPDATE", async () => {
    await db.pool.query(`
      create table shop.paired (id integer primary key, name text, secret text, pin text, qty integer);
      select audit.enable_tracking('shop.paired', excluded_columns => array['secret'], masked_columns => array['pin']);
      insert into shop.paired select g, 'item', 's' || g, 'p' || g, 1 from generate_series(1, 3) g;
      update shop.paired set qty = 2, pin = 'new', name = 'renamed' where id = 1;
      update shop.paired set qty = 2, pin = 'new', name = 'renamed' where id in (2, 3);
      update shop.paired set id = 10 where id = 1;
    `);
    const updates = (await auditRowsOf(db.pool, "shop.paired")).filter((r) => r.action === "UPDATE");
    const shape = ({ entity_id: _id, old_value, new_value, ...rest }: typeof updates[number]) =>
      ({ ...rest, old_value: { ...old_value, id: 0 }, new_value: { ...new_value, id: 0 } });
    expect(updates).toHaveLength(4);
    expect(shape(updates[1]!)).toEqual(shape(updates[0]!));
    expect(shape(updates[2]!)).toEqual(shape(updates[0]!));
    expect(updates[0]).toEqual({
      entity_schema: "shop", entity_name: "paired", entity_id: "1", action: "UPDATE",
      old_value: { id: 1, name: "item", pin: "[masked]", qty: 1 },
      new_value: { id: 1, name: "renamed", pin: "[masked]", qty: 2 },
      changes: { name: { old: "item", new: "renamed" }, pin: { old: "[masked]", new: "[masked]" }, qty: { old: 1, new: 2 } },
    });
    // A one-row key change, through the direct pairing, keeps the old key too.
    const { rows } = await db.pool.query(`select entity_id, old_entity_id from audit_private.log_entries
      where table_id = (select id from audit_private.tables where table_name = 'paired') and action = 'U' order by id desc limit 1`);
    expect(rows).toEqual([{ entity_id: "10", old_entity_id: "1" }]);
  });

  test("a no-op UPDATE writes nothing", async () => {
    await db.pool.query(`
      create table shop.noop (id integer primary key, v text);
      select audit.enable_tracking('shop.noop');
      insert into shop.noop values (1, 'a'), (2, null);
      update shop.noop set v = v;
      update shop.noop set v = null where id = 2;
      update shop.noop set v = 'b' where id = 99; -- matches no row: the single-row path runs over nothing
    `);
    expect(await countAuditRows(db.pool, "shop.noop", "UPDATE")).toBe(0);
    expect(await countAuditRows(db.pool, "shop.noop")).toBe(2);
  });
});

describe("bulk SQL", () => {
  const N = 100_000;

  test(`INSERT ... SELECT, UPDATE ... FROM and DELETE of ${N} rows: one audit row per changed row`, async () => {
    await db.pool.query(`
      create table shop.bulk (id integer primary key, v integer not null, label text);
      create table shop.bulk_source (id integer primary key, bump integer);
      select audit.enable_tracking('shop.bulk');
      insert into shop.bulk select g, g, 'row ' || g from generate_series(1, ${N}) g;
      insert into shop.bulk_source select g, 1 from generate_series(1, ${N}) g where g % 2 = 0;
      update shop.bulk b set v = b.v + s.bump from shop.bulk_source s where s.id = b.id;
      delete from shop.bulk;
    `);
    const { rows } = await db.pool.query(`
      select action, count(*)::int as n, count(distinct entity_id)::int as ids,
             bool_and(case action
               when 'INSERT' then (new_value->>'v')::int = entity_id::int
               when 'UPDATE' then (changes->'v'->>'new')::int = entity_id::int + 1 and changes ?& array['v'] and jsonb_typeof(changes) = 'object' and (select count(*) from jsonb_object_keys(changes)) = 1
               when 'DELETE' then (old_value->>'v')::int = entity_id::int + (1 - entity_id::int % 2) * 0 + (case when entity_id::int % 2 = 0 then 1 else 0 end)
             end) as exact
      from audit.log where entity_name = 'bulk' group by action order by action`);
    expect(rows).toEqual([
      { action: "DELETE", n: N, ids: N, exact: true },
      { action: "INSERT", n: N, ids: N, exact: true },
      { action: "UPDATE", n: N / 2, ids: N / 2, exact: true },
    ]);
  });

  test("COPY FROM records every copied row", async () => {
    const client = await db.pool.connect();
    try {
      const lines = Array.from({ length: 1000 }, (_, i) => `${10_000 + i}\tCOPY-${i}\t${i}\t\\N\n`);
      await pipeline(Readable.from(lines), client.query(copyFrom("copy shop.items (id, sku, qty, note) from stdin")));
    } finally {
      client.release();
    }
    const { rows } = await db.pool.query(
      `select count(*)::int as n, min(entity_id::int) as lo, max(entity_id::int) as hi,
              bool_and(new_value = jsonb_build_object('id', entity_id::int, 'sku', 'COPY-' || (entity_id::int - 10000), 'qty', entity_id::int - 10000, 'note', null)) as exact
         from (select * from audit.log where entity_name = 'items' and action = 'INSERT' offset 0) l
        where entity_id::int >= 10000`,
    );
    expect(rows[0]).toEqual({ n: 1000, lo: 10_000, hi: 10_999, exact: true });
  });

  test("MERGE records its updates, inserts and deletes", async () => {
    await db.pool.query(`
      create table shop.stock (id integer primary key, qty integer not null);
      select audit.enable_tracking('shop.stock');
      insert into shop.stock values (1, 10), (2, 20), (3, 30);
      create temp table incoming (id integer, qty integer);
      insert into incoming values (1, 11), (2, 0), (4, 40);
      merge into shop.stock s using incoming i on s.id = i.id
        when matched and i.qty = 0 then delete
        when matched then update set qty = i.qty
        when not matched then insert values (i.id, i.qty);
    `);
    const rows = (await auditRowsOf(db.pool, "shop.stock")).slice(3);
    expect(rows.map((r) => [r.action, r.entity_id, r.changes ?? r.new_value ?? r.old_value]).sort()).toEqual(
      [
        ["DELETE", "2", { id: 2, qty: 20 }],
        ["INSERT", "4", { id: 4, qty: 40 }],
        ["UPDATE", "1", { qty: { old: 10, new: 11 } }],
      ].sort(),
    );
  });

  test("INSERT ... ON CONFLICT DO UPDATE records an INSERT for new keys and an UPDATE for existing ones", async () => {
    await db.pool.query(`
      create table shop.upsert (id integer primary key, v text);
      select audit.enable_tracking('shop.upsert');
      insert into shop.upsert values (1, 'one');
      insert into shop.upsert values (1, 'uno'), (2, 'dos') on conflict (id) do update set v = excluded.v;
    `);
    const rows = await auditRowsOf(db.pool, "shop.upsert");
    expect(rows.map((r) => [r.action, r.entity_id, r.changes ?? r.new_value])).toEqual([
      ["INSERT", "1", { id: 1, v: "one" }],
      // PostgreSQL fires the statement's UPDATE capture before its INSERT capture.
      ["UPDATE", "1", { v: { old: "one", new: "uno" } }],
      ["INSERT", "2", { id: 2, v: "dos" }],
    ]);
  });

  test("ON DELETE CASCADE into a tracked child records the child rows", async () => {
    await db.pool.query(`
      create table shop.orders (id integer primary key);
      create table shop.order_lines (order_id integer references shop.orders on delete cascade, line integer,
                                     primary key (order_id, line));
      select audit.enable_tracking('shop.orders');
      select audit.enable_tracking('shop.order_lines');
      insert into shop.orders values (1), (2);
      insert into shop.order_lines values (1, 1), (1, 2), (2, 1);
      delete from shop.orders where id = 1;
    `);
    const deletes = (await auditRowsOf(db.pool, "shop.order_lines")).filter((r) => r.action === "DELETE");
    expect(deletes.map((r) => r.entity_id).sort()).toEqual(["[1, 1]", "[1, 2]"]);
    expect(deletes[0]!.old_value).toEqual({ order_id: 1, line: deletes[0]!.entity_id === "[1, 1]" ? 1 : 2 });
  });
});

describe("keys", () => {
  test("an UPDATE that changes the primary key pairs each old row with its new row", async () => {
    await db.pool.query(`
      create table shop.rekey (id integer primary key, tag text);
      select audit.enable_tracking('shop.rekey');
      insert into shop.rekey select g, 't' || g from generate_series(1, 500) g;
      update shop.rekey set id = id + 1000;
      update shop.rekey set id = 1, tag = 'single' where id = 1001;
    `);
    const { rows } = await db.pool.query(`
      select count(*)::int as n,
             bool_and((old_value->>'id')::int + 1000 = entity_id::int and old_value->>'tag' = new_value->>'tag'
                      and changes = jsonb_build_object('id', jsonb_build_object('old', (old_value->>'id')::int, 'new', entity_id::int))) as paired
      from (select * from audit.log where entity_name = 'rekey' and action = 'UPDATE' offset 0) l
      -- (offset 0: filter on the table first, so ::int never sees another table's key)
      where entity_id::int > 1000`);
    expect(rows[0]).toEqual({ n: 500, paired: true });
    const last = (await auditRowsOf(db.pool, "shop.rekey")).at(-1)!;
    expect(last).toMatchObject({
      action: "UPDATE", entity_id: "1",
      changes: { id: { old: 1001, new: 1 }, tag: { old: "t1", new: "single" } },
    });
  });

  test("a composite primary key becomes a JSON array entity id, in key order", async () => {
    await db.pool.query(`
      create table shop.prices (region text, sku_id integer, amount numeric, primary key (sku_id, region));
      select audit.enable_tracking('shop.prices');
      insert into shop.prices values ('eu', 42, 9.5);
      update shop.prices set amount = 10 where sku_id = 42;
    `);
    const rows = await auditRowsOf(db.pool, "shop.prices");
    expect(rows.map((r) => [r.action, r.entity_id])).toEqual([
      ["INSERT", '[42, "eu"]'],
      ["UPDATE", '[42, "eu"]'],
    ]);
  });
});

describe("partitioned application tables", () => {
  test("writes through the parent, including an UPDATE that moves a row to another partition", async () => {
    await db.pool.query(`
      create table shop.events (id integer, region text, payload text, primary key (id, region)) partition by list (region);
      create table shop.events_eu partition of shop.events for values in ('eu');
      create table shop.events_us partition of shop.events for values in ('us');
      select audit.enable_tracking('shop.events');
      insert into shop.events values (1, 'eu', 'a'), (2, 'us', 'b');
      update shop.events set region = 'us', payload = 'moved' where id = 1;
      delete from shop.events_us where id = 2;
    `);
    const rows = await auditRowsOf(db.pool, "shop.events");
    expect(rows.map((r) => [r.action, r.entity_id, r.changes])).toEqual([
      ["INSERT", '[1, "eu"]', null],
      ["INSERT", '[2, "us"]', null],
      ["UPDATE", '[1, "us"]', { region: { old: "eu", new: "us" }, payload: { old: "a", new: "moved" } }],
      // Straight into a partition: recorded under the tracked table (test/partitions-capture.test.ts has the rest).
      ["DELETE", '[2, "us"]', null],
    ]);
  });

  test("a partition cannot be tracked on its own; the error says what to do", async () => {
    await expect(db.pool.query("select audit.enable_tracking('shop.events_eu')")).rejects.toThrow(
      "audit.enable_tracking: shop.events_eu is a partition; track its partitioned parent instead",
    );
  });
});

describe("TRUNCATE", () => {
  test("records one row for the statement", async () => {
    await db.pool.query(`
      create table shop.scratch (id integer primary key);
      select audit.enable_tracking('shop.scratch');
      insert into shop.scratch select generate_series(1, 10);
      truncate shop.scratch;
    `);
    const rows = await auditRowsOf(db.pool, "shop.scratch");
    expect(rows.filter((r) => r.action === "INSERT")).toHaveLength(10);
    expect(rows.at(-1)).toEqual({
      entity_schema: "shop", entity_name: "scratch", entity_id: null, action: "TRUNCATE",
      old_value: null, new_value: null, changes: null,
    });
  });
});

describe("names and values", () => {
  test("mixed-case and quoted table and column names", async () => {
    await db.pool.query(`
      create schema "Sales Dept";
      create table "Sales Dept"."Order ""Items""" ("Id" integer primary key, "Unit Price" numeric, "select" text);
      select audit.enable_tracking('"Sales Dept"."Order ""Items"""');
      insert into "Sales Dept"."Order ""Items""" values (7, 1.5, 'x');
      update "Sales Dept"."Order ""Items""" set "Unit Price" = 2, "select" = 'y';
    `);
    const rows = await auditRowsOf(db.pool, 'Sales Dept.Order "Items"');
    expect(rows.map((r) => [r.entity_id, r.action, r.changes ?? r.new_value])).toEqual([
      ["7", "INSERT", { Id: 7, "Unit Price": 1.5, select: "x" }],
      ["7", "UPDATE", { "Unit Price": { old: 1.5, new: 2 }, select: { old: "x", new: "y" } }],
    ]);
  });

  test("NULLs, numeric, timestamptz, arrays, json, jsonb and large TOASTed values round-trip", async () => {
    await db.pool.query(`
      create table shop.kinds (
        id integer primary key, n numeric, big numeric, at timestamptz, d date, arr integer[], txt text[],
        j json, jb jsonb, blob text, nothing text, flag boolean, pt point);
      select audit.enable_tracking('shop.kinds');
      insert into shop.kinds values (1, 12.3400, 123456789012345678901234567890.123456789, '2026-03-01 12:34:56.789+02',
        '2026-02-28', '{1,NULL,3}', '{"a b",c}', '{"x": [1, 2]}', '{"y": {"z": null}}', repeat('lorem ipsum ', 50000),
        null, true, '(1,2)');
      update shop.kinds set j = '{"x": [1, 2, 3]}', pt = '(3,4)', blob = blob || '!', nothing = 'now set';
    `);
    const { rows } = await db.pool.query(`
      select l.new_value as audited, to_jsonb(k) as actual, l2.old_value as before_update, l2.changes,
             (l.new_value->>'big')::numeric = 123456789012345678901234567890.123456789 as big_exact
      from audit.log l, audit.log l2, shop.kinds k
      where l.entity_name = 'kinds' and l.action = 'INSERT' and l2.entity_name = 'kinds' and l2.action = 'UPDATE'`);
    const { audited, actual, before_update, changes, big_exact } = rows[0];
    expect(big_exact).toBe(true);
    expect(audited).toEqual(before_update);
    expect(audited).toMatchObject({
      n: 12.34, at: "2026-03-01T10:34:56.789+00:00", d: "2026-02-28", arr: [1, null, 3], txt: ["a b", "c"],
      // json keeps its exact text (spacing, key order, duplicate keys), so it is recorded as a string of it.
      j: '{"x": [1, 2]}', jb: { y: { z: null } }, nothing: null, flag: true, pt: "(1,2)",
    });
    expect(audited.blob).toHaveLength(600_000);
    expect(Object.keys(changes).sort()).toEqual(["blob", "j", "nothing", "pt"]);
    expect(changes.j).toEqual({ old: '{"x": [1, 2]}', new: '{"x": [1, 2, 3]}' });
    expect(changes.pt).toEqual({ old: "(1,2)", new: "(3,4)" });
    expect(changes.blob.new).toBe(`${"lorem ipsum ".repeat(50000)}!`);
    // The reconstructed new row is exactly the row now in the table.
    const { rows: after } = await db.pool.query(
      `select new_value - 'j' = (select to_jsonb(k) - 'j' from shop.kinds k) and new_value ->> 'j' = (select j::text from shop.kinds) as same
         from audit.log where entity_name = 'kinds' and action = 'UPDATE'`,
    );
    expect(after[0].same).toBe(true);
    expect(actual.id).toBe(1);
  });
});

describe("transactions", () => {
  test("ROLLBACK and ROLLBACK TO SAVEPOINT leave no audit rows", async () => {
    await db.pool.query(`create table shop.tx (id integer primary key); select audit.enable_tracking('shop.tx');`);
    const client = await db.pool.connect();
    try {
      await client.query("begin; insert into shop.tx values (1); rollback;");
      await client.query(`begin; insert into shop.tx values (2); savepoint s; insert into shop.tx values (3);
                          update shop.tx set id = 4 where id = 2; rollback to savepoint s; commit;`);
    } finally {
      client.release();
    }
    const rows = await auditRowsOf(db.pool, "shop.tx");
    expect(rows.map((r) => [r.action, r.entity_id])).toEqual([["INSERT", "2"]]);
  });

  test("an error in the audit path aborts the write instead of losing the audit row", async () => {
    await db.pool.query(`create table shop.fragile (id integer primary key); select audit.enable_tracking('shop.fragile');`);
    const error = await inTransaction(db.pool, async (client) => {
      // With no partition able to take the audit row, the audit insert fails...
      await client.query("alter table audit_private.log_entries detach partition audit.log_default");
      for (const { name } of (await client.query<{ name: string }>(
        "select partition_name as name from audit.partitions where not is_default")).rows) {
        await client.query(`alter table audit_private.log_entries detach partition audit.${name}`);
      }
      await client.query("savepoint before_write");
      const failure = await client.query("insert into shop.fragile values (1)").then(() => null, (e: Error) => e);
      await client.query("rollback to savepoint before_write");
      // ...and so does the business write: the row is not there.
      const { rows } = await client.query("select count(*)::int as n from shop.fragile");
      expect(rows[0].n).toBe(0);
      await client.query("rollback");
      await client.query("begin");
      return failure;
    });
    expect(error?.message).toMatch(/no partition of relation "log_entries" found for row/);
  });
});
