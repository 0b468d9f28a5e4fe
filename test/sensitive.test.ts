// Sensitive values (triggers/03_sensitive.sql): encrypted columns are kept encrypted in the trail under a key per
// data subject; auditors read plaintext, everyone else "[encrypted]"; audit.erase_subject destroys a subject's
// key, after which every read path — an archived and restored month included — shows "[erased]", and the seals
// and archive checks still pass, because they cover the ciphertext.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import jwt from "jsonwebtoken";
import type pg from "pg";
import { archiveMonth, restoreMonth, verifyArchive } from "../src/archive/archive.ts";
import { fileStore } from "../src/archive/store.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { sealDays, verifySeals } from "../src/seals/seals.ts";
import { createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";

const SECRET = "sensitive-secret-0123456789-0123456789-abc";
let db: TestDatabase;
let api: RunningServer;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create schema crm;
    grant usage on schema crm to cartop_user, cartop_auditor;
    create table crm.people (id int primary key, name text, email text, notes jsonb, owner_id text);
    select audit.enable_tracking('crm.people', encrypted_columns => '{email,notes}', subject_column => 'owner_id');
    begin;
    select audit.set_context(user_id => 'u-1');
    insert into crm.people values (1, 'Ada', 'ada@example.com', '{"vip": true}', 's-ada'), (2, 'Bob', 'bob@example.com', null, 's-bob'),
                                  (3, 'Nobody', 'nobody@example.com', null, null);
    update crm.people set email = 'ada@lovelace.org', name = 'Ada L' where id = 1;
    commit;`);
  api = await startServer({ databaseUrl: db.url, config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000 } });
});
afterAll(async () => {
  await api?.close();
  await db?.drop();
});

/** Runs `sql` as `role` (SET ROLE from the test's superuser session), as user u-1 where RLS asks. */
async function as<T = Record<string, unknown>>(role: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    await client.query(`set local role ${role}`);
    await client.query(`select set_config('audit.user_id', 'u-1', true)`);
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.query("rollback");
    client.release();
  }
}
const history = (role: string) => as(role,
  `select entity_id, action, old_value, new_value, changes from audit.log where entity_name = 'people' order by id`);
const fieldChanges = (role: string) => as(role,
  `select field, old_value, new_value from audit.changes where entity_name = 'people' order by log_id, field`);
const stateOf = async (role: string, id: string) =>
  (await as<{ s: unknown }>(role, `select audit.row_as_of('people', $1, now()) as s`, [id]))[0]!.s;
async function graphql(role: "user" | "auditor") {
  const token = jwt.sign({ sub: "u-1", role }, SECRET, { expiresIn: "1h" });
  const response = await fetch(`${api.url}/graphql`, {
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: `{ auditLogs(first: 10, orderBy: ROW_ID_ASC, filter: { entityName: { equalTo: "people" } }) { nodes { entityId newValue changes } } }` }),
  });
  return ((await response.json()) as { data: { auditLogs: { nodes: unknown[] } } }).data.auditLogs.nodes;
}

describe("encrypted columns", () => {
  test("the trail holds ciphertext only: no plaintext and no key in any stored column", async () => {
    const { rows } = await db.pool.query(`select e::text as stored from audit_private.log_entries e
      join audit_private.tables t on t.id = e.table_id where t.table_name = 'people'`);
    expect(rows).toHaveLength(4);
    for (const { stored } of rows) {
      expect(stored).not.toMatch(/@example\.com|lovelace|vip/);
    }
    const { rows: [first] } = await db.pool.query(`select row_data from audit_private.log_entries e
      join audit_private.tables t on t.id = e.table_id where t.table_name = 'people' order by e.id limit 1`);
    expect(first.row_data).toMatchObject({ id: 1, name: "Ada", owner_id: "s-ada", email: expect.stringMatching(/^\[encrypted:\d+:[A-Za-z0-9+/=]+\]$/) });
  });

  test("auditors read plaintext in audit.log, audit.changes, row_as_of and GraphQL", async () => {
    expect(await history("cartop_auditor")).toEqual([
      { entity_id: "1", action: "INSERT", old_value: null, changes: null,
        new_value: { id: 1, name: "Ada", email: "ada@example.com", notes: { vip: true }, owner_id: "s-ada" } },
      { entity_id: "2", action: "INSERT", old_value: null, changes: null,
        new_value: { id: 2, name: "Bob", email: "bob@example.com", notes: null, owner_id: "s-bob" } },
      // No subject: no key that could be erased later, so the values are kept as masked, never in the clear.
      { entity_id: "3", action: "INSERT", old_value: null, changes: null,
        new_value: { id: 3, name: "Nobody", email: "[masked]", notes: "[masked]", owner_id: null } },
      { entity_id: "1", action: "UPDATE",
        old_value: { id: 1, name: "Ada", email: "ada@example.com", notes: { vip: true }, owner_id: "s-ada" },
        new_value: { id: 1, name: "Ada L", email: "ada@lovelace.org", notes: { vip: true }, owner_id: "s-ada" },
        changes: { name: { old: "Ada", new: "Ada L" }, email: { old: "ada@example.com", new: "ada@lovelace.org" } } },
    ]);
    expect(await fieldChanges("cartop_auditor")).toEqual([
      { field: "email", old_value: "ada@example.com", new_value: "ada@lovelace.org" },
      { field: "name", old_value: "Ada", new_value: "Ada L" },
    ]);
    expect(await stateOf("cartop_auditor", "1")).toEqual({ id: 1, name: "Ada L", email: "ada@lovelace.org", notes: { vip: true }, owner_id: "s-ada" });
    expect((await graphql("auditor"))[3]).toEqual({
      entityId: "1", newValue: { id: 1, name: "Ada L", email: "ada@lovelace.org", notes: { vip: true }, owner_id: "s-ada" },
      changes: { name: { old: "Ada", new: "Ada L" }, email: { old: "ada@example.com", new: "ada@lovelace.org" } } });
  });

  test("everyone else sees that a value changed, never the value", async () => {
    const user = await history("cartop_user");
    expect(user.map((r) => r.new_value)).toEqual([
      { id: 1, name: "Ada", email: "[encrypted]", notes: "[encrypted]", owner_id: "s-ada" },
      { id: 2, name: "Bob", email: "[encrypted]", notes: "[encrypted]", owner_id: "s-bob" },
      { id: 3, name: "Nobody", email: "[masked]", notes: "[masked]", owner_id: null },
      { id: 1, name: "Ada L", email: "[encrypted]", notes: "[encrypted]", owner_id: "s-ada" },
    ]);
    expect(user[3]!.changes).toEqual({ name: { old: "Ada", new: "Ada L" }, email: { old: "[encrypted]", new: "[encrypted]" } });
    expect(await fieldChanges("cartop_user")).toEqual([
      { field: "email", old_value: "[encrypted]", new_value: "[encrypted]" },
      { field: "name", old_value: "Ada", new_value: "Ada L" },
    ]);
    expect(await stateOf("cartop_user", "1")).toEqual({ id: 1, name: "Ada L", email: "[encrypted]", notes: "[encrypted]", owner_id: "s-ada" });
    expect(((await graphql("user"))[3] as { newValue: unknown }).newValue).toEqual(
      { id: 1, name: "Ada L", email: "[encrypted]", notes: "[encrypted]", owner_id: "s-ada" });
  });

  test("lower roles cannot read keys, call the decryption with a claim, or erase", async () => {
    const attempt = async (role: string, sql: string) => {
      const client = await db.pool.connect();
      try {
        await client.query("begin");
        await client.query(`set local role ${role}`);
        return await client.query(sql).then(() => "ok", (e: Error & { code?: string }) => e.code);
      } finally {
        await client.query("rollback");
        client.release();
      }
    };
    for (const role of ["cartop_user", "cartop_anonymous"]) {
      expect(await attempt(role, `select key from audit_private.subject_keys`)).toBe("42501");
    }
    // Readers of plaintext read the keys they decrypt with, with their own privilege (auditors, by default).
    expect(await attempt("cartop_auditor", `select key from audit_private.subject_keys`)).toBe("ok");
    for (const role of ["cartop_user", "cartop_auditor", "cartop_anonymous"]) {
      expect(await attempt(role, `select audit.erase_subject('s-ada')`)).toBe("42501");
    }
    // Decryption runs with the caller's privileges: a user calling it directly gets "[encrypted]".
    const { rows: [{ stored }] } = await db.pool.query(`select row_data -> 'email' as stored from audit_private.log_entries e
      join audit_private.tables t on t.id = e.table_id where t.table_name = 'people' order by e.id limit 1`);
    expect((await as<{ v: unknown }>("cartop_user", `select audit_private.revealed_value($1::jsonb) as v`, [JSON.stringify(stored)]))[0]!.v).toBe("[encrypted]");
  });

  test("a table owner's function run inside a superuser's session (an index expression at ANALYZE) reads no plaintext and no one else's rows", async () => {
    const evil = `evil_${Date.now()}`;
    await db.pool.query(`create role ${evil} login; grant cartop_user to ${evil}; create schema ${evil} authorization ${evil}`);
    const client = await db.pool.connect();
    try {
      await client.query(`set role ${evil}`);
      await client.query(`
        create table ${evil}.loot (what text);
        create function ${evil}.steal() returns void language plpgsql volatile as $$ begin
          perform set_config('audit.user_id', 'u-1', true);
          insert into ${evil}.loot values ('ran as ' || current_user);
          insert into ${evil}.loot select new_value::text from audit.log where entity_name = 'people';
          insert into ${evil}.loot select audit_private.revealed_value(row_data -> 'email')::text
            from audit_private.log_entries where row_data ? 'email' and row_data ->> 'email' like '[encrypted:%';
        end $$;
        create function ${evil}.grab(x int) returns int language plpgsql immutable as $$ begin perform ${evil}.steal(); return x; end $$;
        create table ${evil}.trap (x int);
        insert into ${evil}.trap values (1);
        create index on ${evil}.trap (${evil}.grab(x));
        delete from ${evil}.loot`);
      await client.query("reset role");
      await client.query(`analyze ${evil}.trap`);
      const { rows } = await client.query(`select what from ${evil}.loot`);
      // It ran, as the owner: no row of u-1's is its to read, and no value it can see is in the clear.
      expect(rows[0]).toEqual({ what: `ran as ${evil}` });
      for (const { what } of rows.slice(1)) expect(what).toMatch(/^"\[(encrypted|erased)\]"$/);
    } finally {
      await client.query("reset role");
      client.release();
      await db.pool.query(`drop schema ${evil} cascade; drop owned by ${evil}; drop role ${evil}`);
    }
  });

  test("text that only looks like ciphertext in a column encrypted later neither breaks reads nor decrypts", async () => {
    await db.pool.query(`create table crm.legacy (id int primary key, ssn text, sub text);
      select audit.enable_tracking('crm.legacy');
      insert into crm.legacy values (1, '[encrypted:99999999999999999999:AAAA]', 's-l'), (2, '[encrypted:1:AAAA]', 's-l');
      select audit.enable_tracking('crm.legacy', encrypted_columns => '{ssn}', subject_column => 'sub')`);
    for (const role of ["cartop_auditor", "cartop_user"]) {
      const rows = await as<{ ssn: unknown }>(role, `select new_value -> 'ssn' as ssn from audit.log where entity_name = 'legacy' order by id`);
      expect(rows.map((r) => r.ssn)).toEqual(role === "cartop_user" ? [] : ["[encrypted:99999999999999999999:AAAA]", "[encrypted:1:AAAA]"]);
    }
    await db.pool.query(`alter table crm.legacy add column born timestamptz`);
    expect((await errorOf(db.pool.query(`select audit.enable_tracking('crm.legacy', encrypted_columns => '{ssn}', subject_column => 'born')`))).message)
      .toBe("audit.enable_tracking: the subject column born of crm.legacy must be an integer, text or uuid column");
  });

  test("tracking refuses encryption without a subject, of a key column, and dropping it quietly", async () => {
    const refused = async (sql: string) => {
      const e = await errorOf(db.pool.query(sql));
      return [e.code, e.message];
    };
    expect(await refused(`select audit.enable_tracking('crm.people', encrypted_columns => '{email}')`)).toEqual(["22023",
      "audit.enable_tracking: encrypted columns of crm.people need a subject_column (whose value names the data subject each row belongs to)"]);
    expect(await refused(`select audit.enable_tracking('crm.people', encrypted_columns => '{id}', subject_column => 'owner_id')`)).toEqual(["22023",
      "audit.enable_tracking: primary key column(s) of crm.people cannot be excluded, masked or encrypted"]);
    expect(await refused(`select audit.enable_tracking('crm.people', encrypted_columns => '{email}', subject_column => 'owner_id')`)).toEqual(["22023",
      "audit.enable_tracking: crm.people would no longer encrypt notes"]);
    expect(await refused(`select audit.enable_tracking('crm.people', encrypted_columns => '{email,notes}', subject_column => 'missing')`)).toEqual(["42703",
      "audit.enable_tracking: table crm.people has no column(s) missing"]);
  });
});

describe("erasure", () => {
  let dir: string;
  let month: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "cartop-sensitive-"));
    // A month old enough to archive, holding copies of Bob's and Ada's encrypted rows (ciphertext as captured).
    month = (await db.pool.query(`select to_char(audit_private.current_month() - interval '14 months', 'YYYY-MM-DD') as m`)).rows[0].m;
    await db.pool.query(`select audit.create_partition($1::date)`, [month]);
    await db.pool.query(`
      insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user, statement_number)
      select $1::date + interval '3 days', e.tx_id, e.table_id, e.action, e.entity_id, e.row_data, e.db_user, 1
      from audit_private.log_entries e join audit_private.tables t on t.id = e.table_id
      where t.table_name = 'people' and e.action = 'I' and e.entity_id in ('1', '2')`, [month]);
  });
  afterAll(async () => rm(dir, { recursive: true, force: true }));

  test("erasing a subject makes its values read [erased] everywhere, is recorded, and cannot be undone", async () => {
    await sealDays(db.pool, { store: fileStore(dir) });
    await archiveMonth(db.pool, month, { store: fileStore(dir) });
    const { rows: [erasure] } = await db.pool.query(`select subject, erased_by, keys_destroyed from audit.erase_subject('s-ada')`);
    expect(erasure).toEqual({ subject: "s-ada", erased_by: "postgres", keys_destroyed: 1 });
    expect((await history("cartop_auditor")).map((r) => r.new_value)).toEqual([
      { id: 1, name: "Ada", email: "[erased]", notes: "[erased]", owner_id: "s-ada" },
      { id: 2, name: "Bob", email: "bob@example.com", notes: null, owner_id: "s-bob" },
      { id: 3, name: "Nobody", email: "[masked]", notes: "[masked]", owner_id: null },
      { id: 1, name: "Ada L", email: "[erased]", notes: "[erased]", owner_id: "s-ada" },
    ]);
    expect((await history("cartop_user"))[0]!.new_value).toMatchObject({ email: "[erased]" });
    expect(await fieldChanges("cartop_auditor")).toEqual([
      { field: "email", old_value: "[erased]", new_value: "[erased]" },
      { field: "name", old_value: "Ada", new_value: "Ada L" },
    ]);
    expect(await stateOf("cartop_auditor", "1")).toMatchObject({ email: "[erased]", notes: "[erased]" });
    expect(((await graphql("auditor"))[0] as { newValue: unknown }).newValue).toMatchObject({ email: "[erased]" });
    // Nothing of the key is left in the planner's statistics either.
    await db.pool.query(`analyze audit_private.subject_keys`);
    expect((await db.pool.query(`select count(*)::int as n from pg_stats where schemaname = 'audit_private' and tablename = 'subject_keys'
      and attname in ('key', 'subject')`)).rows).toEqual([{ n: 0 }]);
    // A subject with no key is recorded too, and says so.
    const client = await db.pool.connect();
    const notices: string[] = [];
    client.on("notice", (n) => notices.push(n.message ?? ""));
    try {
      expect((await client.query(`select keys_destroyed from audit.erase_subject('s-nobody')`)).rows).toEqual([{ keys_destroyed: 0 }]);
    } finally {
      client.release();
    }
    expect(notices).toEqual(["audit.erase_subject: no key for subject s-nobody: nothing of theirs is encrypted in the trail (or it was erased before)"]);
    // The archived month comes back as it was sealed, and its erased values stay erased.
    expect(await verifyArchive(db.pool, month, { store: fileStore(dir) })).toMatchObject({ ok: true });
    await restoreMonth(db.pool, month, { store: fileStore(dir) });
    const { rows: restored } = await db.pool.query(
      `select entity_id, new_value -> 'email' as email from audit.log where entity_name = 'people' and created_at < date_trunc('month', now()) order by entity_id`);
    expect(restored).toEqual([{ entity_id: "1", email: "[erased]" }, { entity_id: "2", email: "bob@example.com" }]);
    // Seals cover ciphertext: erasure changed no stored row.
    expect((await verifySeals(db.pool, { store: fileStore(dir) })).problems).toEqual([]);
    // Recorded, append-only. The trail's copies are gone; the table's own row is the application's to erase: a
    // later write records the row as it is then, under a new key, which cannot read the erased values.
    expect((await errorOf(db.pool.query(`delete from audit.erasures`))).message).toBe("audit trail is append-only: DELETE on audit.erasures is not allowed");
    await db.pool.query(`update crm.people set email = null, notes = null where id = 1`);
    const last = await history("cartop_auditor");
    expect(last.at(-1)).toMatchObject({ old_value: { email: "ada@lovelace.org" }, new_value: { email: null, notes: null } });
    expect(last[0]!.new_value).toMatchObject({ email: "[erased]" });
  });
});
