// Throwaway databases: tests, benchmarks and the schema printer each need "a server (the one given, or an
// embedded one started for the occasion), a fresh database on it, migrated", and to drop it afterwards.
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { startEmbeddedPostgres, type EmbeddedServer } from "./embedded.ts";
import { runMigrations } from "./migrate.ts";
import { databaseUrl } from "./urls.ts";

export interface Server {
  /** Superuser connection string to the server's `postgres` database. */
  url: string;
  /** The embedded server started here, stopped (and its data deleted) by stop(); undefined for a given URL. */
  embedded?: EmbeddedServer;
  stop(): Promise<void>;
}

/** The server at `url`, or, without one, a throwaway embedded server on `port` (data under the temp dir). */
export async function serverFor(url: string | undefined, options: { name: string; port: number; settings?: Record<string, string> }): Promise<Server> {
  if (url) return { url, stop: async () => {} };
  const embedded = await startEmbeddedPostgres({
    dataDir: path.join(os.tmpdir(), `cartop-${options.name}-pg-${randomBytes(4).toString("hex")}`),
    port: options.port,
    persistent: false,
    settings: options.settings,
  });
  return { url: embedded.url, embedded, stop: () => embedded.stop() };
}

/** A database name nobody else uses: `cartop_<purpose>_<random hex>`. */
export const scratchName = (purpose: string) => `cartop_${purpose}_${randomBytes(5).toString("hex")}`;

async function onServer<T>(serverUrl: string, work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

/**
 * Creates database `name` (quoted; names come from scratchName, never from input) and returns its
 * URL: a copy of `template` when given (already migrated), otherwise migrated here.
 */
export async function createDatabase(serverUrl: string, name: string, options: { template?: string } = {}): Promise<string> {
  await onServer(serverUrl, (admin) => admin.query(`create database ${admin.escapeIdentifier(name)}` +
    (options.template ? ` template ${admin.escapeIdentifier(options.template)}` : "")));
  const url = databaseUrl(serverUrl, name);
  if (!options.template) await runMigrations(url);
  return url;
}

export async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  await onServer(serverUrl, (admin) => admin.query(`drop database if exists ${admin.escapeIdentifier(name)} with (force)`));
}
