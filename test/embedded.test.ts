// With no DATABASE_URL, every command uses the embedded server `npm start` is running, and a second start
// says where the first one is. Runs `cartop-audit start` for real, as a child process, on a fresh data directory.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "../src/db/embedded.ts";
import { projectRoot } from "../src/db/sourceSql.ts";

const exec = promisify(execFile);
let dir: string;
let env: NodeJS.ProcessEnv;
let first: ChildProcess | undefined;
let firstLog = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "cartop-embedded-test-"));
  await chmod(dir, 0o755); // as root, PostgreSQL runs as the postgres user, which must reach the data directory
  const { DATABASE_URL: _d, TEST_DATABASE_URL: _t, JWT_SECRET: _j, ...rest } = process.env;
  env = { ...rest, NODE_OPTIONS: "", EMBEDDED_PG_DIR: path.join(dir, ".data/postgres"), EMBEDDED_PG_PORT: String(await freePort(55650)),
    PORT: String(await freePort(3150)), AUDIT_ARCHIVE_DIR: path.join(dir, "archive"), LOG_LEVEL: "info" };
});
afterAll(async () => {
  if (first && first.exitCode === null) {
    first.kill("SIGINT");
    await new Promise((resolve) => first!.once("exit", resolve));
  }
  await rm(dir, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [path.join(projectRoot, "src/main.ts"), ...args], { env, cwd: dir });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("commands use the running embedded server and leave it running; a second start says where the first is", async () => {
  first = spawn(process.execPath, [path.join(projectRoot, "src/main.ts"), "start"], { env, cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    first!.stderr!.on("data", (chunk: Buffer) => {
      firstLog += chunk.toString("utf8");
      if (firstLog.includes("press Ctrl-C to stop")) resolve();
    });
    first!.once("exit", (code) => reject(new Error(`start exited (${code}) before it was ready:\n${firstLog}`)));
  });

  const listed = await cli("partitions", "list", "--json");
  expect(listed.code).toBe(0);
  expect(listed.stderr).toContain(`using the embedded PostgreSQL already running in ${env.EMBEDDED_PG_DIR} (pid `);
  expect(JSON.parse(listed.stdout).map((p: { partition_name: string }) => p.partition_name)).toContain("log_default");

  // The command did not stop the server it borrowed: the API still answers from the database.
  const health = await fetch(`http://127.0.0.1:${env.PORT}/healthz`);
  expect(await health.json()).toEqual({ status: "ok" });

  const second = await cli("start");
  expect(second.code).toBe(1);
  expect(second.stderr).toMatch(new RegExp(`^cartop-audit: this project is already running \\(pid ${first.pid}, since [0-9T:.Z-]+\\): ` +
    `API http://localhost:${env.PORT}/graphql, database psql "postgres://postgres:postgres@127\\.0\\.0\\.1:\\d+/cartop"\\. ` +
    `Stop it with Ctrl-C in its terminal \\(or kill ${first.pid}\\)`));

  first.kill("SIGINT");
  expect(await new Promise((resolve) => first!.once("exit", resolve))).toBe(0);
  expect(existsSync(path.join(dir, ".data/running.json"))).toBe(false);
});
