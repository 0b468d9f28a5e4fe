// The GraphQL API over real HTTP against a real server: request context reaches the audit rows, access
// control, queries over the trail, and the limits.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { readFile } from "node:fs/promises";
import path from "node:path";
import jwt from "jsonwebtoken";
import { projectRoot } from "../src/db/sourceSql.ts";
import { printedSchema } from "../src/graphql/printSchema.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

const SECRET = "test-secret-0123456789-0123456789-abcdef";
let db: TestDatabase;
let api: RunningServer; // TRUST_PROXY on
let direct: RunningServer; // TRUST_PROXY off

const config = (overrides: Partial<{ trustProxy: boolean | number; rateLimitPerMinute: number }> = {}) => ({
  port: 0, jwtSecret: SECRET, trustProxy: 1, rateLimitPerMinute: 10_000, ...overrides,
});

beforeAll(async () => {
  db = await createTestDatabase();
  api = await startServer({ databaseUrl: db.url, config: config() });
  direct = await startServer({ databaseUrl: db.url, config: config({ trustProxy: false }) });
});
afterAll(async () => {
  await api?.close();
  await direct?.close();
  await db?.drop();
});

function token(claims: Record<string, unknown>, options: jwt.SignOptions = {}, secret = SECRET): string {
  return jwt.sign(claims, secret, { algorithm: "HS256", expiresIn: "5m", ...options });
}

interface GqlResponse {
  status: number;
  headers: Headers;
  body: { data?: Record<string, any>; errors?: { message: string }[] };
}

async function gql(server: RunningServer, query: string, variables: Record<string, unknown> = {},
  options: { token?: string; headers?: Record<string, string> } = {}): Promise<GqlResponse> {
  const response = await fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: {
      "content-type": "application/json", accept: "application/json",
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...options.headers,
    },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, headers: response.headers, body: await response.json() as GqlResponse["body"] };
}

const alice = () => token({ sub: "alice-id", email: "alice@example.com", role: "user" });
const bob = () => token({ sub: "bob-id", email: "bob@example.com", role: "user" });
const auditor = () => token({ sub: "auditor-id", email: "audit@example.com", role: "auditor" });
const admin = () => token({ sub: "admin-id", email: "admin@example.com", role: "admin" });

