// The trust boundary (SECURITY.md), attacked by the roles it must hold against: each test logs in as an
// unprivileged role (a table owner, a SQL login in cartop_user or cartop_auditor) and performs an attack
// that worked before; it asserts the attack is refused, or that no privileged code ran (the marker the
// attacker's function writes stays empty, rolsuper stays false) and the trail stayed exact.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import pg from "pg";
import { auditRowsOf, createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
const suffix = randomBytes(4).toString("hex");
const password = `pw-${suffix}`;
/** Owns tables (and types, casts, operators, functions); no cartop role, no access to the audit schemas. */
const owner = `owner_${suffix}`;
/** A SQL login in cartop_user. */
const sqlUser = `sqluser_${suffix}`;
/** A SQL login in cartop_auditor. */
const analyst = `analyst_${suffix}`;
/** A login set up like cartop_authenticator (member of the API roles, noinherit), for the API's path. */
const apiLogin = `api_${suffix}`;

function loginUrl(role: string): string {
  const url = new URL(db.url);
  url.username = role;
  url.password = password;
  return url.toString();
}

/** Runs `fn` on a fresh connection logged in as `role`; collects the notices it receives. */
async function as<T>(role: string, fn: (client: pg.Client, notices: string[]) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: loginUrl(role) });
  const notices: string[] = [];
  client.on("notice", (n) => notices.push(`${n.severity}: ${n.message}`));
  await client.connect();
  try {
    return await fn(client, notices);
  } finally {
    await client.end();
  }
}

async function isSuperuser(role: string): Promise<boolean> {
  const { rows } = await db.pool.query(`select rolsuper from pg_roles where rolname = $1`, [role]);
  return rows[0].rolsuper;
}

async function markers(): Promise<{ who: string; what: string }[]> {
  return (await db.pool.query(`select who, what from public.marker order by what, who`)).rows;
}

