// The audit trail is append-only for everyone, and readable only by those who should read it.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { createTestDatabase, errorOf, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
let currentPartition: string;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create table public.docs (id integer primary key, title text);
    select audit.enable_tracking('public.docs');
    grant select, insert, update on public.docs to cartop_user;
    begin;
    select audit.set_context(user_id => 'alice');
    insert into public.docs values (1, 'alice doc');
    commit;
    begin;
    select audit.set_context(user_id => 'bob');
    insert into public.docs values (2, 'bob doc');
    commit;
    insert into public.docs values (3, 'dba doc');
  `);
  const { rows } = await db.pool.query(`select audit_private.partition_name(audit_private.current_month()) as name`);
  currentPartition = `audit.${rows[0].name}`;
});
afterAll(async () => db?.drop());

/** Runs statements as `role` (with optional audit.user_id) in a transaction that is rolled back. */
async function asRole(role: string, sql: string, userId?: string) {
  const client = await db.pool.connect();
  try {
    await client.query("begin");
    if (userId) await client.query("select set_config('audit.user_id', $1, true)", [userId]);
    await client.query(`set local role ${role}`);
    return await client.query(sql);
  } finally {
    await client.query("rollback");
    client.release();
  }
}

describe("append-only, for the owner too", () => {
  const targets = () => ["audit_private.log_entries", currentPartition, "audit.log_default"];

  test.each(["update %s set user_id = 'x'", "delete from %s", "truncate %s"])("%s is refused", async (template) => {
    for (const target of targets()) {
      const error = await errorOf(db.pool.query(template.replace("%s", target)));
      expect(error.message).toMatch(/^audit trail is append-only: (UPDATE|DELETE|TRUNCATE) on (audit_private\.log_entries|audit\.log_\w+) is not allowed$/);
      expect(error.code).toBe("42501");
    }
    const { rows } = await db.pool.query(`select count(*)::int as n from audit.log where entity_name = 'docs'`);
    expect(rows[0].n).toBe(3);
  });

  test("the audit.log view cannot be written either", async () => {
    await expect(db.pool.query(`delete from audit.log`)).rejects.toThrow(/cannot delete from view "log"/);
    await expect(db.pool.query(`update audit.log set user_id = 'x'`)).rejects.toThrow(/cannot update view "log"/);
  });
});

describe("application roles", () => {
  test.each(["cartop_user", "cartop_auditor", "cartop_anonymous", "cartop_authenticator"])(
    "%s cannot insert, update or delete audit rows",
    async (role) => {
      for (const sql of [
        `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, db_user) values (now(), 1, 1, 'I', '1', '{}', 'x')`,
        `update audit_private.log_entries set user_id = 'x'`,
        `delete from audit_private.log_entries`,
        `insert into ${currentPartition} (created_at, tx_id, table_id, action, entity_id, row_data, db_user) values (now(), 1, 1, 'I', '1', '{}', 'x')`,
      ]) {
        const error = await errorOf(asRole(role, sql));
        expect(error.message).toMatch(/^permission denied for (table|schema) /);
      }
    },
  );

  test("a user writing a tracked table still gets audited (through the capture functions)", async () => {
    const client = await db.pool.connect();
    try {
      await client.query(`begin; set local role cartop_user; select audit.set_context(user_id => 'carol');
                          insert into public.docs values (4, 'carol doc'); commit;`);
    } finally {
      client.release();
    }
    const { rows } = await db.pool.query(`select user_id, db_user from audit.log where entity_id = '4'`);
    expect(rows).toEqual([{ user_id: "carol", db_user: "cartop_user" }]);
  });

  test("a user reads only their own audit rows", async () => {
    const { rows } = await asRole("cartop_user", `select entity_id, user_id from audit.log order by entity_id`, "alice");
    expect(rows).toEqual([{ entity_id: "1", user_id: "alice" }]);
    const direct = await asRole("cartop_user", `select count(*)::int as n from audit_private.log_entries`, "bob");
    expect(direct.rows[0].n).toBe(1);
    const nobody = await asRole("cartop_user", `select count(*)::int as n from audit.log`);
    expect(nobody.rows[0].n).toBe(0);
  });

  test("an auditor reads everything; anonymous reads nothing", async () => {
    const { rows } = await asRole("cartop_auditor", `select count(*)::int as n from audit.log where entity_name = 'docs'`);
    expect(rows[0].n).toBeGreaterThanOrEqual(3);
    await expect(asRole("cartop_anonymous", `select count(*) from audit.log`)).rejects.toThrow(
      "permission denied for view log",
    );
  });
});