describe("request context reaches the audit trail", () => {
  test("createUser, updateUser and deleteUser are attributed to the caller exactly", async () => {
    // One trusted proxy: the client is the address the proxy appended last; what the client sent before
    // it ("198.51.100.66", a spoofing attempt) is ignored.
    const headers = { "x-forwarded-for": "198.51.100.66, 203.0.113.77", "user-agent": "cartop-tests/1.0", "x-request-id": "req-context-1" };
    const created = await gql(api, `mutation($input: CreateUserInput!) { createUser(input: $input) { result { id rowId email firstName } } }`,
      { input: { email: "ada@example.com", firstName: "Ada", lastName: "Lovelace", password: "correct horse battery" } },
      { token: admin(), headers });
    expect(created.status).toBe(200);
    expect(created.headers.get("x-request-id")).toBe("req-context-1");
    const user = created.body.data!.createUser.result;
    expect(user).toMatchObject({ email: "ada@example.com", firstName: "Ada" });

    const updated = await gql(api, `mutation($id: ID!) { updateUserById(input: { id: $id, patch: { lastName: "King" } }) { user { lastName } } }`,
      { id: user.id }, { token: admin(), headers: { ...headers, "x-request-id": "req-context-2" } });
    expect(updated.body).toEqual({ data: { updateUserById: { user: { lastName: "King" } } } });
    const deleted = await gql(api, `mutation($id: ID!) { deleteUserById(input: { id: $id }) { deletedUserId } }`,
      { id: user.id }, { token: admin(), headers: { ...headers, "x-request-id": "req-context-3" } });
    expect(deleted.status).toBe(200);
    expect(deleted.body.errors).toBeUndefined();

    const { rows } = await db.pool.query(
      `select action, user_id, user_email, host(ip_address) as ip, user_agent, request_id, db_user
         from audit.log where entity_name = 'users' and entity_id = $1 order by id`, [user.rowId]);
    const who = { user_id: "admin-id", user_email: "admin@example.com", ip: "203.0.113.77", user_agent: "cartop-tests/1.0", db_user: "cartop_admin" };
    expect(rows).toEqual([
      { action: "INSERT", request_id: "req-context-1", ...who },
      { action: "UPDATE", request_id: "req-context-2", ...who },
      { action: "DELETE", request_id: "req-context-3", ...who },
    ]);
  });

  test("without TRUST_PROXY, X-Forwarded-For is ignored and a request id is generated and echoed", async () => {
    const created = await gql(direct, `mutation { createProduct(input: { product: { name: "direct", price: "1.00" } }) { product { rowId } } }`,
      {}, { token: bob(), headers: { "x-forwarded-for": "198.51.100.1" } });
    expect(created.body.errors).toBeUndefined();
    const requestId = created.headers.get("x-request-id")!;
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    const { rows } = await db.pool.query(
      `select host(ip_address) as ip, request_id, user_id from audit.log where entity_name = 'products' and entity_id = $1`,
      [String(created.body.data!.createProduct.product.rowId)]);
    expect(rows).toEqual([{ ip: "127.0.0.1", request_id: requestId, user_id: "bob-id" }]);
  });

  test("concurrent requests from different users never swap contexts", async () => {
    const users = ["u1", "u2", "u3", "u4"];
    const results = await Promise.all(Array.from({ length: 48 }, (_, i) => {
      const sub = users[i % users.length]!;
      return gql(api, `mutation($name: String!) { createProduct(input: { product: { name: $name, price: "2.50" } }) { product { rowId } } }`,
        { name: `from ${sub} #${i}` }, { token: token({ sub, role: "user" }), headers: { "x-request-id": `parallel-${i}` } });
    }));
    expect(results.every((r) => r.status === 200 && !r.body.errors)).toBe(true);
    const { rows } = await db.pool.query(`
      select count(*)::int as n,
             count(*) filter (where new_value->>'name' = 'from ' || user_id || ' #' || split_part(request_id, '-', 2))::int as matching
        from audit.log where entity_name = 'products' and request_id like 'parallel-%'`);
    expect(rows[0]).toEqual({ n: 48, matching: 48 });
  });
});

