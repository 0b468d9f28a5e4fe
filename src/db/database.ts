// Which PostgreSQL to use: DATABASE_URL when set, otherwise the embedded one under .data/.
import { startEmbeddedPostgres } from "./embedded.ts";
import type { Config } from "../config.ts";
import { databaseUrl } from "./urls.ts";
import pg from "pg";

export interface Database {
  url: string;
  embedded: boolean;
  stop(): Promise<void>;
}

/** The database name used inside the embedded cluster. */
export const embeddedDatabaseName = "cartop";

export async function openDatabase(config: Config, log: (line: string) => void): Promise<Database> {
  if (config.databaseUrl) {
    return { url: config.databaseUrl, embedded: false, stop: async () => {} };
  }
  log(`no DATABASE_URL: starting embedded PostgreSQL in ${config.embeddedDataDir}`);
  const server = await startEmbeddedPostgres({
    dataDir: config.embeddedDataDir,
    port: config.embeddedPort,
    persistent: true,
  });
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    const { rowCount } = await admin.query("select from pg_database where datname = $1", [embeddedDatabaseName]);
    if (!rowCount) await admin.query(`create database ${embeddedDatabaseName}`);
  } finally {
    await admin.end();
  }
  return { url: databaseUrl(server.url, embeddedDatabaseName), embedded: true, stop: () => server.stop() };
}
