// The SQL sources (src/db/sourceSql.ts lists their folders) and the committed migrations must never drift apart.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { checkPostgresVersion, postgresVersionProblem } from "../src/db/migrate.ts";
import { projectRoot, sourceMigrationBody } from "../src/db/sourceSql.ts";
import type pg from "pg";
import { createPool } from "../src/db/pool.ts";
import { createDatabase, dropDatabase, scratchName } from "../src/db/scratch.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

async function latestCommittedMigration(): Promise<{ file: string; body: string }> {
  const folder = path.join(projectRoot, "migrations", "committed");
  const file = (await readdir(folder)).filter((f) => f.endsWith(".sql")).sort().at(-1)!;
  const text = await readFile(path.join(folder, file), "utf8");
  // graphile-migrate's header: `--! Name: value` lines, then one blank line.
  const body = text.replace(/^(--! [^\n]*\n)+\n/, "");
  return { file, body };
}

test("the latest committed migration installs exactly the current SQL sources", async () => {
  const { file, body } = await latestCommittedMigration();
  const expected = await sourceMigrationBody();
  if (body !== expected) {
    throw new Error(
      `migrations/committed/${file} differs from the SQL sources (src/db/sourceSql.ts lists their folders). ` +
        "Commit the SQL sources as a new migration: npm run migration:commit -- \"why\"",
    );
  }
  expect(body).toBe(expected);
});

/**
 * Everything the SQL sources create, as (object, definition) rows: relations with their columns (in order),
 * constraints, indexes, triggers, functions, views, types, policies, grants, comments and event triggers.
 * Partitions (which months exist depends on when a database was made) are left out.
 */
async function catalog(pool: pg.Pool): Promise<{ object: string; definition: string }[]> {
  // Grants in a stable order (their order in the ACL depends on the order they were made in).
  const acl = (column: string) => `(select string_agg(x::text, ',' order by x::text) from unnest(${column}) x)`;
  const { rows } = await pool.query(`
    with ns as (select oid from pg_namespace where nspname in ('audit', 'audit_private', 'app')),
    rel as (select c.* from pg_class c where c.relnamespace in (select oid from ns) and not c.relispartition
              and c.relname !~ '^log_[0-9]{4}_[0-9]{2}')
    select 'relation ' || c.oid::regclass::text as object,
           concat_ws(' | ', c.relkind, c.relpersistence, c.relrowsecurity, ${acl('c.relacl')}, obj_description(c.oid, 'pg_class'),
             pg_get_viewdef(c.oid),
             (select string_agg(format('%s %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod), case when a.attnotnull then ' not null' end,
                       ' ' || pg_get_expr(d.adbin, d.adrelid)) || coalesce(' -- ' || col_description(c.oid, a.attnum), ''), ', ' order by a.attnum)
                from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
               where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)) as definition
    from rel c
    union all
    select 'constraint ' || conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
    from pg_constraint where conrelid in (select oid from rel)
    union all
    select 'index ' || indexrelid::regclass::text, pg_get_indexdef(indexrelid) from pg_index where indrelid in (select oid from rel)
    union all
    select 'trigger ' || tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid) || ' ' || tgenabled::text
    from pg_trigger where not tgisinternal and tgrelid in (select oid from rel)
    union all
    select 'function ' || p.oid::regprocedure::text,
           concat_ws(' | ', pg_get_functiondef(p.oid), p.proowner::regrole::text, ${acl('p.proacl')}, obj_description(p.oid, 'pg_proc'))
    from pg_proc p where p.pronamespace in (select oid from ns) and p.prokind in ('f', 'p')
    union all
    select 'type ' || t.oid::regtype::text, concat_ws(' | ', t.typtype, format_type(t.typbasetype, t.typtypmod),
             (select string_agg(enumlabel::text, ',' order by enumsortorder) from pg_enum where enumtypid = t.oid))
    from pg_type t where t.typnamespace in (select oid from ns) and t.typtype in ('d', 'e')
    union all
    select 'policy ' || schemaname || '.' || tablename || '.' || policyname, concat_ws(' | ', cmd, roles::text, qual, with_check)
    from pg_policies where schemaname in ('audit', 'audit_private', 'app')
    union all
    select 'event trigger ' || evtname, concat_ws(' | ', evtevent, evtfoid::regprocedure::text, evtenabled, evttags::text)
    from pg_event_trigger
    union all
    select 'schema ' || nspname, concat_ws(' | ', ${acl('nspacl')}, obj_description(oid, 'pg_namespace')) from pg_namespace where oid in (select oid from ns)
    order by 1`);
  return rows;
}