describe("reading the trail", () => {
  let productId: string;
  beforeAll(async () => {
    const created = await gql(api, `mutation { createProduct(input: { product: { name: "history", price: "10.00", stock: 1 } }) { product { id rowId } } }`,
      {}, { token: alice() });
    productId = String(created.body.data!.createProduct.product.rowId);
    for (const stock of [2, 3]) {
      await gql(api, `mutation($id: ID!, $stock: Int!) { updateProductById(input: { id: $id, patch: { stock: $stock } }) { product { stock } } }`,
        { id: created.body.data!.createProduct.product.id, stock }, { token: alice() });
    }
  });

  test("entityHistory returns one entity's rows newest first, agreeing with SQL", async () => {
    const result = await gql(api, `query($id: String!) { entityHistory(entityName: "products", entityId: $id, first: 10) {
        nodes { rowId action changes userId } } }`, { id: productId }, { token: auditor() });
    const nodes = result.body.data!.entityHistory.nodes;
    expect(nodes.map((n: { action: string; changes: unknown }) => [n.action, n.changes])).toEqual([
      ["UPDATE", { stock: { old: 2, new: 3 }, updated_at: expect.any(Object) }],
      ["UPDATE", { stock: { old: 1, new: 2 }, updated_at: expect.any(Object) }],
      ["INSERT", null],
    ]);
    const { rows } = await db.pool.query(`select id::text from audit.log where entity_name = 'products' and entity_id = $1 order by id desc`, [productId]);
    expect(nodes.map((n: { rowId: string }) => n.rowId)).toEqual(rows.map((r) => r.id));
  });

  test("rowAsOf gives the row's state at a past time, or null before it existed", async () => {
    const { rows: [{ after_insert, before }] } = await db.pool.query(
      `select (min(created_at) + interval '1 microsecond')::text as after_insert, (min(created_at) - interval '1 second')::text as before
         from audit.log where entity_name = 'products' and entity_id = $1`, [productId]);
    const result = await gql(api, `query($id: String!, $at: Datetime!, $before: Datetime!) {
        then: rowAsOf(entityName: "app.products", entityId: $id, at: $at)
        earlier: rowAsOf(entityName: "app.products", entityId: $id, at: $before) }`,
      { id: productId, at: after_insert, before }, { token: auditor() });
    expect(result.body.errors).toBeUndefined();
    expect(result.body.data!.then).toMatchObject({ name: "history", stock: 1, price: 10 });
    expect(result.body.data!.earlier).toBeNull();
  });

  test("userActivity and a filtered, paginated auditLogs agree with SQL", async () => {
    const activity = await gql(api, `{ userActivity(userId: "alice-id", first: 100) { totalCount nodes { entityName action } } }`, {}, { token: auditor() });
    const { rows: [{ n }] } = await db.pool.query(`select count(*)::int as n from audit.log where user_id = 'alice-id'`);
    expect(activity.body.data!.userActivity.totalCount).toBe(n);

    const page = (after?: string) => gql(api, `query($after: Cursor) {
        auditLogs(first: 2, after: $after, orderBy: ROW_ID_ASC,
                  filter: { entityName: { equalTo: "products" }, action: { equalTo: "UPDATE" }, userId: { equalTo: "alice-id" } }) {
          totalCount pageInfo { hasNextPage endCursor } nodes { rowId entityId } } }`, { after }, { token: auditor() });
    const first = (await page()).body.data!.auditLogs;
    const second = (await page(first.pageInfo.endCursor)).body.data!.auditLogs;
    const { rows } = await db.pool.query(
      `select id::text as "rowId", entity_id as "entityId" from audit.log
        where entity_name = 'products' and action = 'UPDATE' and user_id = 'alice-id' order by id`);
    expect(first.totalCount).toBe(rows.length);
    expect([...first.nodes, ...second.nodes]).toEqual(rows.slice(0, 4));
    expect(first.pageInfo.hasNextPage).toBe(rows.length > 2);
  });

  test("aggregates and groupedAggregates: changes per day per action", async () => {
    const result = await gql(api, `{ auditLogs(filter: { entityName: { equalTo: "products" } }) {
        aggregates { distinctCount { entityId } }
        groupedAggregates(groupBy: [CREATED_AT_TRUNCATED_TO_DAY, ACTION]) { keys distinctCount { rowId } } } }`, {}, { token: auditor() });
    expect(result.body.errors).toBeUndefined();
    const { rows } = await db.pool.query(`
      select date_trunc('day', created_at) as day, action, count(*)::text as n, (select count(distinct entity_id)::text from audit.log where entity_name = 'products') as entities
        from audit.log where entity_name = 'products' group by 1, 2`);
    const grouped = result.body.data!.auditLogs.groupedAggregates as { keys: string[]; distinctCount: { rowId: string } }[];
    expect(grouped.map((g) => [g.keys[1], g.distinctCount.rowId]).sort()).toEqual(rows.map((r) => [r.action, r.n]).sort());
    expect(result.body.data!.auditLogs.aggregates.distinctCount.entityId).toBe(rows[0].entities);
  });
});

