// Committed graphile-migrate migrations are the only way SQL reaches a database.
import path from "node:path";
import { Logger, migrate } from "graphile-migrate";
import { projectRoot } from "./sourceSql.ts";

export interface MigrateOptions {
  /** Called with each graphile-migrate log line; default prints nothing. */
  log?: (message: string) => void;
}

export async function runMigrations(connectionString: string, options: MigrateOptions = {}): Promise<void> {
  const log = options.log ?? (() => {});
  await migrate({
    connectionString,
    migrationsFolder: path.join(projectRoot, "migrations"),
    logger: new Logger(() => (_level: unknown, message: string) => log(message)),
  });
}
