// A throwaway migrated database for a benchmark: on DATABASE_URL's server, or an embedded one.
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedServer } from "../src/db/embedded.ts";
import { runMigrations } from "../src/db/migrate.ts";
import { databaseUrl } from "../src/db/urls.ts";

export interface ScratchDatabase {
  url: string;
  pool: pg.Pool;
  /** "PostgreSQL 15.20 (…)" plus "(embedded)" when it is. */
  describe(): Promise<string>;
  close(): Promise<void>;
}

export async function openScratchDatabase(name: string, embeddedPort: number): Promise<ScratchDatabase> {
  let server: EmbeddedServer | undefined;
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    server = await startEmbeddedPostgres({
      dataDir: path.join(os.tmpdir(), `cartop-${name}-pg-${randomBytes(4).toString("hex")}`),
      port: embeddedPort,
      persistent: false,
    });
    serverUrl = server.url;
  }
  const dbName = `cartop_${name}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const url = databaseUrl(serverUrl, dbName);
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  pool.on("error", () => {}); // idle connections are terminated when the database is dropped at the end
  await runMigrations(url);
  return {
    url,
    pool,
    async describe() {
      const { rows } = await pool.query(
        `select current_setting('server_version') as version, current_setting('synchronous_commit') as sync,
                current_setting('shared_buffers') as shared_buffers`);
      return `PostgreSQL ${rows[0].version}${server ? " (embedded)" : ""}, synchronous_commit=${rows[0].sync}, ` +
        `shared_buffers=${rows[0].shared_buffers}`;
    },
    async close() {
      await pool.end();
      await admin.query(`drop database ${dbName} with (force)`);
      await admin.end();
      await server?.stop();
    },
  };
}