describe("who may see what", () => {
  test("anonymous cannot read the trail; a user sees only their own rows; an auditor sees all", async () => {
    const anonymous = await gql(api, `{ auditLogs { totalCount } }`);
    expect(anonymous.body.errors?.[0]?.message).toBe("permission denied for view log");
    const own = await gql(api, `{ auditLogs(first: 1000) { totalCount nodes { userId } } }`, {}, { token: bob() });
    const ids = new Set(own.body.data!.auditLogs.nodes.map((n: { userId: string }) => n.userId));
    expect([...ids]).toEqual(["bob-id"]);
    const all = await gql(api, `{ auditLogs { totalCount } }`, {}, { token: auditor() });
    const { rows: [{ n }] } = await db.pool.query(`select count(*)::int as n from audit.log`);
    expect(all.body.data!.auditLogs.totalCount).toBe(n);
  });

  test("nobody mutates audit rows through GraphQL: there is no such mutation", async () => {
    const result = await gql(api, `mutation { deleteAuditLog(input: { rowId: "1" }) { clientMutationId } }`, {}, { token: auditor() });
    expect(result.status).toBe(200);
    expect(result.body.errors?.[0]?.message).toMatch(/Cannot query field "deleteAuditLog" on type "Mutation"/);
  });

  test("no password or password hash is ever in an audit row or a response", async () => {
    const created = await gql(api, `mutation { createUser(input: { email: "secret@example.com", password: "hunter2-Very-Secret" }) {
        result { rowId email } } }`, {}, { token: admin() });
    const userId = created.body.data!.createUser.result.rowId;
    // The user themselves (sub = their id) changes their password.
    const changed = await gql(api, `mutation($id: UUID!) { setUserPassword(input: { userId: $id, password: "another-Secret-9" }) { result { rowId } } }`,
      { id: userId }, { token: token({ sub: userId, role: "user" }) });
    expect(changed.body.errors).toBeUndefined();
    const { rows: [stored] } = await db.pool.query(`select password_hash from app.users where id = $1`, [userId]);
    expect(stored.password_hash).toMatch(/^\$2[aby]\$08\$/);
    const { rows: [leaks] } = await db.pool.query(
      `select count(*)::int as n from audit_private.log_entries e where e::text like any (array['%hunter2%', '%another-Secret%', '%$2a$%', '%$2b$%', '%password%'])`);
    expect(leaks.n).toBe(0);
    const asked = await gql(api, `{ users(first: 10) { nodes { passwordHash } } }`, {}, { token: auditor() });
    expect(asked.body.errors?.[0]?.message).toMatch(/^Cannot query field "passwordHash" on type "User"/);
    expect(JSON.stringify(asked.body)).not.toContain(stored.password_hash);
    const listed = await gql(api, `{ users(first: 10) { nodes { email } } }`, {}, { token: admin() });
    expect(JSON.stringify(listed.body)).not.toMatch(/hunter2|\$2[aby]\$/);
  });
});

