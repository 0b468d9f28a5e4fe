// Committed graphile-migrate migrations are the only way SQL reaches a database.
import path from "node:path";
import { Logger, migrate } from "graphile-migrate";
// graphile-migrate keeps its pool open 200 ms after a run, and ends the process if one of its idle connections
// fails; a caller that stops the server right after migrating (tests, the calendar test's clock changes) would die.
import { clearAllPools } from "graphile-migrate/dist/pgReal.js";
import pg from "pg";
import { projectRoot } from "./sourceSql.ts";

/** The oldest PostgreSQL the SQL sources run on (MERGE, `unique nulls not distinct`, security_invoker views). */
export const MIN_POSTGRES_VERSION_NUM = 150000;

export interface MigrateOptions {
  /** Called with each graphile-migrate log line; default prints nothing. */
  log?: (message: string) => void;
}

/** Why a server of this version cannot run cartop-audit, or null when it can. */
export function postgresVersionProblem(versionNum: number, version: string): string | null {
  return versionNum < MIN_POSTGRES_VERSION_NUM ? `cartop-audit needs PostgreSQL 15 or later; this server is PostgreSQL ${version}` : null;
}

/** Fails with a message naming the version found when the server is older than the SQL needs. */
export async function checkPostgresVersion(connectionString: string): Promise<void> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    const { rows: [server] } = await client.query<{ num: string; version: string }>(
      "select current_setting('server_version_num') as num, current_setting('server_version') as version");
    const problem = postgresVersionProblem(Number(server!.num), server!.version);
    if (problem) throw new Error(problem);
  } finally {
    await client.end();
  }
}

export async function runMigrations(connectionString: string, options: MigrateOptions = {}): Promise<void> {
  await checkPostgresVersion(connectionString);
  const log = options.log ?? (() => {});
  await migrate({
    connectionString,
    migrationsFolder: path.join(projectRoot, "migrations"),
    logger: new Logger(() => (_level: unknown, message: string) => log(message)),
  });
  clearAllPools();
}
