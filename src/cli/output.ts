// How the CLI talks: readable tables by default, JSON with --json, progress bars on a terminal.
import { SingleBar } from "cli-progress";
import Table from "cli-table3";
import { SQLSTATE } from "../db/sqlstate.ts";

export interface OutputOptions {
  json?: boolean;
}

/** Prints rows as a table (or as JSON with --json). */
export function printRows(rows: Record<string, unknown>[], options: OutputOptions, empty = "(none)"): void {
  if (options.json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  if (rows.length === 0) {
    process.stdout.write(`${empty}\n`);
    return;
  }
  const head = Object.keys(rows[0]!);
  const cells = rows.map((row) => head.map((key) => display(row[key])));
  const table = new Table({
    head, style: { head: [], border: [] },
    colWidths: columnWidths(head, cells, process.stdout.columns || DEFAULT_WIDTH).map((w) => w + 2),
    wordWrap: true, wrapOnWordBoundary: false,
  });
  for (const row of cells) table.push(row);
  process.stdout.write(`${table.toString()}\n`);
}

/** Tables fit this many columns when stdout is not a terminal (a file, a pipe). */
const DEFAULT_WIDTH = 120;
const MIN_COLUMN = 8;

/** Content widths that fit `width`: each column as wide as its longest line, the widest shrunk first (they wrap). */
export function columnWidths(head: string[], rows: string[][], width: number): number[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => Math.max(...(r[i] ?? "").split("\n").map((l) => l.length)))));
  const available = width - (3 * head.length + 1); // borders and padding
  while (widths.reduce((a, b) => a + b, 0) > available) {
    const widest = widths.indexOf(Math.max(...widths));
    if (widths[widest]! <= MIN_COLUMN) break;
    widths[widest]!--;
  }
  return widths;
}

/** Keys of a result object in snake_case, as every other command prints them (SQL column names). */
export function snakeCase<T>(value: T): T {
  if (Array.isArray(value)) return value.map(snakeCase) as T;
  if (value && typeof value === "object" && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeCase(v)])) as T;
  }
  return value;
}

/** Prints one result object (JSON with --json, `key: value` lines otherwise). */
export function printResult(result: Record<string, unknown>, options: OutputOptions): void {
  if (options.json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  for (const [key, value] of Object.entries(result)) process.stdout.write(`${key}: ${display(value)}\n`);
}

function display(value: unknown): string {
  if (value === null || value === undefined) return "";
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export interface Progress {
  update(rows: number, total: number): void;
  stop(): void;
}

/** A progress bar (rows/s, or other units) on stderr when it is a terminal and output is not JSON; silent otherwise. */
export function progress(label: string, options: OutputOptions, unit = "rows"): Progress {
  if (options.json || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {speed} ${unit}/s | eta {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
  });
  const started = performance.now();
  let running = false;
  return {
    update(rows, total) {
      if (!running) {
        bar.start(total, 0, { speed: 0 });
        running = true;
      }
      const speed = Math.round(rows / Math.max(0.001, (performance.now() - started) / 1000));
      bar.setTotal(Math.max(total, rows));
      bar.update(rows, { speed });
    },
    stop() {
      if (running) bar.stop();
    },
  };
}

/**
 * One named bar per phase of a job that reports rows phase after phase (archive: export, then verify), so a
 * bar never jumps back from 100% to 1%. A count lower than the last one starts the next phase.
 */
export function phasedProgress(label: string, phases: readonly string[], options: OutputOptions): Progress {
  let index = 0;
  let last = 0;
  let bar = progress(`${label} ${phases[0]}`, options);
  return {
    update(rows, total) {
      if (rows < last && index < phases.length - 1) {
        bar.stop();
        bar = progress(`${label} ${phases[++index]}`, options);
      }
      last = rows;
      bar.update(rows, total);
    },
    stop: () => bar.stop(),
  };
}

/** One row of audit.revert (the SQL type audit.revert_step). */
export interface RevertStep {
  step: number;
  log_id: string;
  tx_id: string;
  statement_number: number | null;
  entity_schema: string;
  entity_name: string;
  entity_id: string | null;
  action: string;
  revert_action: string | null;
  statement: string | null;
  current_value: Record<string, unknown> | null;
  reverted_value: Record<string, unknown> | null;
  problem: string | null;
  problem_code: string | null;
  applied: boolean;
}

/** A readable revert: per row what it does, as a diff (- now, + after), and any problem. */
export function revertPreview(steps: RevertStep[], apply: boolean): string {
  const lines: string[] = [];
  for (const s of steps) {
    const verb = s.problem ? (s.problem_code === SQLSTATE.objectNotInPrerequisiteState ? "CONFLICT" : "REFUSED") : apply ? (s.applied ? "done" : "skipped") : "would run";
    lines.push(`${s.step}. ${s.revert_action ?? "-"} ${s.entity_schema}.${s.entity_name} ${s.entity_id ?? ""} ` +
      `(undoes ${s.action} of audit row ${s.log_id}, statement ${s.statement_number ?? "?"}): ${verb}`);
    if (s.problem) lines.push(`   ${s.problem}`);
    const now = s.current_value ?? {};
    const after = s.reverted_value ?? {};
    for (const key of [...new Set([...Object.keys(now), ...Object.keys(after)])].sort()) {
      const a = key in now ? JSON.stringify(now[key]) : undefined;
      const b = key in after ? JSON.stringify(after[key]) : undefined;
      if (a === b) continue;
      if (a !== undefined) lines.push(`   - ${key}: ${a}`);
      if (b !== undefined) lines.push(`   + ${key}: ${b}`);
    }
  }
  const problems = steps.filter((s) => s.problem).length;
  const applied = steps.filter((s) => s.applied).length;
  lines.push(apply
    ? `${applied} of ${steps.length} row(s) reverted${problems ? `, ${problems} skipped` : ""}`
    : `dry run: ${steps.length} row(s), ${problems} problem(s); nothing changed (--apply to revert)`);
  return `${lines.join("\n")}\n`;
}