describe("the example API: users change only themselves, an admin does the rest", () => {
  let ada: { id: string; rowId: string };
  let bea: { id: string; rowId: string };
  const adaToken = () => token({ sub: ada.rowId, email: "ada@users.example", role: "user" });
  const hashOf = async (id: string) => (await db.pool.query(`select password_hash from app.users where id = $1`, [id])).rows[0].password_hash;
  beforeAll(async () => {
    const create = async (email: string) => (await gql(api, `mutation($email: String!) { createUser(input: { email: $email, password: "initial-Pass-1" }) {
        result { id rowId } } }`, { email }, { token: admin() })).body.data!.createUser.result;
    ada = await create("ada@users.example");
    bea = await create("bea@users.example");
  });

  test("a user reads only their own row: no other user's e-mail", async () => {
    const listed = await gql(api, `{ users(first: 100) { nodes { email } } }`, {}, { token: adaToken() });
    expect(listed.body).toEqual({ data: { users: { nodes: [{ email: "ada@users.example" }] } } });
    const byId = await gql(api, `query($id: UUID!) { user(rowId: $id) { email } }`, { id: bea.rowId }, { token: adaToken() });
    expect(byId.body).toEqual({ data: { user: null } });
  });

  test("a user cannot edit, delete, re-password or create other users; nothing changes", async () => {
    const before = (await db.pool.query(`select * from app.users where id = $1`, [bea.rowId])).rows[0];
    const edited = await gql(api, `mutation($id: ID!) { updateUserById(input: { id: $id, patch: { lastName: "Pwned" } }) { user { lastName } } }`,
      { id: bea.id }, { token: adaToken() });
    expect(edited.body).toEqual({ data: { updateUserById: { user: null } } }); // no row of hers matched: nothing updated
    const deleted = await gql(api, `mutation($id: ID!) { deleteUserById(input: { id: $id }) { deletedUserId } }`, { id: bea.id }, { token: adaToken() });
    expect(deleted.body.errors?.[0]?.message).toBe("permission denied for table users");
    const password = await gql(api, `mutation($id: UUID!) { setUserPassword(input: { userId: $id, password: "attacker-Pass-2" }) { result { rowId } } }`,
      { id: bea.rowId }, { token: adaToken() });
    expect(password.body.errors?.[0]?.message).toBe(`app.set_user_password: no user ${bea.rowId} that you may change`);
    const created = await gql(api, `mutation { createUser(input: { email: "sock@users.example" }) { result { rowId } } }`, {}, { token: adaToken() });
    expect(created.body.errors?.[0]?.message).toBe("permission denied for function create_user");
    expect((await db.pool.query(`select * from app.users where id = $1`, [bea.rowId])).rows[0]).toEqual(before);
    expect((await db.pool.query(`select count(*)::int as n from app.users where email = 'sock@users.example'`)).rows[0].n).toBe(0);
  });

  test("a SQL login in cartop_user that sets audit.user_id to another user's id still sees and changes no one else", async () => {
    const login = `mallory_${db.name}`;
    await db.pool.query(`create role ${login} login password 'mallory-pw' in role cartop_user`);
    const url = new URL(db.url);
    url.username = login;
    url.password = "mallory-pw";
    const client = new (await import("pg")).default.Client({ connectionString: url.toString() });
    await client.connect();
    try {
      await client.query(`select set_config('audit.user_id', $1, false)`, [bea.rowId]);
      expect((await client.query(`select email from app.users`)).rows).toEqual([]);
      expect((await client.query(`update app.users set last_name = 'Pwned' where id = $1`, [bea.rowId])).rowCount).toBe(0);
      const refused = await client.query(`select app.set_user_password($1, 'attacker-Pass-5')`, [bea.rowId]).then(() => null, (e: Error) => e.message);
      expect(refused).toBe(`app.set_user_password: no user ${bea.rowId} that you may change`);
    } finally {
      await client.end();
      await db.pool.query(`drop owned by ${login}; drop role ${login}`);
    }
    expect((await db.pool.query(`select last_name from app.users where id = $1`, [bea.rowId])).rows[0].last_name).not.toBe("Pwned");
  });

  test("an auditor or anonymous caller cannot touch users at all", async () => {
    for (const who of [auditor(), undefined]) {
      const listed = await gql(api, `{ users(first: 100) { nodes { email } } }`, {}, { token: who });
      expect(listed.body.errors?.[0]?.message).toBe("permission denied for table users");
    }
  });

  test("a user edits their own row and password; an admin edits anyone's", async () => {
    const own = await gql(api, `mutation($id: ID!) { updateUserById(input: { id: $id, patch: { lastName: "Lovelace" } }) { user { lastName } } }`,
      { id: ada.id }, { token: adaToken() });
    expect(own.body).toEqual({ data: { updateUserById: { user: { lastName: "Lovelace" } } } });
    const hash = await hashOf(ada.rowId);
    const ownPassword = await gql(api, `mutation($id: UUID!) { setUserPassword(input: { userId: $id, password: "new-Pass-3" }) { result { rowId } } }`,
      { id: ada.rowId }, { token: adaToken() });
    expect(ownPassword.body).toEqual({ data: { setUserPassword: { result: { rowId: ada.rowId } } } });
    expect(await hashOf(ada.rowId)).not.toBe(hash);
    const byAdmin = await gql(api, `mutation($id: ID!) { updateUserById(input: { id: $id, patch: { firstName: "Bea" } }) { user { firstName } } }`,
      { id: bea.id }, { token: admin() });
    expect(byAdmin.body).toEqual({ data: { updateUserById: { user: { firstName: "Bea" } } } });
    const adminPassword = await gql(api, `mutation($id: UUID!) { setUserPassword(input: { userId: $id, password: "reset-Pass-4" }) { result { rowId } } }`,
      { id: bea.rowId }, { token: admin() });
    expect(adminPassword.body.errors).toBeUndefined();
  });
});