/** SQL (run as the owner) for a function that records who ran it and tries to make the owner a superuser. */
function pwnFunction(schema: string): string {
  return `
    create function ${schema}.pwn(what text) returns void language plpgsql as $$
    begin
      insert into public.marker values (current_user, what);
      begin
        execute 'alter role ${owner} superuser';
      exception when others then null;
      end;
    end $$;`;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create role ${owner} login password '${password}';
    create role ${sqlUser} login password '${password}' in role cartop_user;
    create role ${analyst} login password '${password}' in role cartop_auditor;
    create role ${apiLogin} login noinherit password '${password}' in role cartop_user, cartop_auditor;
    grant create on database ${db.name} to ${owner};
    create table public.marker (who text, what text);
    grant insert, select on public.marker to public;
  `);
});

afterAll(async () => {
  await db?.drop();
  const admin = new pg.Client({ connectionString: process.env.CARTOP_TEST_SERVER_URL });
  await admin.connect();
  for (const role of [owner, sqlUser, analyst, apiLogin]) await admin.query(`drop role if exists ${role}`);
  await admin.end();
});

describe("finding 1: nothing a table owner defines runs inside capture or its generator", () => {
  let tableId: number;

  beforeAll(async () => {
    // The owner's table uses its own enum, composite and domain types, with casts to json, jsonb and text,
    // equality operators, and a domain CHECK that calls back: every hook PostgreSQL offers a type owner.
    await as(owner, (c) => c.query(`
      create schema ev;
      ${pwnFunction("ev")}
      create type ev.mood as enum ('ok', 'bad');
      create type ev.pair as (a int, b text);
      create function ev.mood_json(ev.mood) returns json language plpgsql as $$ begin perform ev.pwn('cast mood json'); return '"forged"'; end $$;
      create function ev.mood_jsonb(ev.mood) returns jsonb language plpgsql as $$ begin perform ev.pwn('cast mood jsonb'); return '"forged"'; end $$;
      create function ev.mood_text(ev.mood) returns text language plpgsql as $$ begin perform ev.pwn('cast mood text'); return 'forged'; end $$;
      create function ev.pair_json(ev.pair) returns json language plpgsql as $$ begin perform ev.pwn('cast pair json'); return '"forged"'; end $$;
      create function ev.pair_jsonb(ev.pair) returns jsonb language plpgsql as $$ begin perform ev.pwn('cast pair jsonb'); return '"forged"'; end $$;
      create function ev.pair_text(ev.pair) returns text language plpgsql as $$ begin perform ev.pwn('cast pair text'); return 'forged'; end $$;
      create cast (ev.mood as json) with function ev.mood_json(ev.mood);
      create cast (ev.mood as jsonb) with function ev.mood_jsonb(ev.mood);
      create cast (ev.mood as text) with function ev.mood_text(ev.mood);
      create cast (ev.pair as json) with function ev.pair_json(ev.pair);
      create cast (ev.pair as jsonb) with function ev.pair_jsonb(ev.pair);
      create cast (ev.pair as text) with function ev.pair_text(ev.pair);
      create function ev.mood_eq(ev.mood, ev.mood) returns boolean language plpgsql as $$ begin perform ev.pwn('operator mood'); return true; end $$;
      create function ev.pair_eq(ev.pair, ev.pair) returns boolean language plpgsql as $$ begin perform ev.pwn('operator pair'); return true; end $$;
      create operator ev.= (leftarg = ev.mood, rightarg = ev.mood, function = ev.mood_eq);
      create operator ev.<> (leftarg = ev.mood, rightarg = ev.mood, function = ev.mood_eq);
      create operator ev.= (leftarg = ev.pair, rightarg = ev.pair, function = ev.pair_eq);
      create function ev.check_fn(int) returns boolean language plpgsql strict as $$ begin perform ev.pwn('domain check'); return true; end $$;
      create domain ev.checked as int check (ev.check_fn(value));
      -- Capture compares a domain as its base type; the domain's own operators must not be found.
      create function ev.checked_eq(ev.checked, ev.checked) returns boolean language plpgsql as $$ begin perform ev.pwn('operator checked'); return true; end $$;
      create operator ev.= (leftarg = ev.checked, rightarg = ev.checked, function = ev.checked_eq);
      create operator ev.<> (leftarg = ev.checked, rightarg = ev.checked, function = ev.checked_eq);
      create table ev.t (id int primary key, mood ev.mood, pair ev.pair, n ev.checked, moods ev.mood[], secret ev.mood, hidden ev.pair);
      -- The table's row type is the owner's too.
      create function ev.row_json(ev.t) returns json language plpgsql as $$ begin perform ev.pwn('cast row json'); return '{}'; end $$;
      create function ev.row_jsonb(ev.t) returns jsonb language plpgsql as $$ begin perform ev.pwn('cast row jsonb'); return '{}'; end $$;
      create function ev.row_text(ev.t) returns text language plpgsql as $$ begin perform ev.pwn('cast row text'); return ''; end $$;
      create cast (ev.t as json) with function ev.row_json(ev.t);
      create cast (ev.t as jsonb) with function ev.row_jsonb(ev.t);
      create cast (ev.t as text) with function ev.row_text(ev.t);
    `));
    // The migrating role (a superuser here) tracks it: the generator must evaluate none of it either.
    await db.pool.query(`select audit.enable_tracking('ev.t', excluded_columns => '{hidden}', masked_columns => '{secret}')`);
    expect(await markers()).toEqual([]);
    tableId = (await db.pool.query(`select id from audit_private.tables where schema_name = 'ev' and table_name = 't'`)).rows[0].id;
  });

  test("the owner's writes (all four capture functions) run none of its casts or operators, and the trail is exact", async () => {
    await as(owner, (c) => c.query(`
      insert into ev.t values (1, 'ok', '(1,x)', 5, '{ok,bad}', 'bad', '(2,y)');
      update ev.t set mood = 'bad', pair = '(3,z)', n = 6, moods = '{bad}', secret = 'ok', hidden = '(4,w)';
      delete from ev.t;
      insert into ev.t values (2, 'ok', null, null, null, null, null);
      truncate ev.t;
    `));
    // The domain CHECK ran only for the owner's own writes, as the owner (PostgreSQL's rule, not capture's).
    expect(await markers()).toEqual([{ who: owner, what: "domain check" }, { who: owner, what: "domain check" }]);
    expect(await isSuperuser(owner)).toBe(false);
    expect((await auditRowsOf(db.pool, "ev.t")).map((r) => [r.action, r.old_value, r.new_value, r.changes])).toEqual([
      ["INSERT", null, { id: 1, mood: "ok", pair: "(1,x)", n: 5, moods: "{ok,bad}", secret: "[masked]" }, null],
      ["UPDATE", { id: 1, mood: "ok", pair: "(1,x)", n: 5, moods: "{ok,bad}", secret: "[masked]" },
        { id: 1, mood: "bad", pair: "(3,z)", n: 6, moods: "{bad}", secret: "[masked]" },
        { mood: { old: "ok", new: "bad" }, pair: { old: "(1,x)", new: "(3,z)" }, n: { old: 5, new: 6 },
          moods: { old: "{ok,bad}", new: "{bad}" }, secret: { old: "[masked]", new: "[masked]" } }],
      ["DELETE", { id: 1, mood: "bad", pair: "(3,z)", n: 6, moods: "{bad}", secret: "[masked]" }, null, null],
      ["INSERT", null, { id: 2, mood: "ok", pair: null, n: null, moods: null, secret: "[masked]" }, null],
      ["TRUNCATE", null, null, null],
    ]);
  });

  test("writes by another role (here the superuser) run none of them either", async () => {
    await db.pool.query(`delete from public.marker`);
    await db.pool.query(`insert into ev.t values (3, 'bad', '(5,v)', null, '{ok}', 'ok', '(6,u)');
                         update ev.t set mood = 'ok', pair = '(7,t)' where id = 3; delete from ev.t where id = 3`);
    expect(await markers()).toEqual([]);
    expect(await isSuperuser(owner)).toBe(false);
  });

  test("capture is owned by cartop_capture, which is no superuser and can only append audit rows", async () => {
    const { rows } = await db.pool.query(`
      select p.proname::text as name, p.proowner::regrole::text as owner, p.prosecdef as definer,
             has_function_privilege('public', p.oid, 'execute') as public_execute
      from pg_proc p where p.proname ~ ('^capture_(insert|update|delete|truncate)_' || $1 || '$') order by 1`, [tableId]);
    expect(rows).toEqual(["delete", "insert", "truncate", "update"].map((op) => (
      { name: `capture_${op}_${tableId}`, owner: "cartop_capture", definer: true, public_execute: false })));
    const { rows: [role] } = await db.pool.query(`
      select rolsuper, rolcanlogin, rolbypassrls, rolcreaterole,
             has_table_privilege('cartop_capture', 'audit_private.log_entries', 'insert') as may_insert,
             has_table_privilege('cartop_capture', 'audit_private.log_entries', 'select, update, delete, truncate') as may_more,
             has_table_privilege('cartop_capture', 'audit_private.tables', 'select, update') as may_use_registry,
             has_schema_privilege('cartop_capture', 'audit_private', 'create') as may_create,
             (select count(*)::int from pg_auth_members where roleid = 'cartop_capture'::regrole) as members
      from pg_roles where rolname = 'cartop_capture'`);
    expect(role).toEqual({ rolsuper: false, rolcanlogin: false, rolbypassrls: false, rolcreaterole: false, may_insert: true,
      may_more: false, may_use_registry: false, may_create: false, members: 0 });
  });
});

describe("finding 2: names never become code", () => {
  // Each name leaves a comment and closes a dollar-quoted body if pasted; the rest would run as the generator.
  const payload = (prefix: string) => `${prefix}\n$function$;alter role ${owner} superuser;--`;
  const schema = payload("s");
  const table = payload("t");
  const excluded = payload("x");
  const masked = payload("m");
  const plain = `c'%s%I$template$"`;
  const q = (name: string) => `"${name.replaceAll('"', '""')}"`;
  const target = `${q(schema)}.${q(table)}`;

  test("in schema, table, excluded and masked column position, at enable_tracking and at regeneration after ALTER TABLE", async () => {
    await as(owner, (c) => c.query(`
      create schema ${q(schema)};
      create table ${target} (id int primary key, ${q(plain)} text, ${q(excluded)} text, ${q(masked)} text);
    `));
    await db.pool.query(`select audit.enable_tracking($1::regclass, excluded_columns => $2, masked_columns => $3)`,
      [target, [excluded], [masked]]);
    expect(await isSuperuser(owner)).toBe(false);
    await as(owner, async (c) => {
      await c.query(`insert into ${target} values (1, 'a', 'secret', 'hidden'); update ${target} set ${q(plain)} = 'b', ${q(excluded)} = 'z'`);
      // The event trigger regenerates capture after the owner's ALTER TABLE, as its owner: the names again.
      await c.query(`alter table ${target} add column ${q(payload("n"))} int`);
      await c.query(`update ${target} set ${q(payload("n"))} = 1; delete from ${target}; truncate ${target}`);
    });
    expect(await isSuperuser(owner)).toBe(false);
    const { rows } = await db.pool.query(
      `select entity_schema, entity_name, action, old_value, new_value, changes from audit.log where entity_schema = $1 order by id`, [schema]);
    expect(rows.map((r) => [r.entity_schema, r.entity_name, r.action, r.changes ?? r.new_value ?? r.old_value])).toEqual([
      [schema, table, "INSERT", { id: 1, [plain]: "a", [masked]: "[masked]" }],
      [schema, table, "UPDATE", { [plain]: { old: "a", new: "b" } }],
      [schema, table, "UPDATE", { [payload("n")]: { old: null, new: 1 } }],
      [schema, table, "DELETE", { id: 1, [plain]: "b", [masked]: "[masked]", [payload("n")]: 1 }],
      [schema, table, "TRUNCATE", null],
    ]);
    // Generated code carries no name in a comment.
    const { rows: sources } = await db.pool.query(
      `select p.prosrc from pg_proc p join pg_trigger g on g.tgfoid = p.oid where g.tgrelid = $1::regclass`, [target]);
    expect(sources).toHaveLength(4);
    for (const { prosrc } of sources) expect(prosrc).not.toMatch(/--[^\n]*\$function\$/);
  });
});

