// The capture generated for the example tables, committed (test/snapshots/capture.sql) the way schema.graphql is:
// a change to the generator shows up in review as a change to the code it writes. After an intended change:
// UPDATE_SNAPSHOTS=1 npm test -- test/capture-snapshot.test.ts
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { projectRoot } from "../src/db/sourceSql.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => db?.drop());

const snapshotFile = path.join(projectRoot, "test/snapshots/capture.sql");

test("the generated capture of the example tables is the committed snapshot", async () => {
  const { rows } = await db.pool.query<{ definition: string }>(`
    select format(E'-- %s.%s\\n%s;\\ncomment on function %s is %L;\\n', t.schema_name, t.table_name,
                  pg_get_functiondef(p.oid), p.oid::regprocedure, obj_description(p.oid, 'pg_proc')) as definition
    from audit_private.tables t
    cross join lateral audit_private.expected_capture_triggers(t.id) x
    join pg_proc p on p.oid = to_regprocedure(format('audit_private.%I()', x.function_name))
    where t.schema_name = 'app'
    order by t.table_name, x.function_name`);
  const generated = rows.map((r) => r.definition).join("\n");
  if (process.env.UPDATE_SNAPSHOTS) await writeFile(snapshotFile, generated);
  expect(generated).toBe(await readFile(snapshotFile, "utf8"));
});

test("a deploy rewrites no capture that is in place, and bumps no registry row", async () => {
  const state = async () => (await db.pool.query(`
    select t.table_name, t.updated_at, p.xmin::text as version from audit_private.tables t
    cross join lateral audit_private.expected_capture_triggers(t.id) x
    join pg_proc p on p.oid = to_regprocedure(format('audit_private.%I()', x.function_name))
    order by 1, 3`)).rows;
  const before = await state();
  const { sourceMigrationBody } = await import("../src/db/sourceSql.ts");
  await db.pool.query(`set client_min_messages = warning; ${await sourceMigrationBody()}`);
  expect(await state()).toEqual(before);
});
