// Introspection where it is on (the standard query over HTTP, GraphiQL in a real browser), its own limits,
// and its absence in production unless GRAPHQL_INTROSPECTION=on.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { getIntrospectionQuery } from "graphql";
import { chromium } from "playwright-core";
import { readConfig } from "../src/config.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

let db: TestDatabase;
let development: RunningServer;
let production: RunningServer;
let productionOptedIn: RunningServer;

const config = { port: 0, jwtSecret: undefined, trustProxy: false, rateLimitPerMinute: 10_000 };

beforeAll(async () => {
  db = await createTestDatabase();
  development = await startServer({ databaseUrl: db.url, config });
  production = await startServer({ databaseUrl: db.url, config, production: true });
  productionOptedIn = await startServer({ databaseUrl: db.url, config, production: true, introspection: true });
});
afterAll(async () => {
  await development?.close();
  await production?.close();
  await productionOptedIn?.close();
  await db?.drop();
});

async function post(server: RunningServer, query: string) {
  const response = await fetch(`${server.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ query }),
  });
  return { status: response.status, body: await response.json() as { data?: any; errors?: { message: string }[] } };
}

const typeNames = (body: { data?: any }) => (body.data?.__schema?.types ?? []).map((t: { name: string }) => t.name);

describe("the standard introspection query", () => {
  test.each([
    ["graphql's defaults", getIntrospectionQuery()],
    ["every option GraphiQL may turn on", getIntrospectionQuery({
      descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true, oneOf: true,
    })],
  ])("with %s answers with the whole schema", async (_name, query) => {
    const result = await post(development, query);
    expect(result.status).toBe(200);
    expect(result.body.errors).toBeUndefined();
    expect(typeNames(result.body)).toEqual(expect.arrayContaining(["Query", "Mutation", "AuditLog", "AuditLogConnection", "Product", "User"]));
  });

  test("is off in production (403 naming the switch), and on there with GRAPHQL_INTROSPECTION=on", async () => {
    const refused = await post(production, getIntrospectionQuery());
    expect(refused).toEqual({ status: 403, body: { errors: [{ message: "introspection is off in production: set GRAPHQL_INTROSPECTION=on to allow it (and GraphiQL)" }] } });
    const typeQuery = await post(production, `{ __type(name: "AuditLog") { name } }`);
    expect(typeQuery.status).toBe(403);
    // __typename is not introspection of the schema: clients add it everywhere.
    expect(await post(production, `{ __typename }`)).toEqual({ status: 200, body: { data: { __typename: "Query" } } });
    const optedIn = await post(productionOptedIn, getIntrospectionQuery());
    expect(optedIn.status).toBe(200);
    expect(typeNames(optedIn.body)).toContain("AuditLog");
  });

  test("GraphiQL is not served in production unless opted in", async () => {
    expect((await fetch(`${production.url}/graphiql`)).status).toBe(404);
    expect((await fetch(`${productionOptedIn.url}/graphiql`)).status).toBe(200);
  });
});

describe("introspection has its own limits, not a higher depth for everything", () => {
  test("a query through the same list twice is refused: it multiplies the answer", async () => {
    const result = await post(development, `{ __schema { types { fields { type { fields { type { name } } } } } } }`);
    expect(result).toEqual({ status: 400, body: { errors: [{ message: 'introspection query repeats "fields" inside "fields": ask for each list of the schema once per path' }] } });
  });

  test("many introspection fields in one document are refused", async () => {
    const aliases = Array.from({ length: 11 }, (_, i) => `t${i}: __type(name: "Query") { name }`).join(" ");
    const result = await post(development, `{ ${aliases} }`);
    expect(result).toEqual({ status: 400, body: { errors: [{ message: "too many introspection fields: at most 10 __schema/__type per document" }] } });
  });

  test("an introspection query deeper than 20 levels is refused", async () => {
    const ofType = (n: number): string => (n === 0 ? "name" : `name ofType { ${ofType(n - 1)} }`);
    const result = await post(development, `{ __type(name: "Query") { ${ofType(20)} } }`);
    expect(result).toEqual({ status: 400, body: { errors: [{ message: "introspection query is too deep: more than 20 levels" }] } });
  });

  test("data queries keep the depth limit of 12", async () => {
    const deep = `{ query { query { query { query { query { query { query { query { query { query { query { query { products { totalCount } } } } } } } } } } } } } }`;
    expect(await post(development, deep)).toEqual({ status: 400, body: { errors: [{ message: "query is too deep: depth 14, at most 12" }] } });
  });
});

test("GraphiQL loads the schema in a real browser: the Docs panel lists the schema's types", async () => {
  // Debian's chromium (apt-get install -y chromium); playwright-core never downloads a browser.
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
  try {
    const page = await browser.newPage();
    const failed: string[] = [];
    page.on("response", (response) => {
      if (response.url().endsWith("/graphql") && response.status() !== 200) failed.push(`${response.status()} ${response.url()}`);
    });
    await page.goto(`${development.url}/graphiql`);
    await page.getByRole("button", { name: "Show Documentation Explorer" }).click();
    const docs = page.locator(".graphiql-doc-explorer");
    await docs.getByText("All Schema Types").waitFor({ timeout: 30_000 });
    const text = await docs.innerText();
    expect(text).toContain("query: Query");
    expect(text).toContain("mutation: Mutation");
    expect(text.split("\n")).toEqual(expect.arrayContaining(["AuditLog", "AuditLogConnection", "Product", "User"]));
    expect(failed).toEqual([]);
  } finally {
    await browser.close();
  }
});

test("GRAPHQL_INTROSPECTION: on by default, off by default with NODE_ENV=production, either way on request; a short JWT_SECRET is refused", () => {
  expect(readConfig({}).introspection).toBe(true);
  expect(readConfig({ NODE_ENV: "production" }).introspection).toBe(false);
  expect(readConfig({ NODE_ENV: "production", GRAPHQL_INTROSPECTION: "on" }).introspection).toBe(true);
  expect(readConfig({ GRAPHQL_INTROSPECTION: "off" }).introspection).toBe(false);
  expect(() => readConfig({ GRAPHQL_INTROSPECTION: "maybe" })).toThrow('GRAPHQL_INTROSPECTION must be on or off, got "maybe"');
  expect(() => readConfig({ JWT_SECRET: "0123456789" })).toThrow(
    "JWT_SECRET is 10 characters, at least 32 are needed (a short HS256 secret can be guessed offline from one token): generate one with openssl rand -hex 32");
  expect(readConfig({ JWT_SECRET: "x".repeat(32) }).jwtSecret).toBe("x".repeat(32));
});
