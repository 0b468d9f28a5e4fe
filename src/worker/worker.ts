// The graphile-worker runner: in-process with `start`, standalone with `cartop-audit worker`.
import { Logger as WorkerLogger, run, type Runner } from "graphile-worker";
import { createPool } from "../db/pool.ts";
import { openArchiveStore } from "../archive/store.ts";
import type { Config } from "../config.ts";
import type { Logger } from "../log.ts";
import { crontab, makeTasks } from "./tasks.ts";

export interface RunningWorker {
  stop(): Promise<void>;
}

/** graphile-worker's log lines as structured lines of ours, with the job's scope (task, job id) as fields. */
function workerLogger(logger: Logger): WorkerLogger {
  const worker = logger.child({ component: "worker" });
  return new WorkerLogger((scope) => (level, message, meta) => {
    const fields = { taskIdentifier: scope.taskIdentifier, jobId: scope.jobId, ...(meta?.error ? { err: meta.error } : {}) };
    const method = level === "error" ? "error" : level === "warning" ? "warn" : level === "debug" ? "debug" : "info";
    worker[method](fields, message);
  });
}

export async function startWorker(databaseUrl: string, config: Config, logger: Logger): Promise<RunningWorker> {
  const pool = createPool(databaseUrl, {
    max: 4,
    onLost: (error) => logger.warn({ component: "worker", error: error.message, code: error.code }, "database connection lost"),
  });
  let runner: Runner;
  try {
    runner = await run({
      pgPool: pool,
      taskList: makeTasks(pool, { ...config, store: openArchiveStore(config), parquet: config.archiveParquet }),
      crontab,
      concurrency: 1,
      noHandleSignals: true,
      pollInterval: 2000,
      logger: workerLogger(logger),
    });
    // Premake, seal and check coverage at start too (in that order), not only on the schedule.
    for (const task of ["audit__ensure_partitions", "audit__seal_days", "audit__check_coverage"]) {
      await runner.addJob(task, {}, { jobKey: task, jobKeyMode: "replace", queueName: task });
    }
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
