// Once per `npm test`: find a PostgreSQL (TEST_DATABASE_URL, DATABASE_URL, or an embedded one), build a
// migrated template database, and hand both to the test workers through the environment.
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedServer } from "../../src/db/embedded.ts";
import { runMigrations } from "../../src/db/migrate.ts";
import { databaseUrl } from "../../src/db/urls.ts";

declare global {
  // Shared with globalTeardown (same process).
  var cartopTestServer: EmbeddedServer | undefined;
}

export default async function globalSetup(): Promise<void> {
  // Grafast's extra development-time checks, in every test worker.
  process.env.GRAPHILE_ENV ??= "development";
  let serverUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  if (!serverUrl) {
    const server = await startEmbeddedPostgres({
      dataDir: path.join(os.tmpdir(), `cartop-test-pg-${randomBytes(4).toString("hex")}`),
      port: 55432,
      persistent: false,
      // Throwaway cluster: durability is not what is tested here.
      settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off" },
    });
    globalThis.cartopTestServer = server;
    serverUrl = server.url;
  }
  const template = `cartop_test_template_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    const { rows: [server] } = await admin.query<{ version: string; zone: string; now: string }>(
      "select current_setting('server_version') as version, current_setting('TimeZone') as zone, now()::text as now");
    // The clock and zone as the server sees them: the calendar-edge runs move both.
    process.stderr.write(`\ntests run against PostgreSQL ${server!.version} (TimeZone ${server!.zone}, now ${server!.now})\n`);
    await admin.query(`create database ${template}`);
  } finally {
    await admin.end();
  }
  await runMigrations(databaseUrl(serverUrl, template));
  process.env.CARTOP_TEST_SERVER_URL = serverUrl;
  process.env.CARTOP_TEST_TEMPLATE = template;
}
