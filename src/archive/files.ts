// Archive files: one gzip-compressed COPY text file per month plus a JSON manifest beside it.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";

/** Storage columns in archive order. Changing them means a new ARCHIVE_SCHEMA_VERSION. */
export const ARCHIVE_COLUMNS = [
  "id", "created_at", "tx_id", "table_id", "action", "entity_id", "old_entity_id", "row_data", "delta", "user_id", "user_email",
  "ip_address", "user_agent", "request_id", "metadata", "db_user", "application_name", "statement_number",
] as const;
// 2 added statement_number. Version 1 files still restore: restore copies the columns their manifest lists.
export const ARCHIVE_SCHEMA_VERSION = 2;
const READABLE_SCHEMA_VERSIONS = [1, 2];

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

export function archivePaths(dir: string, label: string) {
  const data = path.join(dir, `audit-${label}.copy.gz`);
  return { data, partial: `${data}.partial`, manifest: path.join(dir, `audit-${label}.manifest.json`) };
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

/** Reads an archive file whole: its checksum, size, and the rows it decompresses to. */
export async function inspectArchiveFile(file: string, onRows?: (rows: number) => void): Promise<FileCheck> {
  const hash = hasher();
  const counter = rowCounter(onRows);
  try {
    await pipeline(createReadStream(file), hash, createGunzip(), counter, new Writable({ write: (_c, _e, cb) => cb() }));
  } catch (error) {
    // A truncated or corrupted gzip stream: report it as such, with what we have.
    return { sha256: hash.digest(), bytes: hash.bytes, rows: -1 };
  }
  return { sha256: hash.digest(), bytes: hash.bytes, rows: counter.rows };
}

/** Why `check` does not match `manifest`, or null when it does. */
export function mismatch(manifest: Manifest, check: FileCheck): string | null {
  if (check.sha256 !== manifest.sha256) {
    return `checksum mismatch: the file's SHA-256 is ${check.sha256}, the manifest says ${manifest.sha256}`;
  }
  if (check.rows !== manifest.rows) return `row count mismatch: the file has ${check.rows} rows, the manifest says ${manifest.rows}`;
  return null;
}

export async function readManifest(file: string): Promise<Manifest> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, "utf8"));
  } catch (error) {
    throw new Error(`cannot read manifest ${file}: ${(error as Error).message}`);
  }
  const m = parsed as Partial<Manifest>;
  if (typeof m.sha256 !== "string" || typeof m.rows !== "number" || typeof m.month !== "string") {
    throw new Error(`manifest ${file} is missing sha256, rows or month`);
  }
  if (!READABLE_SCHEMA_VERSIONS.includes(m.schemaVersion as number)) {
    throw new Error(`manifest ${file} has schema version ${m.schemaVersion}; this version reads ${READABLE_SCHEMA_VERSIONS.join(" and ")}`);
  }
  return m as Manifest;
}

/** Writes a file so that readers see either the old content or the new, never half of it. */
export async function writeFileAtomically(file: string, content: string): Promise<void> {
  const temporary = `${file}.partial`;
  await writeFile(temporary, content);
  await fsyncFile(temporary);
  await rename(temporary, file);
}

export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
