/**
 * Every scheduled maintenance task, by name: the graphile-worker task identifiers (src/worker/tasks.ts) and what
 * audit.task_runs records for each (metrics show each from the start, with zero runs).
 */
export const TASK_NAMES = [
  "audit__ensure_partitions", "audit__summarize_activity", "audit__seal_days", "audit__check_coverage", "audit__archive_partitions",
] as const;
