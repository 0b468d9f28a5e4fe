// The SQL sources (triggers/, partitions/, reporting/, integrity/, example/) and the committed migrations must never drift apart.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { projectRoot, sourceMigrationBody } from "../src/db/sourceSql.ts";
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

test("the sources are idempotent: replaying them on a migrated database changes nothing", async () => {
  const snapshot = () =>
    db.pool.query(`
      select p.oid::regprocedure::text as name, md5(pg_get_functiondef(p.oid)) as def
      from pg_proc p where p.pronamespace in ('audit'::regnamespace, 'audit_private'::regnamespace, 'app'::regnamespace)
      union all
      select c.oid::regclass::text, md5(coalesce(pg_get_viewdef(c.oid), '') || c.relkind::text)
      from pg_class c where c.relnamespace in ('audit'::regnamespace, 'audit_private'::regnamespace, 'app'::regnamespace)
      union all
      select tgrelid::regclass::text || '.' || tgname, md5(pg_get_triggerdef(t.oid))
      from pg_trigger t where not tgisinternal and tgrelid::regclass::text ~ '^(audit|audit_private|app)\\.'
      order by 1`);
  const before = (await snapshot()).rows;
  await db.pool.query(`set client_min_messages = warning; ${await sourceMigrationBody()}`);
  const after = (await snapshot()).rows;
  expect(after).toEqual(before);
});