describe("finding 3: capture records only its own table, through its own triggers", () => {
  let victimId: number;
  beforeAll(async () => {
    await db.pool.query(`create table public.victim (id int primary key, v text); select audit.enable_tracking('public.victim');
                         insert into public.victim values (1, 'real')`);
    victimId = (await db.pool.query(`select id from audit_private.tables where table_name = 'victim'`)).rows[0].id;
  });

  const events = [
    ["insert", "after insert on pg_temp.forge referencing new table as new_rows", "insert into pg_temp.forge values (666, 'forged')"],
    ["update", "after update on pg_temp.forge referencing old table as old_rows new table as new_rows", "update pg_temp.forge set v = 'forged'"],
    ["delete", "after delete on pg_temp.forge referencing old table as old_rows", "delete from pg_temp.forge"],
    ["truncate", "after truncate on pg_temp.forge", "truncate pg_temp.forge"],
  ] as const;

  test.each([["cartop_user", () => sqlUser], ["cartop_auditor", () => analyst]])(
    "a %s login cannot attach any of the four capture functions to its own table",
    async (_role, login) => {
      await as(login(), async (c) => {
        await c.query(`create temp table forge (id int primary key, v text); insert into pg_temp.forge values (1, 'x')`);
        for (const [op, timing] of events) {
          const error = await errorOf(c.query(
            `create trigger _900_audit_${op} ${timing} for each statement execute function audit_private.capture_${op}_${victimId}()`));
          expect(error.code).toBe("42501");
          expect(error.message).toMatch(new RegExp(`^permission denied for function (audit_private\\.)?capture_${op}_${victimId}$`));
        }
        const direct = await errorOf(c.query(`insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user)
                                               values (now(), 1, ${victimId}, 'I', '666', '{}', 'x')`));
        expect(direct.code).toBe("42501");
      });
      expect((await auditRowsOf(db.pool, "public.victim")).map((r) => r.entity_id)).toEqual(["1"]);
    },
  );

  test("attached anywhere else (even by a superuser), each capture function refuses and records nothing", async () => {
    const client = await db.pool.connect();
    try {
      await client.query(`create temp table forge (id int primary key, v text)`);
      for (const [op, timing, write] of events) {
        await client.query(`insert into pg_temp.forge values (1, 'x') on conflict do nothing`);
        await client.query(`create trigger t_${op} ${timing} for each statement execute function audit_private.capture_${op}_${victimId}()`);
        const error = await errorOf(client.query(write));
        expect(error.code).toBe("42501");
        expect(error.message).toMatch(new RegExp(
          `^audit_private\\.capture_${op}_${victimId}: generated for ${op.toUpperCase()} on public\\.victim, fired AFTER ${op.toUpperCase()} on pg_temp_\\d+\\.forge$`));
        await client.query(`drop trigger t_${op} on pg_temp.forge`);
      }
    } finally {
      client.release();
    }
    expect((await auditRowsOf(db.pool, "public.victim")).map((r) => r.entity_id)).toEqual(["1"]);
  });
});

