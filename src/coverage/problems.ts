// Capture coverage (integrity/02_coverage.sql): the one query doctor and the worker's check run; /metrics reports
// the worker's last result (audit.task_runs), so all three agree.
import type pg from "pg";

export type CoverageProblem = {
  check_name: string;
  object: string;
  problem: string;
};

/** Every check, capture_outdated included (the audit.coverage view leaves that one out: it regenerates all capture). */
export async function coverageProblems(db: pg.Pool | pg.PoolClient, monthsAhead: number): Promise<CoverageProblem[]> {
  return (await db.query<CoverageProblem>(
    "select check_name, object, problem from audit.coverage_problems($1, check_capture => true)", [monthsAhead])).rows;
}
