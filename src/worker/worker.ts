// The graphile-worker runner: in-process with `start`, standalone with `cartop-audit worker`.
import { Logger, run, type Runner } from "graphile-worker";
import pg from "pg";
import type { Config } from "../config.ts";
import { crontab, makeTasks } from "./tasks.ts";

export interface RunningWorker {
  stop(): Promise<void>;
}

export async function startWorker(databaseUrl: string, config: Config, log: (line: string) => void): Promise<RunningWorker> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  // A connection lost while idle is replaced on next use; log it rather than crash the process.
  const lost = (error: Error) => log(`worker: database connection lost: ${error.message}`);
  pool.on("error", lost);
  pool.on("connect", (client) => client.on("error", lost));
  const logger = new Logger(() => (level, message) => {
    if (level !== "debug" || config.logLevel === "debug") log(`worker: ${message}`);
  });
  let runner: Runner;
  try {
    runner = await run({
      pgPool: pool,
      taskList: makeTasks(pool, config),
      crontab,
      concurrency: 1,
      noHandleSignals: true,
      pollInterval: 2000,
      logger,
    });
    // Premake at start too, not only at the next hour.
    await runner.addJob("audit__ensure_partitions", {}, { jobKey: "audit__ensure_partitions", jobKeyMode: "replace" });
  } catch (error) {
    await pool.end();
    throw error;
  }
  return {
    async stop() {
      await runner.stop();
      await pool.end();
    },
  };
}