describe("finding 4: a table owner cannot remove capture without trace", () => {
  beforeAll(async () => {
    await as(owner, (c) => c.query(`create schema own; create table own.t (id int primary key, v text);
      create function own.noop() returns trigger language plpgsql as $$ begin return null; end $$;`));
    await db.pool.query(`select audit.enable_tracking('own.t')`);
  });

  const audited = async (id: number) =>
    (await db.pool.query(`select count(*)::int as n from audit.log where entity_schema = 'own' and entity_id = $1`, [String(id)])).rows[0].n;
  const state = async () =>
    (await db.pool.query(`select triggers_installed, triggers_active from audit.tracked_tables where schema_name = 'own'`)).rows[0];

  test("renaming a capture trigger is refused", async () => {
    await as(owner, async (c) => {
      for (const name of ["_900_audit_insert", "_900_audit_update", "_900_audit_delete", "_900_audit_truncate"]) {
        const error = await errorOf(c.query(`alter trigger ${name} on own.t rename to hidden`));
        expect([error.code, error.message]).toEqual(["55006",
          `cartop-audit: trigger hidden on own.t is not the capture trigger of this tracked table; capture triggers cannot be renamed, replaced or copied`]);
      }
    });
    expect(await state()).toEqual({ triggers_installed: 4, triggers_active: 4 });
  });

  test("replacing a capture trigger with a look-alike is refused", async () => {
    await as(owner, async (c) => {
      const error = await errorOf(c.query(
        `create or replace trigger _900_audit_insert after insert on own.t for each statement execute function own.noop()`));
      expect(error.code).toBe("55006");
      // Functions of audit_private are out of its reach altogether.
      const other = await errorOf(c.query(
        `create or replace trigger _900_audit_truncate after truncate on own.t for each statement execute function audit_private.tg__append_only()`));
      expect([other.code, other.message]).toEqual(["42501", "permission denied for schema audit_private"]);
    });
    expect(await state()).toEqual({ triggers_installed: 4, triggers_active: 4 });
  });

  test("dropping or disabling one puts it back at once; the writes are audited", async () => {
    await as(owner, async (c, notices) => {
      await c.query(`drop trigger _900_audit_insert on own.t`);
      expect(notices).toEqual(["WARNING: cartop-audit: a capture trigger of own.t, which is tracked, was dropped; capture was re-attached"]);
      await c.query(`insert into own.t values (1, 'a')`);
      await c.query(`alter table own.t disable trigger _900_audit_insert`);
      await c.query(`insert into own.t values (2, 'b')`);
      await c.query(`alter table own.t disable trigger all`);
      await c.query(`insert into own.t values (3, 'c')`);
      await c.query(`alter table own.t enable replica trigger _900_audit_insert`);
      await c.query(`insert into own.t values (4, 'd')`);
    });
    for (const id of [1, 2, 3, 4]) expect(await audited(id)).toBe(1);
    expect(await state()).toEqual({ triggers_installed: 4, triggers_active: 4 });
  });

  test("renaming its schema first does not hide the table from the guards: a dropped capture trigger comes back", async () => {
    await as(owner, async (c) => {
      await c.query(`create schema own_ren; create table own_ren.r (id int primary key)`);
    });
    await db.pool.query(`select audit.enable_tracking('own_ren.r')`);
    await as(owner, async (c, notices) => {
      await c.query(`alter schema own_ren rename to own_ren2`);
      await c.query(`drop trigger _900_audit_insert on own_ren2.r`);
      expect(notices).toEqual(["WARNING: cartop-audit: a capture trigger of own_ren2.r, which is tracked, was dropped; capture was re-attached"]);
      await c.query(`insert into own_ren2.r values (42)`);
      await c.query(`alter schema own_ren2 rename to own_ren`);
      await c.query(`insert into own_ren.r values (43)`);
    });
    const { rows } = await db.pool.query(
      `select entity_schema, entity_id from audit.log where entity_name = 'r' and action = 'INSERT' order by id`);
    expect(rows).toEqual([{ entity_schema: "own_ren", entity_id: "42" }, { entity_schema: "own_ren", entity_id: "43" }]);
    expect((await db.pool.query(`select schema_name, triggers_installed, triggers_active from audit.tracked_tables where table_name = 'r'`)).rows)
      .toEqual([{ schema_name: "own_ren", triggers_installed: 4, triggers_active: 4 }]);
  });

  test("where no event trigger fires (a superuser in replica mode), audit.coverage sees a renamed trigger and a look-alike by what they are", async () => {
    await db.pool.query(`set session_replication_role = replica;
      alter trigger _900_audit_insert on own.t rename to hidden;
      create trigger _900_audit_insert after insert on own.t referencing new table as new_rows for each statement execute function audit_private.tg__append_only();
      reset session_replication_role`);
    const { rows } = await db.pool.query(`select check_name, object, problem from audit.coverage where object like '%own.t%' order by 1, 2`);
    expect(rows).toEqual([
      { check_name: "capture_trigger_missing", object: "own.t", problem: "3 of 4 capture triggers installed, 3 enabled" },
      { check_name: "foreign_capture_trigger", object: "_900_audit_insert on own.t", problem: "runs audit_private.tg__append_only()" },
      { check_name: "foreign_capture_trigger", object: "hidden on own.t", problem: expect.stringMatching(/^runs audit_private\.capture_insert_\d+\(\)$/) },
    ]);
    // Repair: enable_tracking replaces the look-alike and removes the stray copy (no double capture).
    await db.pool.query(`select audit.enable_tracking('own.t')`);
    expect((await db.pool.query(`select * from audit.coverage where object like '%own.t%'`)).rows).toEqual([]);
    await db.pool.query(`insert into own.t values (5, 'e')`);
    expect(await audited(5)).toBe(1);
  });
});

