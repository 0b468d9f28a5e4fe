// The examples of the README and of docs/sql.md's cookbook, run as a newcomer would after `npx cartop-audit demo`
// on a fresh database: every SQL example whose output they show gives that output (times and transaction ids
// aside), and every GraphQL example runs without errors.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { Kind, parse, print, type OperationDefinitionNode } from "graphql";
import jwt from "jsonwebtoken";
import pg from "pg";
import { projectRoot } from "../src/db/sourceSql.ts";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { createTestDatabase, type TestDatabase } from "./helpers.ts";

const exec = promisify(execFile);
const SECRET = "readme-secret-0123456789-0123456789-abcdef";
let readme: string;
let sqlGuide: string;
let walkthrough: TestDatabase; // Quick start → GraphQL → SQL, in README order
let cookbook: TestDatabase;
let api: RunningServer;

async function demo(db: TestDatabase): Promise<void> {
  await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), "demo"], {
    env: { ...process.env, DATABASE_URL: db.url, NODE_OPTIONS: "", LOG_LEVEL: "silent" },
  });
}

beforeAll(async () => {
  readme = await readFile(path.join(projectRoot, "README.md"), "utf8");
  sqlGuide = await readFile(path.join(projectRoot, "docs/sql.md"), "utf8");
  [walkthrough, cookbook] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  await Promise.all([demo(walkthrough), demo(cookbook)]);
  api = await startServer({ databaseUrl: walkthrough.url, config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000 } });
});
afterAll(async () => {
  await api?.close();
  await walkthrough?.drop();
  await cookbook?.drop();
});

/** A document (the README unless named) between a `## ` heading and the next one. */
function section(heading: string, text = readme): string {
  const start = text.indexOf(`\n## ${heading}`);
  if (start < 0) throw new Error(`no section "${heading}"`);
  const end = text.indexOf("\n## ", start + 4);
  return text.slice(start, end < 0 ? undefined : end);
}

interface Block { lang: string; body: string }
function blocks(text: string): Block[] {
  return [...text.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1]!, body: m[2]! }));
}

/** Every SQL block followed directly by a text block: the query and the output the README shows. */
function examplesWithOutput(text: string): { sql: string; output: string }[] {
  const all = blocks(text);
  const pairs = [];
  for (let i = 0; i + 1 < all.length; i++) {
    if (all[i]!.lang === "sql" && all[i + 1]!.lang === "text") pairs.push({ sql: all[i]!.body, output: all[i + 1]!.body });
  }
  return pairs;
}

const timestamp = /^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2}(\.\d+)?(\+\d{2})?)?$/;

/** Runs SQL (several statements allowed) and gives the last result as psql prints it: header, then text cells. */
async function psqlLike(db: TestDatabase, sql: string): Promise<{ fields: string[]; rows: string[][] }> {
  const client = new pg.Client({ connectionString: db.url, types: { getTypeParser: () => (value: string) => value } });
  await client.connect();
  try {
    const results = await client.query({ text: sql, rowMode: "array" }) as unknown as pg.QueryArrayResult | pg.QueryArrayResult[];
    const last = Array.isArray(results) ? results.at(-1)! : results;
    return { fields: last.fields.map((f) => f.name), rows: last.rows.map((r) => r.map((v) => (v === null ? "" : String(v)))) };
  } finally {
    await client.end();
  }
}

/** The README's output as cells; a header line is checked against the column names. */
function expectOutput(shown: string, actual: { fields: string[]; rows: string[][] }): void {
  const lines = shown.split("\n").filter((l) => l.trim() !== "" && !/^[-+]+$/.test(l.trim()));
  const cells = lines.map((l) => l.split("|").map((c) => c.trim()));
  if (cells[0]?.join("|") === actual.fields.join("|")) cells.shift();
  else throw new Error(`the README shows columns ${JSON.stringify(cells[0])}, the query returns ${JSON.stringify(actual.fields)}`);
  // Times and transaction ids are those of the run: the README's stand for any value of the same shape.
  const comparable = (row: string[], shownRow: string[] | undefined) => row.map((value, i) => {
    const expected = shownRow?.[i];
    if (expected !== undefined && timestamp.test(expected) && timestamp.test(value)) return expected;
    if (expected !== undefined && actual.fields[i] === "tx_id" && /^\d+$/.test(expected) && /^\d+$/.test(value)) return expected;
    return value;
  });
  expect(actual.rows.map((row, r) => comparable(row, cells[r]))).toEqual(cells);
}

describe("Using it from GraphQL", () => {
  const token = (claims: Record<string, unknown>) => jwt.sign(claims, SECRET, { expiresIn: "1h" });
  async function gql(query: string, claims: Record<string, unknown>, variables: Record<string, unknown> = {}) {
    const response = await fetch(`${api.url}/graphql`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token(claims)}` },
      body: JSON.stringify({ query, variables }),
    });
    return { status: response.status, body: await response.json() as { data?: any; errors?: unknown[] } };
  }

  test("the curl example answers exactly what the README shows", async () => {
    const sh = blocks(section("Using it from GraphQL")).find((b) => b.lang === "sh" && b.body.includes("createProduct"))!;
    const request = JSON.parse(/-d '(\{.*\})'/.exec(sh.body)![1]!) as { query: string };
    const shown = JSON.parse(/^# (\{.*\})\s/m.exec(sh.body)![1]!);
    const claims = JSON.parse(/USER_TOKEN=\$\(token '(\{.*\})'\)/.exec(sh.body)![1]!) as Record<string, unknown>;
    const result = await gql(request.query, claims);
    expect(result).toEqual({ status: 200, body: shown });
    const { rows } = await walkthrough.pool.query(`select action, user_id from audit.log where entity_name = 'products' and entity_id = $1`, [shown.data.createProduct.product.rowId]);
    expect(rows).toEqual([{ action: "INSERT", user_id: "u-42" }]);
  });

  test("every query and mutation of the GraphQL block runs without errors (queries as the auditor, mutations as the admin)", async () => {
    const block = blocks(section("Using it from GraphQL")).find((b) => b.lang === "graphql")!;
    const operations = parse(block.body).definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
    expect(operations.length).toBeGreaterThanOrEqual(7);
    let id: string | undefined;
    for (const operation of operations) {
      const who = operation.operation === "mutation" ? { sub: "admin-1", role: "admin" } : { sub: "auditor-1", role: "auditor" };
      const result = await gql(print(operation), who, id ? { id } : {});
      expect({ operation: print(operation), ...result }).toEqual({ operation: print(operation), status: 200, body: { data: expect.any(Object) } });
      id ??= result.body.data?.createUser?.result?.rowId;
    }
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
  });
});

test("Using it from SQL: the example gives the output shown", async () => {
  const [example] = examplesWithOutput(section("Using it from SQL"));
  expectOutput(example!.output, await psqlLike(walkthrough, example!.sql));
});

describe("Reporting cookbook", () => {
  test("has ten examples with output", () => {
    expect(examplesWithOutput(section("Reporting cookbook (SQL)", sqlGuide))).toHaveLength(10);
  });
  test.each(Array.from({ length: 10 }, (_, i) => i + 1))("example %i gives the output shown", async (n) => {
    const { sql, output } = examplesWithOutput(section("Reporting cookbook (SQL)", sqlGuide))[n - 1]!;
    expectOutput(output, await psqlLike(cookbook, sql));
  });
});
