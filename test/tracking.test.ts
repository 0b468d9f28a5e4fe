// Tracking API: enable_tracking / disable_tracking / tracked_tables, excluded and masked columns.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { auditRowsOf, countAuditRows, createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query("create schema crm");
});
afterAll(async () => db?.drop());

describe("excluded and masked columns", () => {
  beforeAll(async () => {
    await db.pool.query(`
      create table crm.people (id integer primary key, name text, password_hash text, ssn text, login_count integer default 0);
      select audit.enable_tracking('crm.people', excluded_columns => '{password_hash, login_count}', masked_columns => '{ssn}');
      insert into crm.people (id, name, password_hash, ssn) values (1, 'Ada', 'hash-secret-1', '123-45-6789');
      update crm.people set password_hash = 'hash-secret-2', login_count = login_count + 1;
      update crm.people set ssn = '987-65-4321';
      update crm.people set name = 'Ada L.';
      delete from crm.people;
    `);
  });

  test("excluded columns never reach the trail; an UPDATE of only excluded columns writes nothing", async () => {
    const rows = await auditRowsOf(db.pool, "crm.people");
    expect(rows.map((r) => r.action)).toEqual(["INSERT", "UPDATE", "UPDATE", "DELETE"]);
    for (const row of rows) {
      for (const value of [row.old_value, row.new_value]) {
        if (value) expect(Object.keys(value).sort()).toEqual(["id", "name", "ssn"]);
      }
    }
  });

  test("masked columns are recorded as changed, never with their value", async () => {
    const rows = await auditRowsOf(db.pool, "crm.people");
    expect(rows[0]!.new_value).toEqual({ id: 1, name: "Ada", ssn: "[masked]" });
    expect(rows[1]!.changes).toEqual({ ssn: { old: "[masked]", new: "[masked]" } });
    expect(rows[2]!.changes).toEqual({ name: { old: "Ada", new: "Ada L." } });
    const { rows: leaks } = await db.pool.query(
      `select count(*)::int as n from audit_private.log_entries e
        where e::text ~ '(hash-secret|123-45-6789|987-65-4321)'`,
    );
    expect(leaks[0].n).toBe(0);
  });
});

