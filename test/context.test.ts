// Context: who did it travels in transaction-local settings and lands in the audit row's columns.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import pg from "pg";
import { pgSettingsFor } from "../src/graphql/preset.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    create table public.notes (id serial primary key, body text);
    select audit.enable_tracking('public.notes');
  `);
});
afterAll(async () => db?.drop());

const contextColumns = `user_id, user_email, host(ip_address) as ip_address, user_agent, request_id, metadata, db_user, application_name`;

async function contextOf(body: string) {
  const { rows } = await db.pool.query(
    `select ${contextColumns} from audit.log where entity_name = 'notes' and new_value->>'body' = $1`,
    [body],
  );
  expect(rows).toHaveLength(1);
  return rows[0];
}

describe("context settings", () => {
  test("every setting lands in its column", async () => {
    await db.pool.query(`begin;
      select set_config('audit.user_id', 'user-42', true), set_config('audit.user_email', 'ada@example.com', true),
             set_config('audit.ip_address', '203.0.113.9', true), set_config('audit.user_agent', 'curl/8.0', true),
             set_config('audit.request_id', 'req-1', true), set_config('audit.metadata', '{"tenant": "acme", "n": 1}', true),
             set_config('application_name', 'billing-api', true);
      insert into public.notes (body) values ('settings');
      commit;`);
    expect(await contextOf("settings")).toEqual({
      user_id: "user-42", user_email: "ada@example.com", ip_address: "203.0.113.9", user_agent: "curl/8.0",
      request_id: "req-1", metadata: { tenant: "acme", n: 1 }, db_user: "postgres", application_name: "billing-api",
    });
  });

  test("audit.set_context with named arguments; later calls add to the context", async () => {
    await db.pool.query(`begin;
      select audit.set_context(user_id => 'u-7', ip_address => '2001:db8::1', metadata => '{"source": "import"}');
      select audit.set_context(request_id => 'req-7');
      set local application_name = 'importer';
      insert into public.notes (body) values ('set_context');
      commit;`);
    expect(await contextOf("set_context")).toEqual({
      user_id: "u-7", user_email: null, ip_address: "2001:db8::1", user_agent: null, request_id: "req-7",
      metadata: { source: "import" }, db_user: "postgres", application_name: "importer",
    });
  });

  test("set_context refuses metadata that is not a JSON object", async () => {
    await expect(db.pool.query(`select audit.set_context(metadata => '[1, 2]')`)).rejects.toThrow(
      "audit.set_context: metadata must be a JSON object, got array",
    );
  });

  test("without context (a DBA in psql) the row still records the database role and application", async () => {
    await db.pool.query(`set application_name = 'psql'; insert into public.notes (body) values ('no context'); reset application_name;`);
    expect(await contextOf("no context")).toEqual({
      user_id: null, user_email: null, ip_address: null, user_agent: null, request_id: null, metadata: null,
      db_user: "postgres", application_name: "psql",
    });
  });

  test("db_user is the role the session switched to", async () => {
    await db.pool.query(`begin; set local role cartop_user; insert into public.notes (body) values ('as user'); commit;`).catch(
      async () => {
        // cartop_user has no rights on public.notes yet: grant, then retry.
        await db.pool.query(`rollback; grant insert on public.notes to cartop_user; grant usage on sequence public.notes_id_seq to cartop_user;`);
        await db.pool.query(`begin; set local role cartop_user; insert into public.notes (body) values ('as user'); commit;`);
      },
    );
    expect((await contextOf("as user")).db_user).toBe("cartop_user");
  });

  test("context never leaks into the next transaction on the same connection", async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query(`begin; select audit.set_context(user_id => 'leaky', metadata => '{"a": 1}');
                          insert into public.notes (body) values ('first'); commit;`);
      await client.query(`insert into public.notes (body) values ('second')`);
    } finally {
      await client.end();
    }
    expect((await contextOf("first")).user_id).toBe("leaky");
    expect(await contextOf("second")).toMatchObject({ user_id: null, metadata: null });
  });

  test("concurrent connections never mix their contexts", async () => {
    const clients = await Promise.all([0, 1, 2, 3].map(async () => {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      return c;
    }));
    try {
      await Promise.all(clients.map(async (client, worker) => {
        for (let i = 0; i < 50; i++) {
          const user = `worker-${worker}`;
          await client.query("begin");
          await client.query("select audit.set_context(user_id => $1, request_id => $2)", [user, `${user}-${i}`]);
          await client.query("select pg_sleep(0.001)");
          await client.query("insert into public.notes (body) values ($1)", [`concurrent ${user} ${i}`]);
          await client.query("commit");
        }
      }));
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
    const { rows } = await db.pool.query(`
      select count(*)::int as n,
             count(*) filter (where new_value->>'body' = 'concurrent ' || user_id || ' ' || split_part(request_id, '-', 3))::int as matching
      from audit.log where entity_name = 'notes' and new_value->>'body' like 'concurrent %'`);
    expect(rows[0]).toEqual({ n: 200, matching: 200 });
  });
});

describe("malformed context", () => {
  test("metadata that is not JSON is kept as text under invalid_context; the write succeeds", async () => {
    await db.pool.query(`begin; select set_config('audit.metadata', '{oops', true);
                         insert into public.notes (body) values ('bad json'); commit;`);
    expect((await contextOf("bad json")).metadata).toEqual({ invalid_context: { "audit.metadata": "{oops" } });
  });

  test("metadata that is JSON but not an object is kept the same way", async () => {
    await db.pool.query(`begin; select set_config('audit.metadata', '"just a string"', true);
                         insert into public.notes (body) values ('scalar json'); commit;`);
    expect((await contextOf("scalar json")).metadata).toEqual({ invalid_context: { "audit.metadata": '"just a string"' } });
  });

  test("an ip_address that is not an address leaves the column null and keeps the text", async () => {
    await db.pool.query(`begin; select set_config('audit.ip_address', 'not-an-ip', true),
                                       set_config('audit.metadata', '{"k": "v"}', true);
                         insert into public.notes (body) values ('bad ip'); commit;`);
    expect(await contextOf("bad ip")).toMatchObject({
      ip_address: null,
      metadata: { k: "v", invalid_context: { "audit.ip_address": "not-an-ip" } },
    });
  });
});

describe("checked context: no subtransaction on the API's path", () => {
  /** Runs `writes` in one transaction with function-call counting on; returns how often each function ran. */
  async function calls(settings: Record<string, string>, writes: string) {
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      await client.query("set local track_functions = 'pl'");
      for (const [name, value] of Object.entries(settings)) await client.query("select set_config($1, $2, true)", [name, value]);
      // Pending counts may still hold earlier transactions of this backend: count the difference.
      const count = async () => (await client.query(`select
        coalesce(pg_stat_get_xact_function_calls(format('audit_private.capture_insert_%s()',
          (select id from audit_private.tables where table_name = 'notes'))::regprocedure), 0)::int as capture,
        coalesce(pg_stat_get_xact_function_calls('audit_private.checked_context(text, text)'::regprocedure), 0)::int as checking`)).rows[0];
      const before = await count();
      await client.query(writes);
      const after = await count();
      const counts = { capture: after.capture - before.capture, checking: after.checking - before.checking };
      await client.query("commit");
      return counts;
    } finally {
      client.release();
    }
  }
  const identity = (ip: string) => pgSettingsFor({ requestId: "req-api", ip, userAgent: "ua", claims: { sub: "u-1", role: "user" } });

  test("an API request's context (IPv4 or IPv6) is cast as it is, without the checking subtransaction", async () => {
    for (const [ip, body] of [["198.51.100.7", "api v4"], ["2001:db8::42", "api v6"]] as const) {
      const { role: _role, statement_timeout: _timeout, ...settings } = identity(ip);
      expect(await calls(settings, `insert into public.notes (body) values ('${body}')`)).toEqual({ capture: 1, checking: 0 });
      expect(await contextOf(body)).toMatchObject({ user_id: "u-1", ip_address: ip, request_id: "req-api", metadata: null });
    }
  });

  test("set_context's values are checked when set; set_config's are checked by capture", async () => {
    expect(await calls({}, `select audit.set_context(user_id => 'u-2', ip_address => '203.0.113.5', metadata => '{"a": 1}');
      insert into public.notes (body) values ('checked by set_context')`)).toEqual({ capture: 1, checking: 0 });
    expect(await contextOf("checked by set_context")).toMatchObject({ ip_address: "203.0.113.5", metadata: { a: 1 } });

    expect(await calls({ "audit.ip_address": "203.0.113.6" }, `insert into public.notes (body) values ('set_config')`))
      .toEqual({ capture: 1, checking: 1 });
    expect(await contextOf("set_config")).toMatchObject({ ip_address: "203.0.113.6", metadata: null });
  });

  test("set_context does not vouch for a value set_config left before it: the bad text is still kept", async () => {
    expect(await calls({ "audit.metadata": "{oops" }, `select audit.set_context(ip_address => '203.0.113.8');
      insert into public.notes (body) values ('unchecked metadata kept')`)).toEqual({ capture: 1, checking: 1 });
    expect(await contextOf("unchecked metadata kept")).toMatchObject({
      ip_address: "203.0.113.8", metadata: { invalid_context: { "audit.metadata": "{oops" } } });
  });

  test("an address behind TRUST_PROXY that inet cannot read is sent unchecked, and kept as text", async () => {
    const settings = identity("fe80::1%eth0");
    expect(settings["audit_private.context_checked"]).toBeUndefined();
    const { role: _role, statement_timeout: _timeout, ...rest } = settings;
    expect(await calls(rest, `insert into public.notes (body) values ('zone id')`)).toEqual({ capture: 1, checking: 1 });
    expect(await contextOf("zone id")).toMatchObject({ ip_address: null, metadata: { invalid_context: { "audit.ip_address": "fe80::1%eth0" } } });
  });

  test("two different (ip, metadata) pairs never read as the same marker: values set_config changed after set_context are checked", async () => {
    // "1.2.3.4/32" + "|" + '{"a": "b|c"}' and "1.2.3.4/32|{"a": "b" + "|" + 'c"}' would concatenate alike.
    expect(await calls({}, `select audit.set_context(ip_address => '1.2.3.4', metadata => '{"a": "b|c"}');
      select set_config('audit.ip_address', '1.2.3.4/32|{"a": "b', true), set_config('audit.metadata', 'c"}', true);
      insert into public.notes (body) values ('ambiguous marker')`)).toEqual({ capture: 1, checking: 1 });
    expect(await contextOf("ambiguous marker")).toMatchObject({
      ip_address: null, metadata: { invalid_context: { "audit.ip_address": '1.2.3.4/32|{"a": "b', "audit.metadata": 'c"}' } } });
  });

  test("a forged marker for a value that does not parse fails only the forger's own write", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      await client.query(`select set_config('audit.ip_address', 'nope', true),
        set_config('audit_private.context_checked', audit_private.context_checked_marker('nope', null), true)`);
      await expect(client.query(`insert into public.notes (body) values ('forged')`)).rejects.toThrow('invalid input syntax for type inet: "nope"');
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});