describe("finding 5: the event triggers do nothing for untracked objects, and work for every role", () => {
  test("a role without access to the audit schemas alters and drops its untracked, temporary and tracked tables", async () => {
    await as(owner, async (c) => {
      await c.query(`create schema mig; create table mig.plain (id int primary key)`);
      await c.query(`alter table mig.plain add column v text`);
      await c.query(`alter table mig.plain rename column v to w`);
      await c.query(`create trigger some_trigger after insert on mig.plain for each statement execute function pg_catalog.suppress_redundant_updates_trigger()`).catch(() => undefined);
      await c.query(`drop table mig.plain`);
      await c.query(`create temp table scratch (id int primary key); alter table pg_temp.scratch add column v text; drop table pg_temp.scratch`);
      await c.query(`create table mig.tracked (id int primary key)`);
    });
    await db.pool.query(`select audit.enable_tracking('mig.tracked')`);
    await as(owner, async (c, notices) => {
      await c.query(`alter table mig.tracked add column v text`);
      await c.query(`insert into mig.tracked values (1, 'new column captured')`);
      await c.query(`drop table mig.tracked`);
      expect(notices).toEqual(["NOTICE: cartop-audit: tracked table mig.tracked was dropped; tracking ended, its audit history is kept"]);
    });
    expect((await auditRowsOf(db.pool, "mig.tracked")).map((r) => r.new_value)).toEqual([{ id: 1, v: "new column captured" }]);
  });
});