test("connected as cartop_authenticator, the API acts as the role each token selects", async () => {
  await db.pool.query(`alter role cartop_authenticator password 'authenticator-test-password'`);
  const url = new URL(db.url);
  url.username = "cartop_authenticator";
  url.password = "authenticator-test-password";
  const production = await startServer({ databaseUrl: db.url, authenticatorUrl: url.toString(), config: config(), production: true });
  try {
    const created = await gql(production, `mutation { createProduct(input: { product: { name: "via authenticator", price: "3.00" } }) {
        product { rowId } } }`, {}, { token: bob() });
    expect(created.body.errors).toBeUndefined();
    const { rows } = await db.pool.query(`select db_user, user_id from audit.log where entity_name = 'products' and entity_id = $1`,
      [String(created.body.data!.createProduct.product.rowId)]);
    expect(rows).toEqual([{ db_user: "cartop_user", user_id: "bob-id" }]);
    const anonymous = await gql(production, `{ auditLogs { totalCount } }`);
    expect(anonymous.body.errors?.[0]?.message).toBe("permission denied for view log");
    const { rows: [session] } = await db.pool.query(
      `select count(*)::int as n from pg_stat_activity where usename = 'cartop_authenticator' and datname = current_database()`);
    expect(session.n).toBeGreaterThan(0);
  } finally {
    await production.close();
  }
});

describe("bad input is a clear 4xx", () => {
  test.each([
    ["a forged signature", () => token({ sub: "x", role: "auditor" }, {}, "not-the-secret-0123456789-0123456789"), /^invalid token: invalid signature$/],
    ["an expired token", () => token({ sub: "x", role: "user" }, { expiresIn: -10 }), /^invalid token: jwt expired$/],
    ["a malformed token", () => "not.a.jwt", /^invalid token: /],
    ["an unknown role", () => token({ sub: "x", role: "superuser" }), /^invalid token: unknown role "superuser"$/],
  ])("%s is a 401", async (_name, make, message) => {
    const result = await gql(api, `{ products { totalCount } }`, {}, { token: make() });
    expect(result.status).toBe(401);
    expect(result.headers.get("www-authenticate")).toBe('Bearer realm="cartop-audit"');
    expect(result.body.errors?.[0]?.message).toMatch(message);
  });

  test("malformed GraphQL is a 400 that says where", async () => {
    const result = await gql(api, `{ products { nodes { id }`);
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.message).toMatch(/^malformed GraphQL: Syntax Error: Expected Name, found <EOF>\.$/);
  });

  test("an over-deep query is refused", async () => {
    const deep = `{ query { query { query { query { query { query { query { query { query { query { query { query { products { totalCount } } } } } } } } } } } } } }`;
    const result = await gql(api, deep);
    expect(result.status).toBe(400);
    expect(result.body.errors?.[0]?.message).toBe("query is too deep: depth 14, at most 12");
  });

  test("an oversized document is a 413", async () => {
    const result = await gql(api, `{ products { totalCount } } # ${"x".repeat(120_000)}`);
    expect(result.status).toBe(413);
  });

  test("the rate limit answers 429 with Retry-After, then recovers", async () => {
    const windowMs = 4000;
    const limited = await startServer({ databaseUrl: db.url, config: config({ rateLimitPerMinute: 3 }), rateLimitWindowMs: windowMs });
    try {
      // Sent at once, so that all five fall in one window however slow the machine is.
      const responses = await Promise.all(Array.from({ length: 5 }, () => gql(limited, `{ products { totalCount } }`)));
      expect(responses.map((r) => r.status).sort()).toEqual([200, 200, 200, 429, 429]);
      const retryAfter = responses.find((r) => r.status === 429)!.headers.get("retry-after");
      expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
      await new Promise((resolve) => setTimeout(resolve, windowMs + 200));
      expect((await gql(limited, `{ products { totalCount } }`)).status).toBe(200);
    } finally {
      await limited.close();
    }
  });

  test("a token without an expiry (exp) is a 401", async () => {
    const forever = jwt.sign({ sub: "x", role: "user" }, SECRET, { algorithm: "HS256" });
    const result = await gql(api, `{ products { totalCount } }`, {}, { token: forever });
    expect(result.status).toBe(401);
    expect(result.body.errors?.[0]?.message).toBe('invalid token: the token has no expiry (exp): sign it with one, e.g. expiresIn: "1h"');
  });

  test("a token without a role acts as a user, not as an auditor", async () => {
    const result = await gql(api, `{ auditLogs(first: 1000) { nodes { userId } } }`, {}, { token: token({ sub: "no-role-id" }) });
    expect(result.body.errors).toBeUndefined();
    expect(new Set(result.body.data!.auditLogs.nodes.map((n: { userId: string }) => n.userId))).toEqual(new Set(
      (await db.pool.query(`select distinct user_id from audit.log where user_id = 'no-role-id'`)).rows.map((r) => r.user_id)));
  });
});