describe("enable_tracking", () => {
  test("calling it twice is harmless and replaces the options", async () => {
    await db.pool.query(`
      create table crm.accounts (id integer primary key, name text, notes text);
      select audit.enable_tracking('crm.accounts');
      select audit.enable_tracking('crm.accounts');
      insert into crm.accounts values (1, 'a', 'first');
      select audit.enable_tracking('crm.accounts', excluded_columns => '{notes}');
      insert into crm.accounts values (2, 'b', 'second');
      update crm.accounts set notes = 'changed';
    `);
    const rows = await auditRowsOf(db.pool, "crm.accounts");
    expect(rows.map((r) => [r.action, r.new_value])).toEqual([
      ["INSERT", { id: 1, name: "a", notes: "first" }],
      ["INSERT", { id: 2, name: "b" }],
    ]);
    const { rows: tracked } = await db.pool.query(
      `select excluded_columns, masked_columns, primary_key, enabled, triggers_installed, triggers_active
         from audit.tracked_tables where schema_name = 'crm' and table_name = 'accounts'`,
    );
    expect(tracked).toEqual([{
      excluded_columns: ["notes"], masked_columns: [], primary_key: ["id"], enabled: true,
      triggers_installed: 4, triggers_active: 4,
    }]);
  });

  test("a missing table is an error naming it", async () => {
    await expect(db.pool.query(`select audit.enable_tracking('crm.nope')`)).rejects.toThrow(
      'relation "crm.nope" does not exist',
    );
  });

  test("a table without a primary key is an error naming it", async () => {
    await db.pool.query(`create table crm.logbook (line text)`);
    await expect(db.pool.query(`select audit.enable_tracking('crm.logbook')`)).rejects.toThrow(
      "audit.enable_tracking: table crm.logbook has no primary key",
    );
  });

  test("an unknown column, a key column or a view is refused with a clear message", async () => {
    await db.pool.query(`create table crm.deals (id integer primary key, amount numeric); create view crm.deal_view as select * from crm.deals`);
    await expect(db.pool.query(`select audit.enable_tracking('crm.deals', excluded_columns => '{amount, amout}')`)).rejects.toThrow(
      "audit.enable_tracking: table crm.deals has no column(s) amout",
    );
    await expect(db.pool.query(`select audit.enable_tracking('crm.deals', masked_columns => '{id}')`)).rejects.toThrow(
      "audit.enable_tracking: primary key column(s) of crm.deals cannot be excluded, masked or encrypted",
    );
    await expect(db.pool.query(`select audit.enable_tracking('crm.deal_view')`)).rejects.toThrow(
      "audit.enable_tracking: crm.deal_view is not a table",
    );
    await expect(db.pool.query(`select audit.enable_tracking('audit.log_default')`)).rejects.toThrow(
      "audit.enable_tracking: audit.log_default is a partition; track its partitioned parent instead",
    );
  });

  test("application roles cannot change what is tracked", async () => {
    await expect(
      db.pool.query(`begin; grant usage on schema crm to cartop_user; set local role cartop_user; select audit.disable_tracking('crm.accounts')`).finally(() => db.pool.query("rollback")),
    ).rejects.toThrow("permission denied for function disable_tracking");
  });

  test("ALTER TABLE on a tracked table keeps capture complete", async () => {
    await db.pool.query(`
      create table crm.leads (id integer primary key, name text, old_col text, secret text);
      select audit.enable_tracking('crm.leads', masked_columns => '{secret}');
      insert into crm.leads values (1, 'x', 'o', 's');
      alter table crm.leads add column score integer, drop column old_col;
      update crm.leads set score = 10;
      alter table crm.leads rename column name to full_name;
      update crm.leads set full_name = 'y', secret = 't';
    `);
    const rows = await auditRowsOf(db.pool, "crm.leads");
    expect(rows.map((r) => r.changes)).toEqual([
      null,
      { score: { old: null, new: 10 } },
      { full_name: { old: "x", new: "y" }, secret: { old: "[masked]", new: "[masked]" } },
    ]);
    expect(rows[2]!.old_value).toEqual({ id: 1, full_name: "x", score: 10, secret: "[masked]" });
  });

  test("renaming or dropping a masked column is refused, with the way to do it safely", async () => {
    await expect(db.pool.query(`alter table crm.leads rename column secret to token`)).rejects.toThrow(
      "cartop-audit: column(s) secret of crm.leads are excluded or masked from the audit trail and would no longer be",
    );
    await db.pool.query(`begin;
      select audit.disable_tracking('crm.leads');
      alter table crm.leads rename column secret to token;
      select audit.enable_tracking('crm.leads', masked_columns => '{token}');
      commit;
      update crm.leads set token = 'new-token-value';`);
    expect((await auditRowsOf(db.pool, "crm.leads")).at(-1)!.changes).toEqual({ token: { old: "[masked]", new: "[masked]" } });
  });
});

describe("renaming a tracked table", () => {
  test("the registry and the history follow the table (RENAME TO, SET SCHEMA); capture goes on", async () => {
    await db.pool.query(`
      create table crm.prospects (id integer primary key, name text);
      select audit.enable_tracking('crm.prospects');
      insert into crm.prospects values (1, 'before');
      alter table crm.prospects rename to clients;
      update crm.clients set name = 'renamed';
      create schema sales;
      alter table crm.clients set schema sales;
      delete from sales.clients;`);
    expect((await auditRowsOf(db.pool, "sales.clients")).map((r) => [r.entity_schema, r.entity_name, r.action]))
      .toEqual([["sales", "clients", "INSERT"], ["sales", "clients", "UPDATE"], ["sales", "clients", "DELETE"]]);
    const { rows } = await db.pool.query(`select schema_name, table_name, triggers_installed, triggers_active
      from audit.tracked_tables where table_name in ('prospects', 'clients')`);
    expect(rows).toEqual([{ schema_name: "sales", table_name: "clients", triggers_installed: 4, triggers_active: 4 }]);
    expect((await db.pool.query(`select * from audit.coverage where object like '%clients%' or object like '%prospects%'`)).rows).toEqual([]);
  });

  test("taking the name of a table audited before is refused: the two histories would merge", async () => {
    await db.pool.query(`
      create table crm.gone (id integer primary key); select audit.enable_tracking('crm.gone'); select audit.disable_tracking('crm.gone');
      drop table crm.gone;
      create table crm.newcomer (id integer primary key); select audit.enable_tracking('crm.newcomer');`);
    await expect(db.pool.query(`alter table crm.newcomer rename to gone`))
      .rejects.toThrow("cartop-audit: crm.gone was audited before under this name; a tracked table cannot take it");
  });
});

