// The audit explorer (GET /explore) in a real browser (Debian's chromium through playwright-core) against the
// real app and database: search, history with exact diffs and a masked field, the state at an instant, the
// activity chart, the dashboard, a revert preview confirmed and applied, and an expired token.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import jwt from "jsonwebtoken";
import { chromium, type Browser, type Page } from "playwright-core";
import { startServer, type RunningServer } from "../src/http/app.ts";
import { EXPLORER_CSP } from "../src/http/explorer.ts";
import { projectRoot } from "../src/db/sourceSql.ts";
import { createTestDatabase, inTransaction, type TestDatabase } from "./helpers.ts";

const SECRET = "explorer-secret-0123456789-0123456789-abcdef";
const token = (sub: string, role: string, options: jwt.SignOptions = { expiresIn: "10m" }) =>
  jwt.sign({ sub, role }, SECRET, { algorithm: "HS256", ...options });

let db: TestDatabase;
let api: RunningServer;
let browser: Browser;
let productId: string;

/** Carol's changes per UTC day and action, as the activity table lists them (newest day first). */
async function carolsActivity(): Promise<string[][]> {
  const { rows } = await db.pool.query(`
    select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day, action, count(*)::text as n
    from audit.log where user_id = 'carol' group by 1, 2 order by 1 desc, 2`);
  return rows.map((r) => [r.day, "app.products", r.action, r.n]);
}

async function gql(query: string, variables: Record<string, unknown>, bearer: string, requestId: string) {
  const response = await fetch(`${api.url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}`, "x-request-id": requestId },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json() as { data?: any; errors?: { message: string }[] };
  expect(body.errors).toBeUndefined();
  return body.data;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`select audit.enable_tracking('app.products', masked_columns => '{attributes}')`);
  // Yesterday sealed (digests are placeholders: the page shows the record, `verify` checks it) and an old month
  // archived, so the dashboard has one of each to show.
  await db.pool.query(`insert into audit.seals (day, rows, rows_digest, seal_digest, format)
                       values ((now() at time zone 'UTC')::date - 1, 0, repeat('a', 64), repeat('b', 64), 1)`);
  await db.pool.query(`insert into audit.archives (month, partition_name, status, file_name, manifest_name, rows, sha256, bytes, archived_at)
                       values ('2020-01-01', 'log_2020_01', 'archived', 'audit-2020-01.copy.gz', 'audit-2020-01.manifest.json', 42, repeat('c', 64), 2048, now())`);
  // In production mode: introspection off and unexpected errors masked, so the page must do without either.
  api = await startServer({ databaseUrl: db.url, config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000 }, production: true });
  // Carol (a user) creates a lamp, changes its masked attributes, then its price and stock: three requests.
  const carol = token("carol", "user");
  const created = await gql(`mutation { createProduct(input: { product: { name: "Lamp", price: "12.50", stock: 3, attributes: { supplier: "Acme" } } }) { product { rowId } } }`,
    {}, carol, "req-lamp-create");
  productId = String(created.createProduct.product.rowId);
  const update = `mutation($id: BigInt!, $patch: ProductPatch!) { updateProduct(input: { rowId: $id, patch: $patch }) { product { rowId } } }`;
  await gql(update, { id: productId, patch: { attributes: { supplier: "Globex" } } }, carol, "req-lamp-supplier");
  await gql(update, { id: productId, patch: { price: "14.00", stock: 5 } }, carol, "req-lamp-price");
  // Debian's chromium (apt-get install -y chromium); playwright-core never downloads a browser.
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
});
afterAll(async () => {
  await browser?.close();
  await api?.close();
  await db?.drop();
});

