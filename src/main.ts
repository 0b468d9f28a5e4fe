// Entry point of `npm start` and the `cartop-audit` command.
import { Command } from "commander";
import { loadDotEnv, readConfig } from "./config.ts";
import { openDatabase, type Database } from "./db/database.ts";
import { runMigrations } from "./db/migrate.ts";

const log = (line: string) => process.stderr.write(`cartop-audit: ${line}\n`);

/** Runs `work`, then waits for Ctrl-C / SIGTERM and shuts down what was opened. */
async function runUntilSignalled(work: (database: Database) => Promise<void>): Promise<void> {
  const config = readConfig();
  const database = await openDatabase(config, log);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    await database.stop();
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  try {
    await work(database);
  } catch (error) {
    await database.stop();
    throw error;
  }
}

/** How to connect with psql; the password is shown only for the local embedded server. */
function psqlHint(database: Database): string {
  const u = new URL(database.url);
  const password = database.embedded && u.password ? `:${u.password}` : "";
  return `psql "postgres://${u.username}${password}@${u.host}${u.pathname}"`;
}

const program = new Command()
  .name("cartop-audit")
  .description("PostgreSQL audit trail captured by triggers")
  .showHelpAfterError();

program
  .command("migrate")
  .description("apply committed migrations to the database, then exit")
  .action(async () => {
    const config = readConfig();
    const database = await openDatabase(config, log);
    try {
      await runMigrations(database.url, { log });
      log("database is up to date");
    } finally {
      await database.stop();
    }
  });

program
  .command("start")
  .description("migrate and keep the database running (the API and worker join in later releases)")
  .action(async () => {
    await runUntilSignalled(async (database) => {
      await runMigrations(database.url, { log });
      log(`database ready; connect with: ${psqlHint(database)}`);
      log("the example schema is app (app.users, app.products); the audit trail is audit.log");
      log("press Ctrl-C to stop");
    });
  });

loadDotEnv();
program.parseAsync(process.argv).catch((error: unknown) => {
  log(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