describe("disable_tracking", () => {
  test("stops capture and keeps the history", async () => {
    await db.pool.query(`
      create table crm.tags (id integer primary key, label text);
      select audit.enable_tracking('crm.tags');
      insert into crm.tags values (1, 'kept');
      select audit.disable_tracking('crm.tags');
      insert into crm.tags values (2, 'not audited');
      update crm.tags set label = 'still not';
    `);
    expect(await countAuditRows(db.pool, "crm.tags")).toBe(1);
    const { rows } = await db.pool.query(
      `select enabled, triggers_installed from audit.tracked_tables where table_name = 'tags'`,
    );
    expect(rows).toEqual([{ enabled: false, triggers_installed: 0 }]);
    await expect(db.pool.query(`select audit.disable_tracking('crm.tags')`)).rejects.toThrow(
      "audit.disable_tracking: table crm.tags is not tracked",
    );
  });
});

describe("calling enable_tracking again never weakens a protection by accident", () => {
  beforeAll(async () => {
    await db.pool.query(`create table crm.orders (id int primary key, notes text, card_number text, pin text);
      select audit.enable_tracking('crm.orders', excluded_columns => '{notes}', masked_columns => '{pin}')`);
  });
  const options = async () => (await db.pool.query(
    `select excluded_columns, masked_columns from audit.tracked_tables where table_name = 'orders'`)).rows[0];

  test("dropping an exclusion or a mask, or turning an exclusion into a mask, is refused, naming the columns", async () => {
    for (const [excluded, masked, wouldLose] of [
      ["{}", "{card_number}", "exclude notes and mask pin"],
      ["{}", "{notes, pin}", "exclude notes"],
      ["{notes}", "{}", "mask pin"],
    ] as const) {
      const error = await db.pool.query(`select audit.enable_tracking('crm.orders', excluded_columns => $1, masked_columns => $2)`, [excluded, masked])
        .then(() => null, (e: Error & { code?: string; hint?: string }) => e);
      expect([error?.code, error?.message, error?.hint]).toEqual(["22023", `audit.enable_tracking: crm.orders would no longer ${wouldLose}`,
        "Name them again (excluded_columns, masked_columns, encrypted_columns), or pass drop_protections => true to let their values into the trail from now on."]);
    }
    expect(await options()).toEqual({ excluded_columns: ["notes"], masked_columns: ["pin"] });
  });

  test("keeping or strengthening them is accepted: more columns, a mask becoming an exclusion", async () => {
    await db.pool.query(`select audit.enable_tracking('crm.orders', excluded_columns => '{notes, pin}', masked_columns => '{card_number}')`);
    expect(await options()).toEqual({ excluded_columns: ["notes", "pin"], masked_columns: ["card_number"] });
    await db.pool.query(`select audit.enable_tracking('crm.orders', excluded_columns => '{notes, pin}', masked_columns => '{card_number}')`);
    expect(await options()).toEqual({ excluded_columns: ["notes", "pin"], masked_columns: ["card_number"] });
  });

  test("drop_protections => true says so explicitly, and only then the options shrink", async () => {
    await db.pool.query(`select audit.enable_tracking('crm.orders', masked_columns => '{card_number}', drop_protections => true)`);
    expect(await options()).toEqual({ excluded_columns: [], masked_columns: ["card_number"] });
  });
});
