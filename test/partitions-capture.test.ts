// Partitioned tracked tables: a row a MERGE moves to another partition is one UPDATE, exactly as a plain
// UPDATE records it; writes straight into a partition are recorded under the tracked table.
// (Why MERGE needs this: docs/merge-partition-moves.md.)
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type pg from "pg";
import { countAuditRows, createTestDatabase, errorOf, inTransaction, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
/** Coverage problems about capture (not the calendar's: partitions ahead, unsealed days depend on the date). */
const captureCoverage = async () => (await db.pool.query(`select * from audit.coverage_problems(check_capture => true)
  where check_name in ('tracked_table_missing', 'capture_trigger_missing', 'capture_trigger_disabled', 'capture_outdated', 'foreign_capture_trigger')`)).rows;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

interface Row {
  action: string;
  entity_id: string | null;
  old_value: Record<string, unknown> | null;
  changes: Record<string, { old: unknown; new: unknown }> | null;
  statement_number: number | null;
  user_id: string | null;
  request_id: string | null;
}

/** The audit rows of a table in id order, with what the brief of a move must keep: entity, old row, changes, statement, context. */
async function rowsOf(client: pg.Pool | pg.PoolClient, table: string): Promise<Row[]> {
  const [schema, name] = table.split(".");
  const { rows } = await client.query<Row>(
    `select action, entity_id, old_value, changes, statement_number, user_id, request_id
       from audit.log where entity_schema = $1 and entity_name = $2 order by id`,
    [schema, name],
  );
  return rows;
}

/** A table partitioned by region, with a masked and an excluded column, tracked. */
async function makeEvents(name: string): Promise<void> {
  await db.pool.query(`
    create table mv.${name} (id integer, region text, v integer, secret text, note text, primary key (id, region))
      partition by list (region);
    create table mv.${name}_eu partition of mv.${name} for values in ('eu');
    create table mv.${name}_us partition of mv.${name} for values in ('us');
    select audit.enable_tracking('mv.${name}', excluded_columns => '{note}', masked_columns => '{secret}');
    insert into mv.${name} values (1, 'eu', 0, 's1', 'n'), (3, 'us', 0, 's3', 'n'), (4, 'eu', 0, 's4', 'n');
  `);
}

/** Runs `sql` in one transaction with an API-style context. */
async function asRequest(sql: string, request = "req-1"): Promise<void> {
  await inTransaction(db.pool, async (client) => {
    await client.query("select audit.set_context(user_id => 'u-7', request_id => $1)", [request]);
    await client.query(sql);
  });
}

const later = (rows: Row[]) => rows.slice(3); // after the three INSERTs of makeEvents

describe("MERGE moving rows between partitions", () => {
  beforeAll(async () => {
    await db.pool.query("create schema mv");
  });

  test("an UPDATE-only MERGE records the moved row as one UPDATE, the same as a plain UPDATE does", async () => {
    await makeEvents("a_merge");
    await makeEvents("a_update");
    await asRequest(`merge into mv.a_merge e using (values (1, 'us'), (3, 'us')) v(id, r) on e.id = v.id
                       when matched then update set region = v.r, v = e.v + 1`);
    await asRequest(`update mv.a_update e set region = v.r, v = e.v + 1 from (values (1, 'us'), (3, 'us')) v(id, r) where e.id = v.id`);
    const merged = later(await rowsOf(db.pool, "mv.a_merge"));
    const updated = later(await rowsOf(db.pool, "mv.a_update"));
    const move = {
      action: "UPDATE", entity_id: '[1, "us"]',
      old_value: { id: 1, region: "eu", v: 0, secret: "[masked]" },
      changes: { region: { old: "eu", new: "us" }, v: { old: 0, new: 1 } },
      statement_number: 1, user_id: "u-7", request_id: "req-1",
    };
    const stay = {
      action: "UPDATE", entity_id: '[3, "us"]',
      old_value: { id: 3, region: "us", v: 0, secret: "[masked]" },
      changes: { v: { old: 0, new: 1 } },
      statement_number: 1, user_id: "u-7", request_id: "req-1",
    };
    // The order differs (a plain UPDATE lists rows as it met them, the MERGE's moves come last); nothing else.
    expect(merged).toEqual([stay, move]);
    expect(updated).toEqual([move, stay]);
  });

  test("a MERGE with a move, a real DELETE and a real INSERT records UPDATE, DELETE and INSERT", async () => {
    await makeEvents("b");
    await asRequest(`merge into mv.b e using (values (1, 'us', 'move'), (4, 'eu', 'del'), (5, 'eu', 'new')) v(id, r, k) on e.id = v.id
                       when matched and v.k = 'del' then delete
                       when matched then update set region = v.r, v = e.v + 1, secret = 'changed'
                       when not matched then insert values (v.id, v.r, 0, 's5', 'n')`);
    expect(later(await rowsOf(db.pool, "mv.b"))).toEqual([
      { action: "DELETE", entity_id: '[4, "eu"]', old_value: { id: 4, region: "eu", v: 0, secret: "[masked]" }, changes: null,
        statement_number: 1, user_id: "u-7", request_id: "req-1" },
      // The masked column changed: recorded as changed, its value never.
      { action: "UPDATE", entity_id: '[1, "us"]', old_value: { id: 1, region: "eu", v: 0, secret: "[masked]" },
        changes: { region: { old: "eu", new: "us" }, v: { old: 0, new: 1 }, secret: { old: "[masked]", new: "[masked]" } },
        statement_number: 1, user_id: "u-7", request_id: "req-1" },
      { action: "INSERT", entity_id: '[5, "eu"]', old_value: null, changes: null,
        statement_number: 1, user_id: "u-7", request_id: "req-1" },
    ]);
    // The old entity id is kept for the key change, as for a plain UPDATE.
    const { rows } = await db.pool.query(
      `select l.entity_id, e.old_entity_id from audit.log l join audit_private.log_entries e using (id)
        where l.entity_name = 'b' and l.action = 'UPDATE'`);
    expect(rows).toEqual([{ entity_id: '[1, "us"]', old_entity_id: '[1, "eu"]' }]);
  });

  test("a plain UPDATE that moves rows records each once; moved, changed again and moved back in one transaction", async () => {
    await makeEvents("c");
    await inTransaction(db.pool, async (client) => {
      // One statement per query: statements of one query string share a number on a partitioned table (README).
      await client.query("update mv.c set region = 'us' where id in (1, 4)");
      await client.query("merge into mv.c e using (values (1)) v(id) on e.id = v.id when matched then update set v = 9");
      await client.query("merge into mv.c e using (values (1)) v(id) on e.id = v.id when matched then update set region = 'eu'");
      await client.query("update mv.c set region = 'us', v = 10 where id = 1");
    });
    const rows = later(await rowsOf(db.pool, "mv.c"));
    expect(rows.map((r) => [r.entity_id, r.changes, r.statement_number])).toEqual([
      ['[1, "us"]', { region: { old: "eu", new: "us" } }, 1],
      ['[4, "us"]', { region: { old: "eu", new: "us" } }, 1],
      ['[1, "us"]', { v: { old: 0, new: 9 } }, 2],
      ['[1, "eu"]', { region: { old: "us", new: "eu" } }, 3],
      ['[1, "us"]', { region: { old: "eu", new: "us" }, v: { old: 9, new: 10 } }, 4],
    ]);
  });

  test("upsert-style MERGE (update or insert), DO NOTHING, and a rolled-back savepoint", async () => {
    await makeEvents("d");
    await inTransaction(db.pool, async (client) => {
      await client.query(`merge into mv.d e using (values (1, 'us'), (8, 'us')) v(id, r) on e.id = v.id
                            when matched then update set region = v.r
                            when not matched then insert values (v.id, v.r, 0, 's', 'n')`);
      await client.query(`merge into mv.d e using (values (3, 'eu')) v(id, r) on e.id = v.id
                            when matched then do nothing`);
      await client.query("savepoint s");
      await client.query(`merge into mv.d e using (values (3, 'eu')) v(id, r) on e.id = v.id
                            when matched then update set region = v.r`);
      await client.query("rollback to savepoint s");
      await client.query(`merge into mv.d e using (values (4, 'us')) v(id, r) on e.id = v.id
                            when matched then update set region = v.r`);
    });
    expect(later(await rowsOf(db.pool, "mv.d")).map((r) => [r.action, r.entity_id, r.changes, r.statement_number])).toEqual([
      ["UPDATE", '[1, "us"]', { region: { old: "eu", new: "us" } }, 1],
      ["INSERT", '[8, "us"]', null, 1],
      ["UPDATE", '[4, "us"]', { region: { old: "eu", new: "us" } }, 2],
    ]);
    expect((await db.pool.query("select count(*)::int as n from audit_private.capture_notes")).rows).toEqual([{ n: 0 }]);
  });

  test("MERGE and UPDATE with writes to the same table in WITH (which share its transition tables and triggers)", async () => {
    await makeEvents("w");
    await inTransaction(db.pool, async (client) => {
      await client.query(`with d as (delete from mv.w where id = 4 returning 1)
                            merge into mv.w e using (values (1), (3)) v(id) on e.id = v.id when matched then update set region = 'eu'`);
      await client.query(`with u as (update mv.w set v = 9 where id = 3 returning 1)
                            merge into mv.w e using (values (1), (8)) v(id) on e.id = v.id
                            when matched then update set region = 'us' when not matched then insert values (v.id, 'eu', 0, 's', 'n')`);
      await client.query(`with i as (insert into mv.w values (9, 'us', 0, 's', 'n') returning 1)
                            merge into mv.w e using (values (1), (8)) v(id) on e.id = v.id
                            when matched and e.id = 8 then delete when matched then update set region = 'eu'`);
      await client.query(`with d as (delete from mv.w where id = 9 returning 1) update mv.w set region = 'us' where id = 1`);
    });
    expect(later(await rowsOf(db.pool, "mv.w")).map((r) => [r.action, r.entity_id, r.changes])).toEqual([
      ["UPDATE", '[3, "eu"]', { region: { old: "us", new: "eu" } }],
      ["DELETE", '[4, "eu"]', null],
      ["INSERT", '[8, "eu"]', null],
      ["UPDATE", '[3, "eu"]', { v: { old: 0, new: 9 } }],
      ["UPDATE", '[1, "us"]', { region: { old: "eu", new: "us" } }],
      ["DELETE", '[8, "eu"]', null],
      ["UPDATE", '[1, "eu"]', { region: { old: "us", new: "eu" } }],
      ["INSERT", '[9, "us"]', null],
      ["UPDATE", '[1, "us"]', { region: { old: "eu", new: "us" } }],
      ["DELETE", '[9, "us"]', null],
    ]);
    expect((await db.pool.query("select count(*)::int as n from audit_private.capture_notes")).rows).toEqual([{ n: 0 }]);
  });

  test("a MERGE that moves rows while a function it calls moves others of the same table", async () => {
    await makeEvents("f");
    await db.pool.query(`
      insert into mv.f values (10, 'eu', 0, 's', 'n'), (11, 'eu', 0, 's', 'n');
      create function mv.bump(i integer) returns integer language plpgsql as $$
      begin
        update mv.f set region = 'us' where id = i + 9;
        return i;
      end $$;
    `);
    await db.pool.query(`merge into mv.f e using (values (1), (2)) v(id) on e.id = v.id
                           when matched then update set region = 'us', v = mv.bump(v.id)`);
    expect(later(await rowsOf(db.pool, "mv.f")).filter((r) => r.action !== "INSERT").map((r) => [r.entity_id, r.changes])).toEqual([
      ['[10, "us"]', { region: { old: "eu", new: "us" } }],
      ['[1, "us"]', { region: { old: "eu", new: "us" }, v: { old: 0, new: 1 } }],
    ]);
    expect((await db.pool.query("select count(*)::int as n from audit_private.capture_notes")).rows).toEqual([{ n: 0 }]);
  });

  test("a session cannot forge a move: a DELETE and an INSERT under a forged setting stay a DELETE and an INSERT", async () => {
    await makeEvents("e");
    await db.pool.query(`grant usage on schema mv to cartop_user; grant select, insert, update, delete on mv.e to cartop_user`);
    await inTransaction(db.pool, async (client) => {
      await client.query("set local role cartop_user");
      await client.query(`merge into mv.e e using (values (4, 'del'), (6, 'new')) v(id, k) on e.id = v.id
                            and set_config('audit_private.moving', 'moved', true) is not null
                            when matched then delete
                            when not matched then insert values (v.id, 'us', 0, 's', 'n')`);
      await client.query(`delete from mv.e where id = 1 and set_config('audit_private.moving', 'mark', true) is not null`);
    });
    expect(later(await rowsOf(db.pool, "mv.e")).map((r) => [r.action, r.entity_id])).toEqual([
      ["DELETE", '[4, "eu"]'], ["INSERT", '[6, "us"]'], ["DELETE", '[1, "eu"]'],
    ]);
  });
});

describe("writes straight into a partition", () => {
  beforeAll(async () => {
    await db.pool.query(`
      create schema pw;
      create table pw.ev (id integer, region text, v integer, primary key (id, region)) partition by list (region);
      create table pw.ev_eu partition of pw.ev for values in ('eu');
      select audit.enable_tracking('pw.ev');
    `);
  });

  test("INSERT, UPDATE, DELETE and multi-row writes into a partition are recorded under the tracked table, once", async () => {
    await db.pool.query(`
      insert into pw.ev_eu values (1, 'eu', 0), (2, 'eu', 0);
      update pw.ev_eu set v = 5 where id = 1;
      delete from pw.ev_eu where id = 2;
      insert into pw.ev values (3, 'eu', 0);
    `);
    const { rows } = await db.pool.query(
      `select entity_name, action, entity_id, changes from audit.log where entity_schema = 'pw' order by id`);
    expect(rows).toEqual([
      { entity_name: "ev", action: "INSERT", entity_id: '[1, "eu"]', changes: null },
      { entity_name: "ev", action: "INSERT", entity_id: '[2, "eu"]', changes: null },
      { entity_name: "ev", action: "UPDATE", entity_id: '[1, "eu"]', changes: { v: { old: 0, new: 5 } } },
      { entity_name: "ev", action: "DELETE", entity_id: '[2, "eu"]', changes: null },
      { entity_name: "ev", action: "INSERT", entity_id: '[3, "eu"]', changes: null },
    ]);
  });

  test("partitions created or attached after tracking started, and a sub-partitioned one, are covered; a detached one is let go", async () => {
    await db.pool.query(`
      create table pw.ev_us partition of pw.ev for values in ('us');
      create table pw.ev_ap partition of pw.ev for values in ('ap', 'jp') partition by list (region);
      create table pw.ev_jp partition of pw.ev_ap for values in ('jp');
      create table pw.ev_ap1 (id integer, region text, v integer, primary key (id, region));
      alter table pw.ev_ap attach partition pw.ev_ap1 for values in ('ap');
      create table pw.ev_x partition of pw.ev for values in ('x');
      alter table pw.ev detach partition pw.ev_x;
    `);
    const before = Number((await db.pool.query("select count(*) from audit.log where entity_schema = 'pw'")).rows[0].count);
    await db.pool.query(`
      insert into pw.ev_us values (10, 'us', 0);
      insert into pw.ev_jp values (11, 'jp', 0);
      update pw.ev_ap set region = 'ap' where id = 11;
      insert into pw.ev_ap1 values (12, 'ap', 0);
      insert into pw.ev_x values (13, 'x', 0);
    `);
    const { rows } = await db.pool.query(
      `select entity_name, action, entity_id, changes from audit.log where entity_schema = 'pw' order by id offset $1`, [before]);
    expect(rows).toEqual([
      { entity_name: "ev", action: "INSERT", entity_id: '[10, "us"]', changes: null },
      { entity_name: "ev", action: "INSERT", entity_id: '[11, "jp"]', changes: null },
      { entity_name: "ev", action: "UPDATE", entity_id: '[11, "ap"]', changes: { region: { old: "jp", new: "ap" } } },
      { entity_name: "ev", action: "INSERT", entity_id: '[12, "ap"]', changes: null },
    ]);
    expect((await db.pool.query(`select tgname from pg_trigger where tgrelid = 'pw.ev_x'::regclass`)).rows).toEqual([]);
    expect((await db.pool.query(
      `select triggers_installed, triggers_active, triggers_expected from audit.tracked_tables where schema_name = 'pw'`)).rows)
      .toEqual([{ triggers_installed: 48, triggers_active: 48, triggers_expected: 48 }]); // 8 on each of 6 relations
    expect(await captureCoverage()).toEqual([]);
  });

  test("a partition is truncated only with its table; alone it is refused with what to do instead", async () => {
    const error = await errorOf(db.pool.query("truncate pw.ev_us"));
    expect(error.message).toBe("cartop-audit: pw.ev_us is a partition of the tracked table pw.ev; truncating it alone would remove rows without audit rows");
    expect((await db.pool.query("select count(*)::int as n from pw.ev_us")).rows).toEqual([{ n: 1 }]);
    await db.pool.query("truncate pw.ev");
    // Naming a partition before its table is still a TRUNCATE of the whole table.
    await db.pool.query("insert into pw.ev_us values (20, 'us', 0)");
    await db.pool.query("truncate pw.ev_us, pw.ev");
    const { rows } = await db.pool.query(
      `select action from audit.log where entity_schema = 'pw' order by id desc limit 4`);
    expect(rows.map((r) => r.action)).toEqual(["TRUNCATE", "INSERT", "TRUNCATE", "INSERT"]);
    // The note that let its partitions' triggers pass is gone with the last of them.
    expect((await db.pool.query("select count(*)::int as n from audit_private.capture_notes")).rows).toEqual([{ n: 0 }]);
  });

  test("a capture trigger dropped or disabled on a partition: put back, or reported by coverage", async () => {
    await db.pool.query("drop trigger _900_audit_insert on pw.ev_us");
    expect((await db.pool.query(
      `select count(*)::int as n from pg_trigger where tgrelid = 'pw.ev_us'::regclass and tgname = '_900_audit_insert'`)).rows).toEqual([{ n: 1 }]);
    await db.pool.query("alter table pw.ev_us disable trigger _900_audit_delete");
    await db.pool.query("alter table pw.ev_us disable trigger _900_audit_move_mark"); // a clone of the table's
    // ALTER TABLE re-attaches capture (CREATE OR REPLACE TRIGGER brings it back enabled).
    expect(await captureCoverage()).toEqual([]);
    const refused = await errorOf(db.pool.query(
      `create trigger _900_audit_update after update on pw.ev_us for each row execute function audit_private.capture_update_${
        (await db.pool.query("select id from audit_private.tables where schema_name = 'pw'")).rows[0].id}()`));
    expect(refused.message).toMatch(/^trigger "_900_audit_update" for relation "ev_us" already exists$|capture triggers cannot be renamed, replaced or copied/);
  });
});

describe("the move notes cannot be forged or misused", () => {
  test("an application role cannot write capture notes", async () => {
    await inTransaction(db.pool, async (client) => {
      await client.query("set local role cartop_user");
      const error = await errorOf(client.query(
        "insert into audit_private.capture_notes (tx_id, depth, table_id, kind) values (txid_current(), 1, 1, 'move')"));
      expect(error.code).toBe("42501");
      expect(error.message).toBe("permission denied for table capture_notes");
    });
  });

  test("a move-note function attached anywhere else (even by a superuser) refuses and notes nothing", async () => {
    const { rows: [{ id }] } = await db.pool.query("select id from audit_private.tables where schema_name = 'pw' and table_name = 'ev'");
    const before = await countAuditRows(db.pool, "pw.ev");
    await db.pool.query(`
      create table public.elsewhere (id integer primary key, v integer);
      insert into public.elsewhere values (1, 0);
      create trigger t_mark before update on public.elsewhere for each row execute function audit_private.capture_move_mark_${id}();
      create trigger t_old before delete on public.elsewhere for each row execute function audit_private.capture_move_old_${id}();
      create trigger t_begin before insert on public.elsewhere for each statement execute function audit_private.capture_begin_${id}();
    `);
    const update = await errorOf(db.pool.query("update public.elsewhere set v = 1"));
    expect(update.code).toBe("42501");
    expect(update.message).toBe(`audit_private.capture_move_mark_${id}: generated for BEFORE ROW UPDATE on pw.ev, fired BEFORE ROW UPDATE on public.elsewhere`);
    const remove = await errorOf(db.pool.query("delete from public.elsewhere"));
    expect(remove.message).toBe(`audit_private.capture_move_old_${id}: generated for BEFORE ROW DELETE on pw.ev, fired BEFORE ROW DELETE on public.elsewhere`);
    const insert = await errorOf(db.pool.query("insert into public.elsewhere values (2, 0)"));
    expect(insert.message).toBe(`audit_private.capture_begin_${id}: generated for BEFORE INSERT/UPDATE/DELETE/TRUNCATE on pw.ev, fired BEFORE INSERT on public.elsewhere`);
    expect((await db.pool.query("select count(*)::int as n from audit_private.capture_notes")).rows).toEqual([{ n: 0 }]);
    expect(await countAuditRows(db.pool, "pw.ev")).toBe(before);
  });
});