describe("cost limits: one request cannot hold the database or the server's memory", () => {
  const refused = (message: string) => ({ status: 400, body: { errors: [{ message }] } });
  const answer = (r: GqlResponse) => ({ status: r.status, body: r.body });

  test("a page larger than 1000 rows is refused, literally or through a variable", async () => {
    expect(answer(await gql(api, `{ auditLogs(first: 1000000) { nodes { rowId } } }`, {}, { token: auditor() })))
      .toEqual(refused("auditLogs: first is 1000000, at most 1000: page with after/before"));
    expect(answer(await gql(api, `query($n: Int) { all: auditLogs(last: $n) { nodes { rowId } } }`, { n: 5000 }, { token: auditor() })))
      .toEqual(refused("all (auditLogs): last is 5000, at most 1000: page with after/before"));
  });

  test("asking for a connection's rows without first/last is refused; counting them is not", async () => {
    expect(answer(await gql(api, `{ products { nodes { name } } }`))).toEqual(refused("products: say how many rows with first: or last: (at most 1000)"));
    expect(answer(await gql(api, `fragment P on ProductConnection { edges { node { name } } } { products { ...P } }`)))
      .toEqual(refused("products: say how many rows with first: or last: (at most 1000)"));
    const counted = await gql(api, `{ products { totalCount } }`);
    expect(counted.status).toBe(200);
    expect(counted.body.errors).toBeUndefined();
  });

  test("many aliases, or nested pages, cost too much and are refused before any SQL runs", async () => {
    const aliases = Array.from({ length: 201 }, (_, i) => `a${i}: products { totalCount }`).join(" ");
    expect(answer(await gql(api, `{ ${aliases} }`))).toEqual(refused(
      "query is too costly: cost 20502, at most 20000 (every field counts once per row it can return, every connection 100): ask for smaller pages or fewer fields"));
    const pages = Array.from({ length: 4 }, (_, i) => `p${i}: auditLogs(first: 1000) { nodes { rowId createdAt action entityId changes userId } }`).join(" ");
    const costly = await gql(api, `{ ${pages} }`, {}, { token: auditor() });
    expect(costly.status).toBe(400);
    expect(costly.body.errors?.[0]?.message).toMatch(/^query is too costly: cost 24408, at most 20000/);
  });

  test("fragments that spread themselves, or double at every level, are refused before they are expanded", async () => {
    expect(answer(await gql(api, `query { products { ...A } } fragment A on ProductConnection { nodes { ...B } } fragment B on Product { name ...A }`)))
      .toEqual(refused("malformed GraphQL: fragment A spreads itself (A → B → A)"));
    // F0 spreads F1 twice, F1 spreads F2 twice, …: 2^30 fields from a 2 kB document (expanding them would not end).
    const fragments = Array.from({ length: 30 }, (_, i) => `fragment F${i} on Query { ${i === 29 ? "__typename" : `a: __typename ...F${i + 1} b: __typename ...F${i + 1}`} }`).join(" ");
    expect(answer(await gql(api, `{ ...F0 } ${fragments}`)))
      .toEqual(refused("the document expands to more than 10000 fields through its fragments: ask for less"));
  });

  test("a statement that runs longer than the API's statement_timeout is cancelled with a message saying so", async () => {
    await db.pool.query(`
      create function app.slow_products() returns setof app.products language sql stable as $$ select p.* from app.products p, pg_sleep(5) $$;
      grant execute on function app.slow_products() to cartop_user`);
    const patient = await startServer({ databaseUrl: db.url, config: config(), statementTimeoutMs: 200 });
    try {
      const result = await gql(patient, `{ slowProducts(first: 1) { nodes { name } } }`, {}, { token: alice() });
      expect(result.body.errors?.[0]?.message).toBe(
        "canceling statement due to statement timeout (the API allows 0.2 s per statement): ask for smaller pages or narrower filters");
      expect(result.body.data).toEqual({ slowProducts: null });
    } finally {
      await patient.close();
      await db.pool.query(`drop function app.slow_products()`);
    }
  });
});

