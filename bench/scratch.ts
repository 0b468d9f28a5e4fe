// A throwaway migrated database for a benchmark: on DATABASE_URL's server, or an embedded one.
import type pg from "pg";
import { createPool } from "../src/db/pool.ts";
import { createDatabase, dropDatabase, scratchName, serverFor } from "../src/db/scratch.ts";

export interface ScratchDatabase {
  url: string;
  pool: pg.Pool;
  /** "PostgreSQL 15.20 (…)" plus "(embedded)" when it is. */
  describe(): Promise<string>;
  close(): Promise<void>;
}

export async function openScratchDatabase(name: string, embeddedPort: number): Promise<ScratchDatabase> {
  const server = await serverFor(process.env.DATABASE_URL, { name, port: embeddedPort });
  const dbName = scratchName(name);
  const url = await createDatabase(server.url, dbName);
  // Idle connections are terminated when the database is dropped at the end.
  const pool = createPool(url, { max: 4 });
  return {
    url,
    pool,
    async describe() {
      const { rows } = await pool.query(
        `select current_setting('server_version') as version, current_setting('synchronous_commit') as sync,
                current_setting('shared_buffers') as shared_buffers`);
      return `PostgreSQL ${rows[0].version}${server.embedded ? " (embedded)" : ""}, synchronous_commit=${rows[0].sync}, ` +
        `shared_buffers=${rows[0].shared_buffers}`;
    },
    async close() {
      await pool.end();
      await dropDatabase(server.url, dbName);
      await server.stop();
    },
  };
}