describe("finding 8: no SQL login reads another user's rows by setting a setting", () => {
  beforeAll(async () => {
    await db.pool.query(`create table public.notes (id int primary key, v text); select audit.enable_tracking('public.notes');
      begin; select audit.set_context(user_id => 'alice'); insert into public.notes values (1, 'alice'); commit;
      begin; select audit.set_context(user_id => '${sqlUser}'); insert into public.notes values (2, 'the login''s own'); commit;`);
  });
  const readAs = (login: string, role: string | null, userId: string) => as(login, async (c) => {
    await c.query("begin");
    await c.query(`select set_config('audit.user_id', $1, true)`, [userId]);
    if (role) await c.query(`set local role ${role}`);
    const read = async (sql: string) => (await c.query(sql)).rows.map((r) => r.entity_id);
    const result = {
      log: await read(`select entity_id from audit.log where entity_name = 'notes' order by 1`),
      history: await read(`select entity_id from audit.entity_history('notes', '1')`),
      activity: await read(`select entity_id from audit.user_activity('alice')`),
    };
    await c.query("rollback");
    return result;
  });

  test("a cartop_user login that claims to be alice reads only the rows recorded under its own login name", async () => {
    expect(await readAs(sqlUser, null, "alice")).toEqual({ log: ["2"], history: [], activity: [] });
  });

  test("the API's kind of login (member of the API roles) still reads per request the rows of the user it sets", async () => {
    expect(await readAs(apiLogin, "cartop_user", "alice")).toEqual({ log: ["1"], history: ["1"], activity: ["1"] });
  });

  test("a cartop_auditor login reads everything, as auditors do", async () => {
    expect((await readAs(analyst, null, "nobody")).log).toEqual(["1", "2"]);
  });

  test("a cartop_user login reads of the registry only what audit.log needs", async () => {
    await as(sqlUser, async (c) => {
      expect((await errorOf(c.query(`select excluded_columns, masked_columns from audit_private.tables`))).code).toBe("42501");
      expect((await errorOf(c.query(`select * from audit.tracked_tables`))).code).toBe("42501");
      expect((await c.query(`select count(*)::int as n from audit_private.tables where table_name = 'notes'`)).rows[0].n).toBe(1);
    });
  });
});

