// A private embedded PostgreSQL for the oracle: logical decoding on, migrated, thrown away afterwards.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { freePort, startEmbeddedPostgres } from "../../src/db/embedded.ts";
import { runMigrations } from "../../src/db/migrate.ts";

export interface OracleServer {
  url: string;
  stop(): Promise<void>;
}

/** Starts a server on the first free port at or after `port` (its own data directory, deleted on stop). */
export async function startOracleServer(port: number): Promise<OracleServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "cartop-oracle-"));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as the postgres user, which must reach the data directory
  const server = await startEmbeddedPostgres({
    dataDir: path.join(dir, "data"),
    port: await freePort(port),
    persistent: false,
    settings: {
      wal_level: "logical", max_replication_slots: "4", max_wal_senders: "4",
      // Throwaway cluster: durability is not what is compared.
      fsync: "off", synchronous_commit: "off", full_page_writes: "off",
    },
  });
  try {
    await runMigrations(server.url);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return {
    url: server.url,
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
