// Test helpers: a fresh database per test file (cloned from the migrated template), and readers for
// the audit trail that strip what changes from run to run.
import type pg from "pg";
import { createPool } from "../src/db/pool.ts";
import { createDatabase, dropDatabase, scratchName } from "../src/db/scratch.ts";

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  drop(): Promise<void>;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with npm test (jest globalSetup sets it)`);
  return value;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = required("CARTOP_TEST_SERVER_URL");
  const name = scratchName("test");
  const url = await createDatabase(serverUrl, name, { template: required("CARTOP_TEST_TEMPLATE") });
  // An idle connection dropped by the server (the database is dropped at the end) is not a test failure.
  const pool = createPool(url, { max: 6 });
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end();
      await dropDatabase(serverUrl, name);
    },
  };
}

/** Runs `fn` in a transaction on one connection and commits. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    const result = await fn(client);
    await client.query("commit");
    return result;
  } catch (error) {
    await client.query("rollback");
    throw error;
  } finally {
    client.release();
  }
}

export interface AuditRow {
  entity_schema: string;
  entity_name: string;
  entity_id: string | null;
  action: string;
  old_value: Record<string, unknown> | null;
  new_value: Record<string, unknown> | null;
  changes: Record<string, { old: unknown; new: unknown }> | null;
}

/** The audit rows of one table in id order, without ids, times and context. */
export async function auditRowsOf(db: pg.Pool | pg.PoolClient, table: string): Promise<AuditRow[]> {
  const [schema, name] = table.includes(".") ? table.split(".") : ["public", table];
  const { rows } = await db.query<AuditRow>(
    `select entity_schema, entity_name, entity_id, action, old_value, new_value, changes
       from audit.log where entity_schema = $1 and entity_name = $2 order by id`,
    [schema, name],
  );
  return rows;
}

export async function countAuditRows(db: pg.Pool | pg.PoolClient, table: string, action?: string): Promise<number> {
  const [schema, name] = table.split(".");
  const { rows } = await db.query<{ n: string }>(
    `select count(*) as n from audit.log
      where entity_schema = $1 and entity_name = $2 and ($3::text is null or action = $3)`,
    [schema, name, action ?? null],
  );
  return Number(rows[0]!.n);
}

/** The error a promise rejects with (fails the test if it resolves). */
export async function errorOf(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error("expected the statement to fail, but it succeeded");
}

/** First day (YYYY-MM-DD) of the month `back` months before the current UTC month: tests never depend on today's date. */
export function monthsAgo(back: number): string {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - back, 1)).toISOString().slice(0, 10);
}
