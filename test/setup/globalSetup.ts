// Once per `npm test`: find a PostgreSQL (TEST_DATABASE_URL, DATABASE_URL, or an embedded one), build a
// migrated template database, and hand both to the test workers through the environment.
import pg from "pg";
import { createDatabase, scratchName, serverFor, type Server } from "../../src/db/scratch.ts";

declare global {
  // Shared with globalTeardown (same process).
  var cartopTestServer: Server | undefined;
}

export default async function globalSetup(): Promise<void> {
  // Grafast's extra development-time checks, in every test worker.
  process.env.GRAPHILE_ENV ??= "development";
  const server = await serverFor(process.env.TEST_DATABASE_URL || process.env.DATABASE_URL, {
    name: "test", port: 55432,
    // Throwaway cluster: durability is not what is tested here.
    settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off" },
  });
  globalThis.cartopTestServer = server;
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    const { rows: [found] } = await admin.query<{ version: string; zone: string; now: string }>(
      "select current_setting('server_version') as version, current_setting('TimeZone') as zone, now()::text as now");
    // The clock and zone as the server sees them: the calendar-edge runs move both.
    process.stderr.write(`\ntests run against PostgreSQL ${found!.version} (TimeZone ${found!.zone}, now ${found!.now})\n`);
  } finally {
    await admin.end();
  }
  const template = scratchName("test_template");
  await createDatabase(server.url, template);
  process.env.CARTOP_TEST_SERVER_URL = server.url;
  process.env.CARTOP_TEST_TEMPLATE = template;
}