test("the sources are idempotent: replaying them on a migrated database changes nothing", async () => {
  // The sources premake partitions ahead of now: bring the horizon up to now first, since the template may
  // have been migrated in the month before (the suite started before midnight at a month's end).
  await db.pool.query(`select audit.ensure_partitions(3)`);
  const before = await catalog(db.pool);
  await db.pool.query(`set client_min_messages = warning; ${await sourceMigrationBody()}`);
  expect(await catalog(db.pool)).toEqual(before);
});

test("a database migrated from 000001 ends up identical to a fresh install of the sources: nothing left behind", async () => {
  const serverUrl = process.env.CARTOP_TEST_SERVER_URL!;
  const name = scratchName("test_fresh");
  const fresh = createPool(await createDatabase(serverUrl, name, { template: "template0" }), { max: 1 });
  try {
    await fresh.query(`set client_min_messages = warning; begin; ${await sourceMigrationBody()}; commit`);
    // graphile-migrate's own bookkeeping is not part of the product.
    const installed = await catalog(fresh);
    const migrated = await catalog(db.pool);
    const byObject = (rows: { object: string; definition: string }[]) => new Map(rows.map((r) => [r.object, r.definition]));
    const [a, b] = [byObject(migrated), byObject(installed)];
    expect({
      onlyInMigrated: [...a.keys()].filter((k) => !b.has(k)),
      onlyInFresh: [...b.keys()].filter((k) => !a.has(k)),
      different: [...a.keys()].filter((k) => b.has(k) && a.get(k) !== b.get(k)),
    }).toEqual({ onlyInMigrated: [], onlyInFresh: [], different: [] });
  } finally {
    await fresh.end();
    await dropDatabase(serverUrl, name);
  }
});

test("a migration regenerates the capture of tables tracked before it (a changed generator reaches them)", async () => {
  await db.pool.query(`create table public.tracked_before (id int primary key, v text);
    select audit.enable_tracking('public.tracked_before');
    insert into public.tracked_before values (1, 'a')`);
  // Stand-in for capture generated by an older version: an UPDATE capture that records nothing.
  const { rows: [{ fn }] } = await db.pool.query(
    `select format('audit_private.capture_update_%s', id) as fn from audit_private.tables where table_name = 'tracked_before'`);
  await db.pool.query(`create or replace function ${fn}() returns trigger language plpgsql as $$ begin return null; end $$`);
  await db.pool.query(`update public.tracked_before set v = 'lost' where id = 1`);
  await db.pool.query(`set client_min_messages = warning; ${await sourceMigrationBody()}`);
  await db.pool.query(`update public.tracked_before set v = 'b' where id = 1`);
  const { rows } = await db.pool.query(
    `select changes from audit.log where entity_name = 'tracked_before' and action = 'UPDATE' order by id`);
  expect(rows).toEqual([{ changes: { v: { old: "lost", new: "b" } } }]);
});

test("migrating needs PostgreSQL 15 or later, and says which version it found", async () => {
  await expect(checkPostgresVersion(db.url)).resolves.toBeUndefined(); // the suite's servers are 15 and 18
  expect(postgresVersionProblem(140012, "14.12")).toBe("cartop-audit needs PostgreSQL 15 or later; this server is PostgreSQL 14.12");
  expect(postgresVersionProblem(150000, "15.0")).toBeNull();
});