describe("medium: the example API's users change only themselves, also from SQL", () => {
  test("a cartop_user SQL login that sets audit.user_id to another user's id reads and changes no one's app.users row", async () => {
    const { rows: [victim] } = await db.pool.query(`select (app.create_user('victim@example.com', 'Vic', 'Tim', 'secret-1')).id::text as id`);
    await as(sqlUser, async (c) => {
      await c.query("begin");
      await c.query(`select set_config('audit.user_id', $1, true)`, [victim.id]);
      expect((await c.query(`select count(*)::int as n from app.users where id = $1`, [victim.id])).rows[0].n).toBe(0);
      expect((await c.query(`update app.users set first_name = 'owned' where id = $1`, [victim.id])).rowCount).toBe(0);
      expect((await errorOf(c.query(`select app.set_user_password($1, 'taken-over')`, [victim.id]))).message)
        .toMatch(/^app\.set_user_password: no user/);
      await c.query("rollback");
    });
    expect((await db.pool.query(`select first_name from app.users where id = $1`, [victim.id])).rows).toEqual([{ first_name: "Vic" }]);
  });
});

describe("low: upkeep cannot be stalled by another role", () => {
  test("holding the old advisory lock key stalls nothing, and the lock that counts is out of reach", async () => {
    await as(sqlUser, async (c) => {
      await c.query(`select pg_advisory_lock(hashtext('cartop-audit:partitions')), pg_advisory_lock(hashtext('cartop-audit:activity-summary'))`);
      const other = await db.pool.connect();
      try {
        await other.query(`set statement_timeout = '20s'`);
        await other.query(`select audit.create_partition((audit_private.current_month() + interval '7 months')::date)`);
        await other.query(`select audit.summarize_activity()`);
      } finally {
        await other.query(`reset statement_timeout`);
        other.release();
      }
      for (const sql of [`lock table audit_private.partition_maintenance`, `lock table audit_private.activity_summary_state`,
        `lock table audit_private.seal_and_archive_runs in share update exclusive mode`]) {
        await c.query("begin");
        expect((await errorOf(c.query(sql))).code).toBe("42501");
        await c.query("rollback");
      }
    });
  });
});
