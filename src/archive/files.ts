// Archive files: one gzip-compressed COPY text file per month plus a JSON manifest beside it, and (unless
// turned off) the same rows as Parquet under parquet/month=YYYY-MM/ for query engines.
import { createHash } from "node:crypto";
import path from "node:path";
import { Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import type { ArchiveStore } from "./store.ts";

/** Storage columns in archive order. Changing them means a new ARCHIVE_SCHEMA_VERSION. */
export const ARCHIVE_COLUMNS = [
  "id", "created_at", "tx_id", "table_id", "action", "entity_id", "old_entity_id", "row_data", "delta", "user_id", "user_email",
  "ip_address", "user_agent", "request_id", "metadata", "db_user", "application_name", "statement_number",
] as const;
// 2 added statement_number.
export const ARCHIVE_SCHEMA_VERSION = 2;
/** The columns each readable format holds, in file order: restore copies a file with its version's list (never the manifest's). */
export const ARCHIVE_COLUMNS_BY_VERSION: Readonly<Record<number, readonly string[]>> = {
  1: ARCHIVE_COLUMNS.filter((c) => c !== "statement_number"),
  2: ARCHIVE_COLUMNS,
};
const READABLE_SCHEMA_VERSIONS = Object.keys(ARCHIVE_COLUMNS_BY_VERSION).map(Number);


export interface Manifest {
  month: string; // YYYY-MM
  partition: string;
  file: string;
  rows: number;
  firstCreatedAt: string | null;
  lastCreatedAt: string | null;
  sha256: string;
  bytes: number;
  schemaVersion: number;
  columns: string[];
  /** The audited tables referenced by the rows (table_id → schema.name), for restoring elsewhere. */
  tables: Record<string, string>;
  exportedAt: string;
  /** The Parquet copy, when written: its object name, SHA-256 and size. */
  parquet?: { file: string; sha256: string; bytes: number } | null;
}

/** "2026-01" → "2026-01-01"; anything else is an error that says what is expected. */
export function parseMonth(text: string): string {
  const match = /^(\d{4})-(\d{2})$/.exec(text);
  const month = match ? Number(match[2]) : 0;
  if (!match || month < 1 || month > 12) {
    throw new Error(`"${text}" is not a month: expected YYYY-MM, e.g. 2025-03`);
  }
  return `${match[1]}-${match[2]}-01`;
}

/** "2026-01-01" (or a Date) → "2026-01". */
export function monthLabel(month: string | Date): string {
  const iso = typeof month === "string" ? month : month.toISOString();
  return iso.slice(0, 7);
}

/** Object names of one month's archive inside its store. */
export function archiveNames(label: string) {
  return {
    data: `audit-${label}.copy.gz`,
    manifest: `audit-${label}.manifest.json`,
    parquet: `parquet/month=${label}/audit-${label}.parquet`,
  };
}

/** Local paths of one month's archive in a directory store (tests and tools). */
export function archivePaths(dir: string, label: string) {
  const names = archiveNames(label);
  const data = path.join(dir, names.data);
  return { data, partial: `${data}.partial`, manifest: path.join(dir, names.manifest), parquet: path.join(dir, ...names.parquet.split("/")) };
}

/** Counts rows (newline-terminated lines of COPY text) flowing through, reporting progress. */
export function rowCounter(onRows?: (rows: number) => void): Transform & { rows: number } {
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      let found = 0;
      for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) found++;
      if (found) {
        counter.rows += found;
        try {
          onRows?.(counter.rows);
        } catch (error) {
          callback(error as Error);
          return;
        }
      }
      callback(null, chunk);
    },
  }) as Transform & { rows: number };
  counter.rows = 0;
  return counter;
}

/** Hashes (SHA-256) and measures the bytes flowing through. */
export function hasher(): Transform & { digest(): string; bytes: number } {
  const hash = createHash("sha256");
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      stream.bytes += chunk.length;
      callback(null, chunk);
    },
  }) as Transform & { digest(): string; bytes: number };
  stream.bytes = 0;
  stream.digest = () => hash.digest("hex");
  return stream;
}

export interface FileCheck {
  sha256: string;
  bytes: number;
  rows: number;
}

/** Reads an archive object whole: its checksum, size, and (COPY text) the rows it decompresses to. */
export async function inspectArchive(store: ArchiveStore, name: string, onRows?: (rows: number) => void): Promise<FileCheck> {
  const hash = hasher();
  const counter = rowCounter(onRows);
  const source = await store.get(name);
  try {
    await pipeline(source, hash, createGunzip(), counter, new Writable({ write: (_c, _e, cb) => cb() }));
  } catch {
    // A truncated or corrupted gzip stream: report it as such, with what we have.
    return { sha256: hash.digest(), bytes: hash.bytes, rows: -1 };
  }
  return { sha256: hash.digest(), bytes: hash.bytes, rows: counter.rows };
}

/** Checksum and size of an object (the Parquet copy). */
export async function checksumOf(store: ArchiveStore, name: string): Promise<{ sha256: string; bytes: number }> {
  const hash = hasher();
  await pipeline(await store.get(name), hash, new Writable({ write: (_c, _e, cb) => cb() }));
  return { sha256: hash.digest(), bytes: hash.bytes };
}

/** Why `check` does not match `manifest`, or null when it does. */
export function mismatch(manifest: Manifest, check: FileCheck): string | null {
  if (check.sha256 !== manifest.sha256) {
    return `checksum mismatch: the file's SHA-256 is ${check.sha256}, the manifest says ${manifest.sha256}`;
  }
  if (check.rows !== manifest.rows) return `row count mismatch: the file has ${check.rows} rows, the manifest says ${manifest.rows}`;
  return null;
}

export async function readManifest(store: ArchiveStore, name: string): Promise<Manifest> {
  const where = store.locate(name);
  let parsed: unknown;
  try {
    const content = await store.read(name);
    if (!content) throw new Error("it does not exist");
    parsed = JSON.parse(content.toString("utf8"));
  } catch (error) {
    throw new Error(`cannot read manifest ${where}: ${(error as Error).message}`);
  }
  const m = parsed as Partial<Manifest>;
  if (typeof m.sha256 !== "string" || typeof m.rows !== "number" || typeof m.month !== "string") {
    throw new Error(`manifest ${where} is missing sha256, rows or month`);
  }
  if (!READABLE_SCHEMA_VERSIONS.includes(m.schemaVersion as number)) {
    throw new Error(`manifest ${where} has schema version ${m.schemaVersion}; this version reads ${READABLE_SCHEMA_VERSIONS.join(" and ")}`);
  }
  return m as Manifest;
}
