// The `cartop-audit` command line: one file per command group. Exit codes: 0 success, 1 failure (including a
// failed verify), 2 usage error (unknown command or option, bad argument).
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Command } from "commander";
import { projectRoot } from "../db/sourceSql.ts";
import { addIntegrityCommands } from "./integrity.ts";
import { addPartitionCommands } from "./partitions.ts";
import { addServiceCommands } from "./services.ts";
import { addTrackingCommands } from "./tracking.ts";

async function packageVersion(): Promise<string> {
  return (JSON.parse(await readFile(path.join(projectRoot, "package.json"), "utf8")) as { version: string }).version;
}

export async function buildProgram(): Promise<Command> {
  const program = new Command()
    .name("cartop-audit")
    .version(await packageVersion(), "-V, --version", "print the version")
    .description("PostgreSQL audit trail captured by triggers: migrate, run the worker, manage tracking and partitions")
    .showHelpAfterError()
    .exitOverride();
  addServiceCommands(program);
  addTrackingCommands(program);
  addIntegrityCommands(program);
  addPartitionCommands(program);
  return program;
}

/** Parses and runs; returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = await buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    const e = error as { code?: string; exitCode?: number; message?: string };
    if (e.code === "commander.helpDisplayed" || e.code === "commander.help" || e.code === "commander.version") return 0;
    if (e.code?.startsWith("commander.")) return 2; // commander already printed the message
    // A failed command speaks to the person who ran it, in plain words (logs are for running services).
    process.stderr.write(`cartop-audit: ${e.message ?? String(error)}\n`);
    const hint = (error as { hint?: unknown }).hint;
    if (typeof hint === "string" && hint) process.stderr.write(`hint: ${hint}\n`);
    return 1;
  }
}
