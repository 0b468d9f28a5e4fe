// How the CLI talks: readable tables by default, JSON with --json, progress bars on a terminal.
import { SingleBar } from "cli-progress";
import Table from "cli-table3";

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
  const table = new Table({ head, style: { head: [], border: [] } });
  for (const row of rows) table.push(head.map((key) => display(row[key])));
  process.stdout.write(`${table.toString()}\n`);
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