describe("the response size limit", () => {
  test("a body over the limit becomes a 400 saying so; smaller ones pass untouched", async () => {
    const { responseSize } = await import("../src/http/limits.ts");
    const express = (await import("express")).default;
    const app = express();
    app.use(responseSize(1000));
    app.get("/big", (_req, res) => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify({ data: "x".repeat(2000) })); });
    app.get("/small", (_req, res) => { res.json({ data: "small" }); });
    const server = app.listen(0);
    try {
      await new Promise((resolve) => server.once("listening", resolve));
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const big = await fetch(`${base}/big`);
      expect(big.status).toBe(400);
      expect(await big.json()).toEqual({ errors: [{ message: "the response is 2011 bytes, more than the 1000-byte limit: ask for smaller pages or fewer fields" }] });
      const small = await fetch(`${base}/small`);
      expect(small.status).toBe(200);
      expect(await small.json()).toEqual({ data: "small" });
    } finally {
      server.close();
    }
  });
});

describe("health", () => {
  test("GET /healthz checks the database", async () => {
    const response = await fetch(`${api.url}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ok" });
  });
});

test("schema.graphql is the schema the server builds (run npm run schema:print after an intended change)", async () => {
  const committed = await readFile(path.join(projectRoot, "schema.graphql"), "utf8");
  expect(await printedSchema(db.url)).toBe(committed);
});

test("objects added to the audit schema stay out of GraphQL until src/graphql/exposure.ts names them", async () => {
  const fresh = await createTestDatabase();
  try {
    await fresh.pool.query(`
      create table audit.new_bookkeeping (id int primary key, note text);
      create function audit.new_internal_step(n int) returns int language sql as 'select n';
      create function app.new_app_function() returns int language sql stable as 'select 1';
      grant select on audit.new_bookkeeping to cartop_user, cartop_auditor;
      grant execute on function audit.new_internal_step(int) to cartop_user, cartop_auditor`);
    const schema = await printedSchema(fresh.url);
    expect(schema).not.toMatch(/newBookkeeping|NewBookkeeping|newInternalStep|NewInternalStep/);
    // The application's schema is exposed as its grants allow; the audit trail's allowed fields are there.
    expect(schema).toMatch(/newAppFunction/);
    expect(schema).toMatch(/entityHistory\(/);
  } finally {
    await fresh.drop();
  }
});
