// Which PostgreSQL to use: DATABASE_URL when set, otherwise the embedded one under .data/.
import { embeddedUrl, runningEmbeddedPostgres, startEmbeddedPostgres } from "./embedded.ts";
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
  // The server `npm start` (or another command) is running on this data directory: use it, leave it running.
  const running = await runningEmbeddedPostgres(config.embeddedDataDir);
  if (running) {
    log(`no DATABASE_URL: using the embedded PostgreSQL already running in ${config.embeddedDataDir} (pid ${running.pid}, port ${running.port})`);
    const url = embeddedUrl(running.port);
    await ensureDatabase(url).catch((error: Error) => {
      throw new Error(`the embedded PostgreSQL running in ${config.embeddedDataDir} (pid ${running.pid}, port ${running.port}) does not answer: ${error.message}. ` +
        "Stop that process, or set DATABASE_URL");
    });
    return { url: databaseUrl(url, embeddedDatabaseName), embedded: true, stop: async () => {} };
  }
  log(`no DATABASE_URL: starting embedded PostgreSQL in ${config.embeddedDataDir}`);
  const server = await startEmbeddedPostgres({
    dataDir: config.embeddedDataDir,
    port: config.embeddedPort,
    persistent: true,
  });
  await ensureDatabase(server.url);
  return { url: databaseUrl(server.url, embeddedDatabaseName), embedded: true, stop: () => server.stop() };
}

/** Creates the project's database inside the embedded cluster on first use. */
async function ensureDatabase(serverUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    const { rowCount } = await admin.query("select from pg_database where datname = $1", [embeddedDatabaseName]);
    if (!rowCount) await admin.query(`create database ${embeddedDatabaseName}`);
  } finally {
    await admin.end();
  }
}
