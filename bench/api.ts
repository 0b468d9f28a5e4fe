// Read latency of the GraphQL API over HTTP with 1M audit rows spread over 12 monthly partitions:
// entityHistory for one entity, and auditLogs for one day of one table. 2 concurrent clients.
//   npm run bench:api                               embedded PostgreSQL
//   DATABASE_URL=postgres://... npm run bench:api -- --rows 1000000 --seconds 10
import { parseArgs } from "node:util";
import jwt from "jsonwebtoken";
import { startServer } from "../src/http/app.ts";
import { openScratchDatabase } from "./scratch.ts";
import { percentile, printTable } from "./stats.ts";

const { values: args } = parseArgs({
  options: { rows: { type: "string", default: "1000000" }, seconds: { type: "string", default: "10" }, clients: { type: "string", default: "2" } },
});
const ROWS = Number(args.rows);
const SECONDS = Number(args.seconds);
const CLIENTS = Number(args.clients);
const ENTITIES = 50_000;
const SECRET = "bench-secret-0123456789-0123456789-0123";


const scratch = await openScratchDatabase("bench_api", 55732);
const { pool } = scratch;
try {
  console.log(`${await scratch.describe()}; ${ROWS} audit rows over 12 months, ${CLIENTS} clients x ${SECONDS}s per query`);
  const { rows: [{ products, users }] } = await pool.query(
    `select (select id from audit_private.tables where table_name = 'products') as products,
            (select id from audit_private.tables where table_name = 'users') as users`);
  const { rows: months } = await pool.query<{ m: string }>(
    `select to_char(audit_private.current_month() - make_interval(months => g), 'YYYY-MM-DD') as m from generate_series(0, 11) g`);
  for (const { m } of months) await pool.query("select audit.create_partition($1::date)", [m]);
  // Spread evenly over the last 12 months; products get 80% of rows, entity ids 1..ENTITIES.
  await pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id, db_user)
     select now() - (g::float / $1) * interval '360 days', g / 3, case when g % 5 = 0 then $3::int else $2::int end,
            (array['I','U','U','U','D'])[1 + g % 5]::"char", (1 + g % ${ENTITIES})::text,
            jsonb_build_object('id', 1 + g % ${ENTITIES}, 'name', 'Product ' || g, 'price', g % 1000, 'stock', g % 50),
            case when (array['I','U','U','U','D'])[1 + g % 5] = 'U' then jsonb_build_object('stock', g % 51) end,
            'user-' || (g % 500), 'cartop_user'
     from generate_series(1, $1::int) g`,
    [ROWS, products, users]);
  await pool.query("vacuum analyze audit_private.log_entries");

  const server = await startServer({ databaseUrl: scratch.url, config: { port: 0, jwtSecret: SECRET, trustProxy: false, rateLimitPerMinute: 10_000_000 } });
  const token = jwt.sign({ sub: "bench", role: "auditor" }, SECRET, { algorithm: "HS256", expiresIn: "1h" });
  const queries: [string, () => { query: string; variables: Record<string, unknown> }][] = [
    ["entityHistory (one entity)", () => ({
      query: `query($id: String!) { entityHistory(entityName: "products", entityId: $id, first: 100) { nodes { rowId createdAt action changes userId } } }`,
      variables: { id: String(1 + Math.floor(Math.random() * ENTITIES)) },
    })],
    ["auditLogs (one day of one table)", () => {
      const day = new Date(Date.now() - (1 + Math.floor(Math.random() * 300)) * 86_400_000);
      day.setUTCHours(0, 0, 0, 0);
      return {
        query: `query($from: Datetime!, $to: Datetime!) { auditLogs(first: 100, orderBy: ROW_ID_DESC,
                  filter: { entityName: { equalTo: "products" }, createdAt: { greaterThanOrEqualTo: $from, lessThan: $to } }) {
                  totalCount nodes { rowId createdAt action entityId } } }`,
        variables: { from: day.toISOString(), to: new Date(day.getTime() + 86_400_000).toISOString() },
      };
    }],
  ];
  const lines = [["query", "requests/s", "p50", "p95", "errors"]];
  for (const [label, make] of queries) {
    const latencies: number[] = [];
    let errors = 0;
    const deadline = performance.now() + SECONDS * 1000;
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < deadline) {
        const started = performance.now();
        const response = await fetch(`${server.url}/graphql`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
          body: JSON.stringify(make()),
        });
        const body = await response.json() as { errors?: unknown };
        latencies.push(performance.now() - started);
        if (response.status !== 200 || body.errors) errors++;
      }
    }));
    latencies.sort((a, b) => a - b);
    lines.push([label, (latencies.length / SECONDS).toFixed(0), `${percentile(latencies, 50).toFixed(1)} ms`,
      `${percentile(latencies, 95).toFixed(1)} ms`, String(errors)]);
  }
  await server.close();
  printTable(lines);
} finally {
  await scratch.close();
}