describe("GET /explore", () => {
  test("serves the page and its modules with their content types and a strict CSP; nothing else", async () => {
    const page = await fetch(`${api.url}/explore`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toBe(EXPLORER_CSP);
    expect(EXPLORER_CSP).toBe("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'");
    expect(page.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await page.text()).not.toMatch(/<script(?![^>]*\bsrc=)/); // no inline script
    const script = await fetch(`${api.url}/explore/explorer.js`);
    expect([script.status, script.headers.get("content-type")]).toEqual([200, "text/javascript; charset=utf-8"]);
    const style = await fetch(`${api.url}/explore/explorer.css`);
    expect([style.status, style.headers.get("content-type")]).toEqual([200, "text/css; charset=utf-8"]);
    for (const missing of ["/explore/nothing.js", "/explore/%2e%2e/explorer.ts", "/explore/..%2fexplorer.ts"]) {
      expect([missing, (await fetch(`${api.url}${missing}`)).status]).toEqual([missing, 404]);
    }
  });
});

describe("the explorer in a browser", () => {
  let page: Page;
  const requestedUrls: string[] = [];
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on("request", (request) => requestedUrls.push(request.url()));
    page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
    page.on("pageerror", (error) => consoleErrors.push(error.message));
    await page.goto(`${api.url}/explore`);
  });
  afterAll(async () => {
    await page?.close();
  });

  async function useToken(bearer: string) {
    await page.getByLabel(/^JWT/).fill(bearer);
    await page.getByRole("button", { name: "Use token" }).click();
  }

  /** Fills the search form (fields not given are emptied), searches, waits for `expected`; the codes shown. */
  async function searchFor(fields: Record<string, string>, expected: string) {
    for (const [label, text] of Object.entries({ "Table": "", "Entity id": "", "User id": "", "Request id": "", "From (UTC)": "", "Until (UTC, exclusive)": "", ...fields })) {
      await page.locator("#search-form").getByLabel(label, { exact: true }).fill(text);
    }
    await page.getByRole("button", { name: "Search" }).click();
    await page.locator("#search-status").getByText(expected, { exact: true }).waitFor();
    return await page.locator("#timeline li code").allTextContents();
  }

  test("an auditor searches, opens a history, reads exact diffs with the masked field masked, and moves the slider", async () => {
    const auditor = token("auditor-1", "auditor");
    await useToken(auditor);
    await expect(page.locator("#who").textContent()).resolves.toMatch(/^Token for auditor-1 \(role auditor, expires \d{4}-/);
    expect(await page.evaluate(() => sessionStorage.getItem("cartop-audit.token"))).toBe(auditor);

    await page.getByLabel("Table").first().fill("app.products");
    await page.getByLabel("Entity id").fill(productId);
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByText("3 changes match, newest first.").waitFor();
    const items = page.locator("#timeline li");
    expect((await items.allTextContents()).map((t) => t.replace(/^\S+ \S+ UTC /, "").replace(/History.*$/, ""))).toEqual([
      `UPDATE app.products ${productId} by carol, request req-lamp-price`,
      `UPDATE app.products ${productId} by carol, request req-lamp-supplier`,
      `INSERT app.products ${productId} by carol, request req-lamp-create`,
    ]);

    await items.first().getByRole("button", { name: `History of app.products ${productId}` }).click();
    await page.getByText(`app.products ${productId}: 3 changes, newest first.`).waitFor();
    const changes = page.locator("#history-body article");
    const diff = async (index: number) => changes.nth(index).locator("tbody tr").evaluateAll((rows) =>
      rows.map((row) => [...row.children].map((cell) => cell.textContent)));
    // The trail holds 12.50 and 14.00; the GraphQL JSON scalar serves the numbers 12.5 and 14 (the page shows
    // numbers as the server writes them, so a scalar that kept the text would show here).
    expect(await diff(0)).toEqual([["price", "12.5", "14"], ["stock", "3", "5"], ["updated_at", expect.any(String), expect.any(String)]]);
    expect(await diff(1)).toEqual([["attributes", "masked", "masked"], ["updated_at", expect.any(String), expect.any(String)]]);
    const inserted = Object.fromEntries((await diff(2)).map(([field, before, after]) => [field, [before, after]]));
    expect(inserted).toMatchObject({ name: ["—", '"Lamp"'], price: ["—", "12.5"], stock: ["—", "3"], attributes: ["—", "masked"] });
    await expect(changes.nth(1).locator(".masked").count()).resolves.toBe(2);

    // The slider starts at the newest change; Home goes to the first (keyboard, as a user would).
    const state = async () => Object.fromEntries(await page.locator("#as-of-state tbody tr").evaluateAll((rows) =>
      rows.map((row) => [row.children[0]!.textContent, row.children[1]!.textContent])));
    await page.getByText("after change 3 of 3 (UPDATE)", { exact: false }).waitFor();
    // (globalThis: the test's TypeScript has no DOM types; a string would be eval, which the page's CSP refuses)
    const stateShows = (text: string) => page.waitForFunction((wanted) =>
      [...(globalThis as any).document.querySelectorAll("#as-of-state tr")].some((r: any) => r.textContent === wanted), text);
    const slider = page.getByRole("slider");
    await slider.focus();
    await slider.press("Home");
    await expect(page.locator("#as-of-label").textContent()).resolves.toMatch(/^after change 1 of 3 \(INSERT\), \d{4}-\d\d-\d\d /);
    await stateShows("stock3");
    expect(await state()).toMatchObject({ name: '"Lamp"', price: "12.5", stock: "3", attributes: "masked" });
    await slider.press("ArrowRight");
    await page.getByText("after change 2 of 3 (UPDATE)", { exact: false }).waitFor();
    await slider.press("End");
    await stateShows("stock5");
    expect(await state()).toMatchObject({ name: '"Lamp"', price: "14", stock: "5", attributes: "masked" });
  });

  test("search by request id, by user, and by a time range", async () => {
    expect(await searchFor({ "Request id": "req-lamp-supplier" }, "1 change match, newest first.")).toEqual([productId, "carol", "req-lamp-supplier"]);
    expect(await searchFor({ "User id": "carol", "From (UTC)": "2000-01-01T00:00:00" }, "3 changes match, newest first.")).toHaveLength(9);
    expect(await searchFor({ "User id": "carol", "Until (UTC, exclusive)": "2000-01-01T00:00:00" }, "0 changes match, newest first.")).toEqual([]);
  });

  test("the dashboard shows the current month's partition; the activity chart counts the day's changes", async () => {
    const { rows: [current] } = await db.pool.query(
      `select partition_name, to_char(range_start at time zone 'UTC', 'YYYY-MM') as month from audit.partitions where not is_default and range_start <= now() and range_end > now()`);
    const row = page.locator("#partitions tbody tr", { hasText: current.partition_name });
    await row.waitFor();
    expect((await row.locator("td").first().textContent())).toBe(current.month);
    const { rows: coverage } = await db.pool.query(`select check_name from audit.coverage`);
    // Auditors read coverage too (the default partition is counted by its owner, not theirs).
    await inTransaction(db.pool, async (client) => {
      await client.query("set local role cartop_auditor");
      expect((await client.query(`select check_name from audit.coverage`)).rows).toEqual(coverage);
    });
    // The definer function behind it stays the auditors': a user may not count the default partition.
    await expect(inTransaction(db.pool, async (client) => {
      await client.query("set local role cartop_user");
      await client.query(`select * from audit.default_partition_months()`);
    })).rejects.toThrow("permission denied for function default_partition_months");
    if (coverage.length) {
      expect(await page.locator("#coverage tbody tr td:first-child").allTextContents()).toEqual(coverage.map((c) => c.check_name));
    } else {
      await page.locator("#coverage").getByText("No coverage problems.").waitFor({ timeout: 5000 }).catch(async (error) => {
        throw new Error(`${error.message}; the panel says: ${await page.locator("#coverage").textContent()}`);
      });
    }
    const archive = page.locator("#archives tbody tr");
    await archive.waitFor();
    expect((await archive.locator("td").allTextContents()).filter((_, i) => i !== 4)).toEqual(["2020-01", "archived", "42", "2.0 kB", "—"]);
    const { rows: [sealed] } = await db.pool.query(`select to_char(day, 'YYYY-MM-DD') as day from audit.seals`);
    await page.locator("#seals").getByText(new RegExp(`^Last sealed day: ${sealed.day} \\(0 audit rows, sealed .+ UTC\\); 1 seal in the chain\\.$`)).waitFor();
    await page.locator("#seals").getByText("No sealing run recorded.").waitFor();

    await page.locator("#activity-chart svg").waitFor();
    const activity = await page.locator("#activity-chart tbody tr").evaluateAll((rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
    expect(activity).toEqual(await carolsActivity());
    expect(activity.reduce((n, r) => n + Number(r[3]), 0)).toBe(3); // the INSERT and the two UPDATEs

    await searchFor({ "Table": "app.products", "Entity id": productId }, "3 changes match, newest first.");
    // The screenshot in the README: `UPDATE_SCREENSHOT=1 npm test -- test/explorer.test.ts` rewrites it.
    const screenshot = process.env.UPDATE_SCREENSHOT === "1"
      ? path.join(projectRoot, "docs/explorer.png")
      : path.join(mkdtempSync(path.join(os.tmpdir(), "cartop-explorer-")), "explorer.png");
    await page.locator("#history").scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshot, fullPage: true });
  });

  test("a user previews the revert of their price change, confirms it, and the row is back", async () => {
    await useToken(token("carol", "user"));
    // A user may not read the dashboard: each panel says so.
    await page.locator("#partitions").getByText(/^Your role may not read this: permission denied/).waitFor();
    // Nor the daily summary: the activity counts the trail rows a user may read (their own).
    await page.getByText(/from the audit rows your role may read\.$/).waitFor();
    expect(await page.locator("#activity-chart tbody tr").evaluateAll((rows) => rows.map((r) => [...r.children].map((c) => c.textContent))))
      .toEqual(await carolsActivity());
    await searchFor({ "Table": "app.products", "Entity id": productId }, "3 changes match, newest first.");
    const { rows: [priceChange] } = await db.pool.query(`select id from audit.log where request_id = 'req-lamp-price'`);
    await page.getByRole("button", { name: `Preview revert of audit row ${priceChange.id}` }).first().click();
    await page.getByText(`Dry run of this change (audit row ${priceChange.id}): 1 step, 0 problems; nothing has changed.`).waitFor();
    const rows = await page.locator("#revert-body article tbody tr").evaluateAll((trs) => trs.map((r) => [...r.children].map((c) => c.textContent)));
    expect(rows.filter(([field]) => field !== "updated_at")).toEqual([["price", "14", "12.5"], ["stock", "5", "3"]]);
    const apply = page.getByRole("button", { name: "Apply the revert (1 step)" });
    expect(await apply.isDisabled()).toBe(true);
    expect((await db.pool.query(`select price::text, stock from app.products where id = $1`, [productId])).rows).toEqual([{ price: "14.00", stock: 5 }]);
    await page.getByLabel("I have read this preview: change the data as shown").check();
    await apply.click();
    await page.getByText(`Reverted this change (audit row ${priceChange.id}): 1 of 1 step applied.`).waitFor();
    expect((await db.pool.query(`select price::text, stock from app.products where id = $1`, [productId])).rows).toEqual([{ price: "12.50", stock: 3 }]);
  });

  test("an expired token: the server's 401 is shown as a sentence and the token field is one key away", async () => {
    await useToken(jwt.sign({ sub: "auditor-1", role: "auditor", exp: Math.floor(Date.now() / 1000) - 60 }, SECRET, { algorithm: "HS256" }));
    const problem = page.getByRole("alert");
    await problem.getByText("invalid token: jwt expired", { exact: false }).waitFor();
    expect(await problem.textContent()).toBe("The server refused your token (401): invalid token: jwt expired.It has been forgotten. Enter a new token");
    expect(await page.evaluate(() => sessionStorage.getItem("cartop-audit.token"))).toBeNull();
    await problem.getByRole("button", { name: "Enter a new token" }).click();
    expect(await page.evaluate(() => (globalThis as any).document.activeElement?.id)).toBe("token");
    expect(await page.getByLabel(/^JWT/).getAttribute("aria-invalid")).toBe("true");
  });

  test("no token ever reached a URL, and the page raised no script errors (CSP included)", () => {
    expect(requestedUrls.length).toBeGreaterThan(10);
    expect(requestedUrls.filter((url) => url.includes("eyJ"))).toEqual([]);
    expect(consoleErrors.filter((e) => !/status of 401/.test(e))).toEqual([]);
  });
});
