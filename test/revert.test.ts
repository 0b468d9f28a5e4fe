// Undo on a real database: statement numbers, audit.revert (every kind of write put back exactly, dry
// runs, conflicts, refusals, permissions, the revert audited and itself revertable), audit.net_change,
// the GraphQL mutation and the CLI.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import jwt from "jsonwebtoken";
import type pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { projectRoot } from "../src/db/sourceSql.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create schema shop;
    grant usage on schema shop to cartop_user, cartop_auditor;
    -- A generated column, an array, a numeric: all must come back exactly.
    create table shop.items (id integer primary key, name text not null, qty integer not null default 0,
      price numeric(10,2), tags text[], total numeric generated always as (qty * price) stored);
    create table shop.accounts (id bigint generated always as identity primary key, owner text not null unique, balance integer not null);
    create table shop.orders (id integer primary key, customer text not null);
    create table shop.order_lines (order_id integer references shop.orders on delete cascade, line integer, qty integer not null,
      primary key (order_id, line));
    create table shop.events (region text, id integer, payload text, primary key (region, id)) partition by list (region);
    create table shop.events_eu partition of shop.events for values in ('eu');
    create table shop.events_us partition of shop.events for values in ('us');
    create table shop.people (id integer primary key, name text not null, ssn text, note text);
    select audit.enable_tracking(t) from unnest(array['shop.items', 'shop.accounts', 'shop.orders', 'shop.order_lines', 'shop.events']::regclass[]) t;
    select audit.enable_tracking('shop.people', excluded_columns => '{note}', masked_columns => '{ssn}');
    insert into shop.items (id, name, qty, price, tags) select g, 'item ' || g, g, g * 1.5, array['t' || g] from generate_series(1, 20) g;
    insert into shop.accounts (owner, balance) values ('ann', 10), ('ben', 20);
    insert into shop.orders values (1, 'ann'), (2, 'ben');
    insert into shop.order_lines values (1, 1, 5), (1, 2, 6), (2, 1, 7);
    insert into shop.events values ('eu', 1, 'a'), ('us', 2, 'b');
    insert into shop.people values (1, 'Pat', '123-45', 'likes tea');`);
});
afterAll(async () => {
  await db?.drop();
});

const tables = ["shop.items", "shop.accounts", "shop.orders", "shop.order_lines", "shop.events", "shop.people"];

/** Every row of every test table, in key order: what "the table equals a snapshot" compares. */
async function snapshot(client: pg.Pool | pg.PoolClient = db.pool): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = {};
  for (const table of tables) {
    const { rows } = await client.query(`select coalesce(jsonb_agg(to_jsonb(t) order by to_jsonb(t)::text), '[]') as rows from ${table} t`);
    result[table] = rows[0].rows;
  }
  return result;
}

/** Runs `sql` in one transaction; returns its transaction id. */
async function inTx(sql: string | ((client: pg.PoolClient) => Promise<void>)): Promise<string> {
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    if (typeof sql === "string") await client.query(sql);
    else await sql(client);
    const { rows } = await client.query("select txid_current()::text as tx");
    await client.query("commit");
    return rows[0].tx;
  } catch (error) {
    await client.query("rollback");
    throw error;
  } finally {
    client.release();
  }
}

interface Step {
  step: number;
  log_id: string;
  action: string;
  revert_action: string | null;
  entity_id: string | null;
  problem: string | null;
  problem_code: string | null;
  applied: boolean;
}

async function revert(args: string, client: pg.Pool | pg.PoolClient = db.pool): Promise<Step[]> {
  return (await client.query<Step>(`select * from audit.revert(${args})`)).rows;
}

async function auditCount(): Promise<number> {
  return Number((await db.pool.query("select count(*) as n from audit.log")).rows[0].n);
}

describe("statement numbers", () => {
  test("each statement of a transaction has its number; a MERGE and an upsert are one statement each; statements inside a function are not merged", async () => {
    const tx = await inTx(`
      update shop.items set qty = qty + 1 where id <= 2;
      merge into shop.items i using (values (3, 'merged'), (101, 'new')) s(id, name) on i.id = s.id
        when matched then update set name = s.name when not matched then insert (id, name) values (s.id, s.name);
      insert into shop.items (id, name) values (4, 'upserted'), (102, 'fresh') on conflict (id) do update set name = excluded.name;
      do $$ begin update shop.items set qty = 0 where id = 5; update shop.items set qty = 1 where id = 5; delete from shop.items where id = 102; end $$;
      delete from shop.orders where id = 2;`);
    const { rows } = await db.pool.query(
      `select statement_number, entity_name, action, entity_id from audit.log where tx_id = $1 order by id`, [tx]);
    expect(rows).toEqual([
      { statement_number: 1, entity_name: "items", action: "UPDATE", entity_id: "1" },
      { statement_number: 1, entity_name: "items", action: "UPDATE", entity_id: "2" },
      { statement_number: 2, entity_name: "items", action: "UPDATE", entity_id: "3" },
      { statement_number: 2, entity_name: "items", action: "INSERT", entity_id: "101" },
      { statement_number: 3, entity_name: "items", action: "UPDATE", entity_id: "4" },
      { statement_number: 3, entity_name: "items", action: "INSERT", entity_id: "102" },
      { statement_number: 4, entity_name: "items", action: "UPDATE", entity_id: "5" },
      { statement_number: 5, entity_name: "items", action: "UPDATE", entity_id: "5" },
      { statement_number: 6, entity_name: "items", action: "DELETE", entity_id: "102" },
      // The cascade is the statement the foreign key ran, captured after the DELETE that caused it.
      { statement_number: 7, entity_name: "orders", action: "DELETE", entity_id: "2" },
      { statement_number: 8, entity_name: "order_lines", action: "DELETE", entity_id: "[2, 1]" },
    ]);
    // Put everything back for the tests that follow (and prove a whole transaction reverts).
    await revert(`tx_id => ${tx}, dry_run => false`);
  });

  test("numbers start again in every transaction and a rolled-back savepoint gives its number back", async () => {
    const tx = await inTx(async (client) => {
      await client.query("update shop.items set qty = qty + 1 where id = 1");
      await client.query("savepoint s");
      await client.query("update shop.items set qty = qty + 1 where id = 2");
      await client.query("rollback to savepoint s");
      await client.query("update shop.items set qty = qty + 1 where id = 3");
    });
    const { rows } = await db.pool.query(`select statement_number, entity_id from audit.log where tx_id = $1 order by id`, [tx]);
    expect(rows).toEqual([{ statement_number: 1, entity_id: "1" }, { statement_number: 2, entity_id: "3" }]);
    await revert(`tx_id => ${tx}, dry_run => false`);
  });
});

describe("every kind of write is reverted exactly", () => {
  const kinds: [string, string | ((client: pg.PoolClient) => Promise<void>)][] = [
    ["a single-row INSERT", `insert into shop.items (id, name, price) values (50, 'single', 2.5)`],
    ["a single-row UPDATE", `update shop.items set name = 'renamed', price = 9.99, tags = '{a,"b c"}' where id = 7`],
    ["a single-row DELETE", `delete from shop.items where id = 8`],
    ["a bulk UPDATE", `update shop.items set qty = qty * 2, tags = null where id between 1 and 15`],
    ["a bulk DELETE", `delete from shop.items where id > 10`],
    ["a COPY", async (client) => {
      await pipeline(Readable.from(["60\tcopied\t3\t1.25\t{x}\n61\tcopied too\t4\t\\N\t\\N\n"]),
        client.query(copyFrom("copy shop.items (id, name, qty, price, tags) from stdin")));
    }],
    ["a MERGE", `merge into shop.items i using (values (9, 'merge-updated'), (10, null), (70, 'merge-inserted')) s(id, name) on i.id = s.id
                 when matched and s.name is null then delete when matched then update set name = s.name
                 when not matched then insert (id, name) values (s.id, s.name)`],
    ["an upsert", `insert into shop.items (id, name) values (1, 'upsert-1'), (71, 'upsert-new') on conflict (id) do update set name = excluded.name`],
    ["a cascade", `delete from shop.orders where id = 1`],
    ["a primary key change", `update shop.items set id = id + 100 where id in (2, 3)`],
    ["a key change on a composite key", `update shop.order_lines set line = line + 10 where order_id = 1`],
    ["a partition move", `update shop.events set region = 'us', payload = 'moved' where id = 1`],
    ["a deleted row with an identity", `delete from shop.accounts where owner = 'ben'`],
    ["several statements on several tables", `
       insert into shop.orders values (3, 'cy'); insert into shop.order_lines values (3, 1, 1);
       update shop.accounts set balance = balance - 5 where owner = 'ann'; delete from shop.items where id = 4`],
  ];

  test.each(kinds)("%s", async (_kind, write) => {
    const before = await snapshot();
    const tx = await inTx(write);
    const after = await snapshot();
    expect(after).not.toEqual(before);

    // A dry run changes nothing (no rows, no audit rows) and lists every step.
    const rowsBefore = await auditCount();
    const preview = await revert(`tx_id => ${tx}`);
    expect(preview.length).toBeGreaterThan(0);
    expect(preview.filter((s) => s.problem)).toEqual([]);
    expect(preview.every((s) => !s.applied)).toBe(true);
    expect(await snapshot()).toEqual(after);
    expect(await auditCount()).toBe(rowsBefore);

    const applied = await revert(`tx_id => ${tx}, dry_run => false`);
    expect(applied.map((s) => [s.step, s.log_id, s.revert_action, s.applied]))
      .toEqual(preview.map((s) => [s.step, s.log_id, s.revert_action, true]));
    expect(await snapshot()).toEqual(before);
  });
});

describe("one statement, one row, one request", () => {
  test("--statement reverts that statement only; log_id one row; request_id every change of a request", async () => {
    const start = await snapshot();
    const tx = await inTx(`
      update shop.items set qty = 100 where id between 1 and 3;
      update shop.items set name = 'second statement' where id = 4;`);
    const steps = await revert(`tx_id => ${tx}, statement_number => 1, dry_run => false`);
    expect(steps.map((s) => [s.entity_id, s.applied]).sort()).toEqual([["1", true], ["2", true], ["3", true]]);
    const { rows } = await db.pool.query(`select id, qty, name from shop.items where id between 1 and 4 order by id`);
    expect(rows).toEqual([
      { id: 1, qty: 1, name: "item 1" }, { id: 2, qty: 2, name: "item 2" }, { id: 3, qty: 3, name: "item 3" },
      { id: 4, qty: 4, name: "second statement" },
    ]);
    const { rows: [row] } = await db.pool.query(`select id from audit.log where tx_id = $1 and entity_id = '4'`, [tx]);
    expect((await revert(`log_id => ${row.id}, dry_run => false`)).map((s) => s.entity_id)).toEqual(["4"]);
    expect(await snapshot()).toEqual(start);

    await inTx(`select audit.set_context(request_id => 'req-undo-1'); insert into shop.orders values (9, 'req'); insert into shop.order_lines values (9, 1, 2)`);
    expect((await revert(`request_id => 'req-undo-1', dry_run => false`)).map((s) => [s.revert_action, s.entity_id]))
      .toEqual([["DELETE", "[9, 1]"], ["DELETE", "9"]]);
    expect(await snapshot()).toEqual(start);
  });

  test("bad arguments are refused with a clear error", async () => {
    const none = await errorOf(db.pool.query(`select * from audit.revert()`));
    expect(none.message).toBe("audit.revert: give exactly one of log_id, tx_id or request_id (statement_number only with tx_id)");
    expect(none.code).toBe("22023");
    const missing = await errorOf(db.pool.query(`select * from audit.revert(tx_id => 1)`));
    expect(missing.message).toBe(`audit.revert: no audit rows match {"tx_id": 1}`);
    expect(missing.code).toBe("P0002");
    const mode = await errorOf(db.pool.query(`select * from audit.revert(tx_id => 1, on_conflict => 'force')`));
    expect(mode.code).toBe("22023");
  });
});

describe("the revert is audited and can itself be reverted", () => {
  test("its rows carry revert_of merged into the caller's metadata; reverting it restores the change", async () => {
    const start = await snapshot();
    const tx = await inTx(`update shop.items set price = 0.5 where id in (5, 6); delete from shop.items where id = 7`);
    const changed = await snapshot();
    const revertTx = await inTx(async (client) => {
      await client.query(`select audit.set_context(user_id => 'ops-1', metadata => '{"ticket": "INC-7"}')`);
      await client.query(`select * from audit.revert(tx_id => ${tx}, dry_run => false)`);
      // The caller's own metadata is back for what the transaction does next.
      const { rows } = await client.query(`select current_setting('audit.metadata') as m`);
      expect(JSON.parse(rows[0].m)).toEqual({ ticket: "INC-7" });
    });
    expect(await snapshot()).toEqual(start);
    const { rows } = await db.pool.query(
      `select action, entity_id, user_id, metadata, statement_number from audit.log where tx_id = $1 order by id`, [revertTx]);
    const metadata = { ticket: "INC-7", revert_of: { tx_id: Number(tx) } };
    expect(rows).toEqual([
      { action: "INSERT", entity_id: "7", user_id: "ops-1", metadata, statement_number: 1 },
      { action: "UPDATE", entity_id: "6", user_id: "ops-1", metadata, statement_number: 2 },
      { action: "UPDATE", entity_id: "5", user_id: "ops-1", metadata, statement_number: 3 },
    ]);

    await revert(`tx_id => ${revertTx}, dry_run => false`);
    expect(await snapshot()).toEqual(changed);
    // The revert of the revert redid the change; reverting that (found by its revert_of) undoes it again.
    const { rows: [last] } = await db.pool.query(`select tx_id from audit.log where metadata -> 'revert_of' ->> 'tx_id' = $1 order by id desc limit 1`, [revertTx]);
    await revert(`tx_id => ${last.tx_id}, dry_run => false`);
    expect(await snapshot()).toEqual(start);
  });
});

describe("conflicts are found and named", () => {
  test("a later change, a row gone and a key taken since refuse the revert, naming each; skip reverts the rest", async () => {
    const start = await snapshot();
    const tx = await inTx(`
      update shop.items set qty = 50 where id = 11;
      update shop.items set qty = 51 where id = 12;
      delete from shop.items where id = 13;
      update shop.items set qty = 52 where id = 14;`);
    await db.pool.query(`
      update shop.items set qty = 60 where id = 11;
      delete from shop.items where id = 12;
      insert into shop.items (id, name) values (13, 'squatter');`);
    const ids: Record<string, string> = Object.fromEntries(
      (await db.pool.query(`select entity_id, id from audit.log where tx_id = $1`, [tx])).rows.map((r) => [r.entity_id, r.id]));
    const later = (await db.pool.query(
      `select entity_id, action, id from audit.log where entity_name = 'items' and id > $1 and entity_id in ('11', '12', '13') order by id`,
      [ids["14"]])).rows;
    const laterOf = (entity: string) => later.find((r) => r.entity_id === entity)!.id;

    const preview = await revert(`tx_id => ${tx}`);
    expect(preview.map((s) => [s.entity_id, s.problem, s.problem_code])).toEqual([
      ["14", null, null],
      ["13", `changed since by audit row ${laterOf("13")}`, "55000"],
      ["12", `changed since by audit row ${laterOf("12")}`, "55000"],
      ["11", `changed since by audit row ${laterOf("11")}`, "55000"],
    ]);
    const refused = await errorOf(revert(`tx_id => ${tx}, dry_run => false`));
    expect(refused.code).toBe("55000");
    expect(refused.message).toBe(`audit.revert: 3 conflict(s): audit row ${ids["13"]} (shop.items 13): changed since by audit row ${laterOf("13")}; `
      + `audit row ${ids["12"]} (shop.items 12): changed since by audit row ${laterOf("12")}; `
      + `audit row ${ids["11"]} (shop.items 11): changed since by audit row ${laterOf("11")}`);
    expect((await db.pool.query(`select qty from shop.items where id = 14`)).rows[0].qty).toBe(52);

    const skipped = await revert(`tx_id => ${tx}, dry_run => false, on_conflict => 'skip'`);
    expect(skipped.map((s) => [s.entity_id, s.applied])).toEqual([["14", true], ["13", false], ["12", false], ["11", false]]);
    expect((await db.pool.query(`select qty from shop.items where id = 14`)).rows[0].qty).toBe(14);

    // Put the rest back by hand, for the tests that follow.
    await db.pool.query(`update shop.items set qty = 11 where id = 11; delete from shop.items where id = 13;
      insert into shop.items (id, name, qty, price, tags) values (12, 'item 12', 12, 18, '{t12}'), (13, 'item 13', 13, 19.5, '{t13}')`);
    expect(await snapshot()).toEqual(start);
  });

  test("changes the trail does not know of (capture off) are found in the row itself", async () => {
    const tx = await inTx(`update shop.items set qty = 70 where id = 15; insert into shop.items (id, name) values (80, 'x')`);
    await db.pool.query(`set session_replication_role = replica; update shop.items set name = 'behind the trail' where id = 15;
      reset session_replication_role; delete from shop.items where id = 80`);
    const steps = await revert(`tx_id => ${tx}`);
    expect(steps.map((s) => [s.entity_id, s.problem])).toEqual([
      ["80", expect.stringMatching(/^changed since by audit row \d+$/)],
      ["15", "the row differs since in column(s) name"],
    ]);
    await db.pool.query(`update shop.items set qty = 15, name = 'item 15' where id = 15`);
  });

  test("a key change cannot be undone while another row holds the old key", async () => {
    const tx = await inTx(`update shop.items set id = 90 where id = 16`);
    await db.pool.query(`set session_replication_role = replica; insert into shop.items (id, name) values (16, 'took the old key');
      reset session_replication_role`);
    expect((await revert(`tx_id => ${tx}`)).map((s) => s.problem)).toEqual(["key 16 is taken since"]);
    await db.pool.query(`set session_replication_role = replica; delete from shop.items where id = 16; reset session_replication_role`);
    await revert(`tx_id => ${tx}, dry_run => false`);
    expect((await db.pool.query(`select id, name from shop.items where id in (16, 90)`)).rows).toEqual([{ id: 16, name: "item 16" }]);
  });
});

describe("what cannot be undone exactly is refused", () => {
  test("a TRUNCATE, a changed masked column, a deleted row with excluded or masked columns, a GENERATED ALWAYS identity", async () => {
    const truncate = await inTx(`create temp table scratch on commit drop as select * from shop.events; truncate shop.events;
      insert into shop.events select * from scratch`);
    const t = await errorOf(revert(`tx_id => ${truncate}, dry_run => false`));
    expect(t.code).toBe("0A000");
    expect(t.message).toMatch(/^audit\.revert: 1 change\(s\) cannot be reverted: audit row \d+ \(shop\.events \): a TRUNCATE of shop\.events cannot be reverted: the trail holds no rows for it$/);

    const masked = await inTx(`update shop.people set ssn = '999-99', name = 'Pat B' where id = 1`);
    expect((await revert(`tx_id => ${masked}`)).map((s) => [s.problem, s.problem_code]))
      .toEqual([["masked or encrypted column(s) ssn changed: a revert does not write their old value back", "0A000"]]);
    const deleted = await inTx(`delete from shop.people where id = 1`);
    expect((await revert(`tx_id => ${deleted}`)).map((s) => s.problem))
      .toEqual(["the deleted row cannot be restored exactly: the trail does not hold its column(s) note, ssn (excluded, masked or encrypted)"]);
    const refusal = await errorOf(revert(`tx_id => ${deleted}, dry_run => false, on_conflict => 'skip'`));
    expect(refusal.code).toBe("0A000");

    const identity = await inTx(`update shop.accounts set id = default where owner = 'ann'`);
    expect((await revert(`tx_id => ${identity}`)).map((s) => [s.problem, s.problem_code]))
      .toEqual([["GENERATED ALWAYS identity column(s) id changed; an UPDATE cannot set them back", "428C9"]]);
  });
});

describe("names reach the generated SQL only quoted", () => {
  test("a table and key column named to break format() strings revert like any other", async () => {
    await db.pool.query(`create table shop."odd%I'name" ("k%L"")" integer primary key, "v%s" text);
      select audit.enable_tracking('shop."odd%I''name"')`);
    const tx = await inTx(`insert into shop."odd%I'name" values (1, 'a'), (2, 'b'); update shop."odd%I'name" set "v%s" = 'c', "k%L"")" = 3 where "k%L"")" = 2`);
    const steps = await revert(`tx_id => ${tx}, dry_run => false`);
    expect(steps.map((s) => [s.revert_action, s.entity_id, s.problem])).toEqual([["UPDATE", "3", null], ["DELETE", "2", null], ["DELETE", "1", null]]);
    expect((await db.pool.query(`select count(*)::int as n from shop."odd%I'name"`)).rows[0].n).toBe(0);
  });
});

describe("permissions: the revert runs as the caller", () => {
  test("a role without UPDATE rights cannot revert; a user can revert their own change but sees no one else's", async () => {
    await db.pool.query(`grant select on shop.items to cartop_auditor; grant select, insert, update, delete on shop.items to cartop_user`);
    const tx = await inTx(`select audit.set_context(user_id => 'alice'); update shop.items set qty = 5 where id = 17`);

    const asRole = async (role: string, userId: string, sql: string) => inTx(async (client) => {
      await client.query(`set local role ${role}; select audit.set_context(user_id => '${userId}')`);
      await client.query(sql);
    });
    const denied = await errorOf(asRole("cartop_auditor", "auditor-1", `select * from audit.revert(tx_id => ${tx}, dry_run => false)`));
    expect(denied.code).toBe("42501");
    expect(denied.message).toBe("permission denied for table items");
    // The dry run reports it per row instead.
    const preview = await inTx(async (client) => {
      await client.query("set local role cartop_auditor");
      const steps = await revert(`tx_id => ${tx}`, client);
      expect(steps.map((s) => [s.problem, s.problem_code])).toEqual([["permission denied for table items", "42501"]]);
    });
    expect(preview).toBeTruthy();

    const hidden = await errorOf(asRole("cartop_user", "bob", `select * from audit.revert(tx_id => ${tx}, dry_run => false)`));
    expect(hidden.code).toBe("P0002");
    await asRole("cartop_user", "alice", `select * from audit.revert(tx_id => ${tx}, dry_run => false)`);
    expect((await db.pool.query(`select qty from shop.items where id = 17`)).rows[0].qty).toBe(17);
    const { rows } = await db.pool.query(`select db_user, user_id from audit.log where entity_name = 'items' and entity_id = '17' order by id desc limit 1`);
    expect(rows).toEqual([{ db_user: "cartop_user", user_id: "alice" }]);
  });

  test("revert is not callable by anonymous", async () => {
    const error = await errorOf(inTx(async (client) => {
      await client.query("set local role cartop_anonymous");
      await client.query("select * from audit.revert(tx_id => 1)");
    }));
    expect(error.code).toBe("42501");
  });
});

describe("net change between two instants", () => {
  test("transient edits cancel out; what remains is one row per row, with before and after", async () => {
    const { rows: [{ t0 }] } = await db.pool.query(`select clock_timestamp()::text as t0`);
    await inTx(`insert into shop.items (id, name) values (200, 'transient')`);
    await inTx(`delete from shop.items where id = 200`);
    await inTx(`update shop.items set qty = 999 where id = 18`);
    await inTx(`update shop.items set qty = 18 where id = 18`);
    await inTx(`update shop.items set name = 'first' where id = 19`);
    await inTx(`update shop.items set name = 'second' where id = 19`);
    await inTx(`insert into shop.items (id, name) values (201, 'kept')`);
    await inTx(`delete from shop.order_lines where order_id = 2`);
    await inTx(`update shop.items set id = 202 where id = 20`);
    const { rows: [{ t1 }] } = await db.pool.query(`select clock_timestamp()::text as t1`);
    await inTx(`update shop.items set name = 'after the window' where id = 19`);

    const { rows } = await db.pool.query(
      `select entity_name, entity_id, action, changes, change_count, old_value ->> 'name' as old_name, new_value ->> 'name' as new_name
         from audit.net_change('shop.items', $1, $2) order by entity_id`, [t0, t1]);
    expect(rows).toEqual([
      { entity_name: "items", entity_id: "19", action: "UPDATE", changes: { name: { old: "item 19", new: "second" } }, change_count: 2, old_name: "item 19", new_name: "second" },
      { entity_name: "items", entity_id: "20", action: "DELETE", changes: null, change_count: 1, old_name: "item 20", new_name: null },
      { entity_name: "items", entity_id: "201", action: "INSERT", changes: null, change_count: 1, old_name: null, new_name: "kept" },
      { entity_name: "items", entity_id: "202", action: "INSERT", changes: null, change_count: 1, old_name: null, new_name: "item 20" },
    ]);
    const { rows: one } = await db.pool.query(`select entity_id, action from audit.net_change('items', $1, $2, '19')`, [t0, t1]);
    expect(one).toEqual([{ entity_id: "19", action: "UPDATE" }]);
    const { rows: lines } = await db.pool.query(`select entity_id, action from audit.net_change('shop.order_lines', $1, $2)`, [t0, t1]);
    expect(lines).toEqual([{ entity_id: "[2, 1]", action: "DELETE" }]);
  });
});

describe("GraphQL and the CLI", () => {
  const SECRET = "test-secret-0123456789-0123456789-abcdef";
  let api: RunningServer;
  beforeAll(async () => {
    api = await startServer({ databaseUrl: db.url, config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000 } });
  });
  afterAll(async () => {
    await api?.close();
  });
  const token = (sub: string, role: string) => jwt.sign({ sub, role }, SECRET, { algorithm: "HS256", expiresIn: "5m" });
  async function gql(query: string, variables: Record<string, unknown>, bearer: string, requestId?: string) {
    const response = await fetch(`${api.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${bearer}`, ...(requestId ? { "x-request-id": requestId } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    return await response.json() as { data?: any; errors?: { message: string }[] };
  }
  const revertMutation = `mutation($input: RevertInput!) { revert(input: $input) { result { step revertAction entityName entityId problem applied } } }`;

  test("a user previews, then applies, the revert of their own request; another user cannot see it", async () => {
    const created = await gql(`mutation { createProduct(input: { product: { name: "Lamp", price: "12.50" } }) { product { rowId } } }`,
      {}, token("carol", "user"), "req-gql-undo");
    expect(created.errors).toBeUndefined();
    const id = String(created.data.createProduct.product.rowId);

    const preview = await gql(revertMutation, { input: { requestId: "req-gql-undo" } }, token("carol", "user"));
    expect(preview).toEqual({ data: { revert: { result: [
      { step: 1, revertAction: "DELETE", entityName: "products", entityId: id, problem: null, applied: false },
    ] } } });
    expect((await db.pool.query(`select count(*)::int as n from app.products where id = $1`, [id])).rows[0].n).toBe(1);

    const stranger = await gql(revertMutation, { input: { requestId: "req-gql-undo", dryRun: false } }, token("dave", "user"));
    expect(stranger.errors?.[0]?.message).toBe(`audit.revert: no audit rows match {"request_id": "req-gql-undo"}`);

    const applied = await gql(revertMutation, { input: { requestId: "req-gql-undo", dryRun: false } }, token("carol", "user"));
    expect(applied.data.revert.result).toEqual([
      { step: 1, revertAction: "DELETE", entityName: "products", entityId: id, problem: null, applied: true },
    ]);
    expect((await db.pool.query(`select count(*)::int as n from app.products where id = $1`, [id])).rows[0].n).toBe(0);

    const net = await gql(`query($since: Datetime!) { netChange(entityName: "app.products", since: $since, first: 100) { nodes { entityId action } } }`,
      { since: new Date(Date.now() - 3_600_000).toISOString() }, token("auditor-1", "auditor"));
    expect(net).toEqual({ data: { netChange: { nodes: [] } } });
  });

  const exec = promisify(execFile);
  async function cli(...args: string[]) {
    try {
      const { stdout, stderr } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), ...args], {
        env: { ...process.env, DATABASE_URL: db.url, NODE_OPTIONS: "" },
      });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  test("cartop-audit revert previews a diff per row, applies with --apply, and exits 1 naming a conflict", async () => {
    const tx = await inTx(`update shop.items set name = 'cli', qty = 77 where id = 1`);
    const { rows: [{ id }] } = await db.pool.query(`select id from audit.log where tx_id = $1`, [tx]);
    const preview = await cli("revert", "--tx", tx);
    expect(preview.code).toBe(0);
    expect(preview.stdout).toBe([
      `1. UPDATE shop.items 1 (undoes UPDATE of audit row ${id}, statement 1): would run`,
      `   - name: "cli"`,
      `   + name: "item 1"`,
      `   - qty: 77`,
      `   + qty: 1`,
      `   - total: 115.5`,
      `   + total: 1.5`,
      `dry run: 1 row(s), 0 problem(s); nothing changed (--apply to revert)`,
      ``,
    ].join("\n"));
    const json = await cli("revert", "--tx", tx, "--statement", "1", "--json");
    expect(JSON.parse(json.stdout).map((s: Step) => [s.revert_action, s.applied])).toEqual([["UPDATE", false]]);

    const interfering = await inTx(`update shop.items set qty = 78 where id = 1`);
    const conflict = await cli("revert", "--tx", tx, "--apply");
    expect(conflict.code).toBe(1);
    expect(conflict.stderr).toMatch(new RegExp(`^cartop-audit: audit\\.revert: 1 conflict\\(s\\): audit row ${id} \\(shop\\.items 1\\): changed since by audit row \\d+\\nhint: Nothing was changed\\. .*\\n$`));
    const dryConflict = await cli("revert", "--tx", tx);
    expect(dryConflict.code).toBe(1);
    expect(dryConflict.stdout).toMatch(/: CONFLICT\n {3}changed since by audit row \d+\n/);

    // Undo the interfering change first, and the revert of the revert does not count as a conflict either.
    await revert(`tx_id => ${interfering}, dry_run => false`);
    const applied = await cli("revert", "--tx", tx, "--apply");
    expect(applied.code).toBe(0);
    expect(applied.stdout.split("\n").at(-2)).toBe("1 of 1 row(s) reverted");
    expect((await db.pool.query(`select name, qty from shop.items where id = 1`)).rows).toEqual([{ name: "item 1", qty: 1 }]);

    const usage = await cli("revert", "--statement", "1");
    expect(usage.code).toBe(2);
    expect(usage.stderr.split("\n")[0]).toBe("error: --statement needs --tx");
  });
});
