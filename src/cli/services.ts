// Commands that run the system: start (everything), serve, worker, migrate, demo.
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Command } from "commander";
import pg from "pg";
import { readConfig } from "../config.ts";
import { runMigrations } from "../db/migrate.ts";
import { projectRoot } from "../db/sourceSql.ts";
import { boot, jsonOption, log, psqlHint, runUntilSignalled, withDatabase } from "./context.ts";
import { printRows, type OutputOptions } from "./output.ts";
import { recordRunning, runningFile, runningProject } from "./running.ts";

/** The README's example activity (`cartop-audit demo`). */
export const demoActivityFile = path.join(projectRoot, "bench/example-activity.sql");

export function addServiceCommands(program: Command): void {
  program
    .command("start")
    .description("the whole system: migrate, then run the worker and the GraphQL API until Ctrl-C")
    .action(async () => {
      const config = readConfig();
      const file = runningFile(config.embeddedDataDir);
      const running = await runningProject(file);
      if (running) {
        throw new Error(`this project is already running (pid ${running.pid}, since ${running.startedAt}): ` +
          `API ${running.api}/graphql, database ${running.psql}. Stop it with Ctrl-C in its terminal (or kill ${running.pid}); ` +
          "other commands (npx cartop-audit partitions list, …) use it as it is");
      }
      await runUntilSignalled(async (onShutdown) => {
        const { database, api } = await boot(onShutdown, { migrate: true, worker: true, api: true });
        onShutdown(await recordRunning(file, { pid: process.pid, startedAt: new Date().toISOString(), api: api!, psql: psqlHint(database) }));
        log(`database ready; connect with: ${psqlHint(database)}`);
        log("the example schema is app (app.users, app.products); the audit trail is audit.log");
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("serve")
    .description("run the GraphQL API only until Ctrl-C")
    .action(async () => {
      await runUntilSignalled(async (onShutdown) => {
        await boot(onShutdown, { api: true });
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("migrate")
    .description("apply committed migrations, then exit")
    .action(async () => {
      await withDatabase(async (_pool, _config, database) => {
        await runMigrations(database.url, { log });
        log("database is up to date");
      });
    });

  program
    .command("worker")
    .description("run the graphile-worker process only (partition upkeep and archiving) until Ctrl-C")
    .action(async () => {
      await runUntilSignalled(async (onShutdown) => {
        await boot(onShutdown, { worker: true });
        log("press Ctrl-C to stop");
      });
    });

  program
    .command("demo")
    .description("migrate, then load the README's example activity (API writes with context, a bulk fix, deletions)")
    .addOption(jsonOption())
    .action(async (options: OutputOptions) => {
      await withDatabase(async (pool, _config, database) => {
        await runMigrations(database.url, { log });
        // Its own connection, named, so the rows written without a user show where they came from.
        const client = new pg.Client({ connectionString: database.url, application_name: "cartop-audit demo" });
        await client.connect();
        try {
          const { rowCount } = await client.query("select from app.users where email = 'grace@example.com'");
          if (rowCount) throw new Error("demo: the example activity is already loaded here (app.users has grace@example.com); load it into a fresh database");
          // One statement at a time, as psql -f would send them: each gets its own statement time (created_at),
          // as writes from an application would.
          for (const statement of (await readFile(demoActivityFile, "utf8")).split(/;\s*\n/)) {
            if (statement.replace(/--.*$/gm, "").trim()) await client.query(statement);
          }
        } finally {
          await client.end();
        }
        const { rows } = await pool.query(
          `select entity_name, action, count(*)::int as rows from audit.log where request_id like 'req-10%' or application_name = 'cartop-audit demo' group by 1, 2 order by 1, 2`);
        printRows(rows, options);
      });
    });
}
