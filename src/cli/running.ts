// A small record of the running `cartop-audit start` (pid and addresses), so that a second start can say
// where the first one is instead of failing on a busy port or a locked data directory.
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { isAlive } from "../db/embedded.ts";

export interface RunningProject {
  pid: number;
  startedAt: string;
  api: string;
  psql: string;
}

/** `.data/running.json`, beside the embedded data directory. */
export function runningFile(embeddedDataDir: string): string {
  return path.join(path.dirname(embeddedDataDir), "running.json");
}

/** The running start recorded in `file`, if its process still exists (a stale record is ignored). */
export async function runningProject(file: string): Promise<RunningProject | undefined> {
  try {
    const record = JSON.parse(await readFile(file, "utf8")) as RunningProject;
    return Number.isInteger(record.pid) && record.pid !== process.pid && isAlive(record.pid) ? record : undefined;
  } catch {
    return undefined;
  }
}

export async function recordRunning(file: string, record: RunningProject): Promise<() => Promise<void>> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
  return () => rm(file, { force: true });
}
