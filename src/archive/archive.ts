// Archiving a month: export (streamed COPY, gzip) + manifest → verify → detach → drop, each step recorded
// in audit.archives before the next, so a run killed anywhere resumes without duplicates or loss.
// Restoring: check the file against the database's record of the month (audit.archives) first, then COPY
// it back into a fresh partition and check the rows against the month's seals before committing.
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import type pg from "pg";
import { columnsMismatch, storedColumns } from "../db/storedColumns.ts";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { monthSealProblems } from "../seals/seals.ts";
import { ARCHIVE_ERRORS, ArchiveError } from "./errors.ts";
import {
  ARCHIVE_COLUMNS, ARCHIVE_COLUMNS_BY_VERSION, ARCHIVE_SCHEMA_VERSION, archiveNames, checksumOf, hasher, inspectArchive, mismatch,
  monthLabel, readManifest, rowCounter, type FileCheck, type Manifest,
} from "./files.ts";
import { exportParquet } from "./parquet.ts";
import { putThrough, type ArchiveStore } from "./store.ts";
import { SQLSTATE, sqlstateOf } from "../db/sqlstate.ts";
import { FILE_WRITTEN } from "./status.ts";

export type ArchiveStep = "exported" | "verified" | "detached" | "archived";

export interface ArchiveOptions {
  /** Where the files go and are read back from (openArchiveStore: AUDIT_ARCHIVE_URL). */
  store: ArchiveStore;
  /** Also write the month as Parquet (default true; AUDIT_ARCHIVE_PARQUET). */
  parquet?: boolean;
  /** Rows written so far in the current step (export, verify, restore), for progress bars. */
  onRows?: (rows: number, total: number) => void;
  /** Called after each recorded step; tests throw here to simulate a crash. */
  afterStep?: (step: ArchiveStep) => void | Promise<void>;
  /** Attempts for the brief exclusive lock that DETACH needs (lock_timeout each). */
  detachAttempts?: number;
  lockTimeoutMs?: number;
}

export interface ArchiveResult {
  month: string;
  rows: number;
  sha256: string;
  bytes: number;
  file: string;
  status: string;
}

interface ArchiveRow {
  month: string;
  partition_name: string;
  status: string;
  rows: string | null;
  sha256: string | null;
  bytes: string | null;
  file_name: string | null;
  parquet_sha256: string | null;
}

async function record(pool: pg.Pool, month: string, fields: Record<string, unknown>): Promise<void> {
  const names = Object.keys(fields);
  const sets = names.map((name, i) => `${name} = $${i + 2}`).join(", ");
  await pool.query(`update audit.archives set ${sets}, updated_at = now() where month = $1`, [month, ...names.map((n) => fields[n])]);
}

async function partitionName(pool: pg.Pool, month: string): Promise<string> {
  const { rows } = await pool.query<{ name: string }>("select audit_private.partition_name($1::date) as name", [month]);
  return rows[0]!.name;
}

/** Columns of an archive format, quoted: the only column lists export's and restore's COPY ever use. */
const quotedColumns = (client: pg.PoolClient, version = ARCHIVE_SCHEMA_VERSION) =>
  ARCHIVE_COLUMNS_BY_VERSION[version]!.map((c) => client.escapeIdentifier(c)).join(", ");

/** Refuses to export when the storage table's columns are not the archive format's (a restore would lose one). */
async function checkColumns(client: pg.PoolClient): Promise<void> {
  const problem = columnsMismatch(await storedColumns(client), ARCHIVE_COLUMNS, `archive format ${ARCHIVE_SCHEMA_VERSION}`);
  if (problem) throw new ArchiveError(`archive: ${problem}`, ARCHIVE_ERRORS.wrongState, "update ARCHIVE_COLUMNS and bump ARCHIVE_SCHEMA_VERSION (src/archive/files.ts)");
}

/** Step 1: stream the month out in one snapshot, compressed, hashed and counted on the way. */
async function exportMonth(pool: pg.Pool, month: string, options: ArchiveOptions): Promise<Manifest> {
  const label = monthLabel(month);
  const names = archiveNames(label);
  const partition = await partitionName(pool, month);
  const client = await pool.connect();
  try {
    await client.query("begin isolation level repeatable read read only");
    await checkColumns(client);
    const { rows: [stats] } = await client.query(
      `select count(*)::bigint as rows, min(created_at) as first, max(created_at) as last from audit.${client.escapeIdentifier(partition)}`,
    );
    const { rows: tables } = await client.query<{ id: number; name: string }>(
      `select t.id, format('%s.%s', t.schema_name, t.table_name) as name from audit_private.tables t
        where t.id in (select distinct table_id from audit.${client.escapeIdentifier(partition)})`,
    );
    // A month (a restored one above all) leaves the database only as it was sealed.
    const unsealed = await monthSealProblems(client, month);
    if (unsealed.length) {
      throw new ArchiveError(
        `refusing to archive ${label}: its rows do not match their seals (${unsealed.map((p) => `${p.day}: ${p.problem}`).join("; ")})`,
        ARCHIVE_ERRORS.corrupted, "run `cartop-audit verify`; the month stays in the database until this is resolved");
    }
    const total = Number(stats.rows);
    const counter = rowCounter((rows) => options.onRows?.(rows, total));
    const hash = hasher();
    const copy = client.query(copyTo(
      `copy (select ${quotedColumns(client)} from audit.${client.escapeIdentifier(partition)} order by id) to stdout`,
    ));
    await putThrough(options.store, names.data, copy, counter, createGzip(), hash);
    if (counter.rows !== total) {
      throw new Error(`export of ${label} wrote ${counter.rows} rows but the partition holds ${total}`);
    }
    let parquet: Manifest["parquet"] = null;
    if (options.parquet !== false) {
      const written = await exportParquet(client, month, options.store, names.parquet);
      if (written.rows !== total) throw new Error(`export of ${label} wrote ${written.rows} rows as Parquet but the partition holds ${total}`);
      parquet = { file: names.parquet, sha256: written.sha256, bytes: written.bytes };
    }
    await client.query("commit");
    const manifest: Manifest = {
      month: label,
      partition: `audit.${partition}`,
      file: names.data,
      rows: total,
      firstCreatedAt: stats.first ? new Date(stats.first).toISOString() : null,
      lastCreatedAt: stats.last ? new Date(stats.last).toISOString() : null,
      sha256: hash.digest(),
      bytes: hash.bytes,
      schemaVersion: ARCHIVE_SCHEMA_VERSION,
      columns: [...ARCHIVE_COLUMNS],
      tables: Object.fromEntries(tables.map((t) => [String(t.id), t.name])),
      exportedAt: new Date().toISOString(),
      parquet,
    };
    await options.store.put(names.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
    client.release();
    return manifest;
  } catch (error) {
    // A COPY interrupted midway leaves the connection in an unknown state: discard it, do not reuse it.
    client.release(error as Error);
    throw error;
  }
}

/** Archives one month (first day as YYYY-MM-DD), resuming from whatever step was last recorded. */
export async function archiveMonth(pool: pg.Pool, month: string, options: ArchiveOptions): Promise<ArchiveResult> {
  const label = monthLabel(month);
  const names = archiveNames(label);
  await pool.query(
    `insert into audit.archives (month, partition_name) values ($1, audit_private.partition_name($1::date))
     on conflict (month) do update set status = 'exporting', last_error = null, started_at = now()
       where audit.archives.status = 'restored'`,
    [month],
  );
  const current = async () => (await pool.query<ArchiveRow>(`select * from audit.archives where month = $1`, [month])).rows[0]!;
  let row = await current();

  try {
    if (row.status === "exporting") {
      const manifest = await exportMonth(pool, month, options);
      await record(pool, month, {
        status: "exported", rows: manifest.rows, sha256: manifest.sha256, bytes: manifest.bytes,
        file_name: manifest.file, manifest_name: names.manifest,
        first_created_at: manifest.firstCreatedAt, last_created_at: manifest.lastCreatedAt,
        schema_version: manifest.schemaVersion, location: options.store.url,
        parquet_file: manifest.parquet?.file ?? null, parquet_sha256: manifest.parquet?.sha256 ?? null,
        parquet_bytes: manifest.parquet?.bytes ?? null,
      });
      await options.afterStep?.("exported");
      row = await current();
    }
    if (row.status === "exported") {
      // Read back from the store, not from memory: the month is dropped only once what the store holds verifies.
      const manifest = await readManifest(options.store, names.manifest);
      const check = await inspectArchive(options.store, names.data, (rows) => options.onRows?.(rows, manifest.rows));
      const problem = mismatch(manifest, check) ?? (manifest.sha256 !== row.sha256 ? "the manifest file and audit.archives disagree" : null) ??
        (await parquetProblem(options.store, label, row.parquet_sha256));
      if (problem) {
        // Nothing was detached yet: export again from the still-attached partition.
        await record(pool, month, { status: "exporting", last_error: `verify: ${problem}` });
        throw new Error(`archive of ${label} failed verification (${problem}); run it again to re-export`);
      }
      await record(pool, month, { status: "verified" });
      await options.afterStep?.("verified");
      row = await current();
    }
    if (row.status === "verified") {
      await detachWithRetries(pool, month, Number(row.rows), options);
      await record(pool, month, { status: "detached" });
      await options.afterStep?.("detached");
      row = await current();
    }
    if (row.status === "detached") {
      await pool.query("select audit_private.drop_archived_partition($1::date)", [month]);
      await record(pool, month, { status: "archived", archived_at: new Date() });
      await options.afterStep?.("archived");
      row = await current();
    }
  } catch (error) {
    await record(pool, month, { last_error: (error as Error).message }).catch(() => {});
    throw error;
  }
  return {
    month: label, rows: Number(row.rows), sha256: row.sha256 ?? "", bytes: Number(row.bytes),
    file: options.store.locate(names.data), status: row.status,
  };
}

async function detachWithRetries(pool: pg.Pool, month: string, expectedRows: number, options: ArchiveOptions) {
  const attempts = options.detachAttempts ?? 20;
  const timeout = options.lockTimeoutMs ?? 2000;
  for (let attempt = 1; ; attempt++) {
    const client = await pool.connect();
    try {
      await client.query("begin");
      await client.query(`select set_config('lock_timeout', $1, true)`, [`${timeout}ms`]);
      await client.query("select audit_private.detach_archived_partition($1::date, $2)", [month, expectedRows]);
      await client.query("commit");
      return;
    } catch (error) {
      await client.query("rollback").catch(() => {});
      const code = sqlstateOf(error);
      if (code === SQLSTATE.lockNotAvailable && attempt < attempts) {
        // lock_not_available: writers are busy; back off and try again rather than queue them behind us.
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** attempt)));
        continue;
      }
      if (code === SQLSTATE.dataException) {
        // Rows changed since the export: go back and export again.
        await record(pool, month, { status: "exporting" });
      }
      throw error;
    } finally {
      client.release();
    }
  }
}

export interface VerifyResult {
  month: string;
  file: string;
  ok: boolean;
  problem: string | null;
}

/** What the database recorded when it archived a month: the reference every file is checked against. */
interface ArchiveRecord {
  status: string;
  rows: number;
  sha256: string;
  firstCreatedAt: string | null;
  lastCreatedAt: string | null;
  parquetSha256: string | null;
  /** The archive format the month was written in (ARCHIVE_COLUMNS_BY_VERSION). */
  schemaVersion: number;
}

async function archiveRecord(db: pg.Pool | pg.PoolClient, month: string): Promise<ArchiveRecord | null> {
  const { rows } = await db.query(
    `select status, rows, sha256, first_created_at, last_created_at, parquet_sha256, schema_version from audit.archives
      where month = $1 and status = any($2)`, [month, FILE_WRITTEN]);
  const row = rows[0];
  if (!row) return null;
  const iso = (t: Date | null) => (t ? t.toISOString() : null);
  return { status: row.status, rows: Number(row.rows), sha256: row.sha256, firstCreatedAt: iso(row.first_created_at), lastCreatedAt: iso(row.last_created_at),
    parquetSha256: row.parquet_sha256, schemaVersion: Number(row.schema_version ?? 1) };
}

/**
 * Why an archive file (and its manifest) does not match the database's record of the month, or null.
 * The manifest is only a copy for people and other tools: a file and manifest edited to agree with each
 * other still disagree with audit.archives.
 */
function disagreement(record: ArchiveRecord, manifest: Manifest, check: FileCheck): string | null {
  if (check.sha256 !== record.sha256) {
    return `checksum mismatch: the file's SHA-256 is ${check.sha256}, audit.archives records ${record.sha256}`;
  }
  if (check.rows !== record.rows) return `row count mismatch: the file has ${check.rows} rows, audit.archives records ${record.rows}`;
  const fields: [string, unknown, unknown][] = [
    ["sha256", manifest.sha256, record.sha256], ["rows", manifest.rows, record.rows],
    ["firstCreatedAt", manifest.firstCreatedAt, record.firstCreatedAt], ["lastCreatedAt", manifest.lastCreatedAt, record.lastCreatedAt],
  ];
  for (const [name, inManifest, inDatabase] of fields) {
    if (inManifest !== inDatabase) return `the manifest's ${name} (${String(inManifest)}) differs from audit.archives (${String(inDatabase)})`;
  }
  return columnsProblem(manifest);
}

/** The manifest's column list must be exactly its format version's; it never reaches SQL either way. */
function columnsProblem(manifest: Manifest): string | null {
  const columns = Array.isArray(manifest.columns) ? manifest.columns : [];
  const expected = ARCHIVE_COLUMNS_BY_VERSION[manifest.schemaVersion] ?? [];
  if (columns.length === expected.length && columns.every((c, i) => c === expected[i])) return null;
  return `the manifest lists columns ${JSON.stringify(manifest.columns)}, archive format ${manifest.schemaVersion} has ${JSON.stringify(expected)}`;
}

/** Why the month's Parquet copy does not match its recorded checksum, or null (also when none was written). */
async function parquetProblem(store: ArchiveStore, label: string, expected: string | null): Promise<string | null> {
  if (!expected) return null;
  const { sha256 } = await checksumOf(store, archiveNames(label).parquet);
  return sha256 === expected ? null : `Parquet checksum mismatch: the file's SHA-256 is ${sha256}, audit.archives records ${expected}`;
}

/** Re-checks one month's archive files against audit.archives (the reference) and its manifest. */
export async function verifyArchive(pool: pg.Pool, month: string, options: Pick<ArchiveOptions, "store" | "onRows">): Promise<VerifyResult> {
  const label = monthLabel(month);
  const names = archiveNames(label);
  let problem: string | null;
  try {
    const record = await archiveRecord(pool, month);
    if (!record) {
      problem = `audit.archives has no record of ${label}: nothing to check the file against`;
    } else {
      const manifest = await readManifest(options.store, names.manifest);
      const check = await inspectArchive(options.store, names.data, (rows) => options.onRows?.(rows, record.rows));
      problem = disagreement(record, manifest, check) ?? (await parquetProblem(options.store, label, record.parquetSha256));
    }
  } catch (error) {
    problem = (error as Error).message;
  }
  return { month: label, file: options.store.locate(names.data), ok: problem === null, problem };
}

export interface RestoreResult {
  month: string;
  rows: number;
  partition: string;
}

/**
 * Brings an archived month back into audit.log, in one transaction. Refuses, changing nothing, unless the
 * file matches audit.archives' record of the month (checksum, rows, first/last time) and the restored rows
 * match every seal of the month's days; the manifest only has to agree with both.
 */
export async function restoreMonth(pool: pg.Pool, month: string, options: Pick<ArchiveOptions, "store" | "onRows">): Promise<RestoreResult> {
  const label = monthLabel(month);
  const names = archiveNames(label);
  const refuse = (why: string, code: string, hint?: string) =>
    new ArchiveError(`refusing to restore ${label}: ${why}. Nothing was changed.`, code, hint);

  const record = await archiveRecord(pool, month);
  if (!record) {
    throw refuse("audit.archives has no record of it, so there is nothing to check the file against", ARCHIVE_ERRORS.wrongState,
      "restore into the database that archived the month (its audit.archives row is the reference)");
  }
  const manifest = await readManifest(options.store, names.manifest);
  const check = await inspectArchive(options.store, names.data);
  const problem = disagreement(record, manifest, check);
  if (problem) {
    throw refuse(problem, ARCHIVE_ERRORS.corrupted, "the archive file or its manifest was altered or replaced; restore from an intact copy");
  }

  const client = await pool.connect();
  try {
    await client.query("begin");
    const { rows: [state] } = await client.query("select * from audit_private.partition_state($1::date)", [month]);
    if (state.present && !state.attached) {
      throw refuse("its partition exists but is detached (an archive run was interrupted)", ARCHIVE_ERRORS.wrongState,
        "run `cartop-audit partitions archive` to finish it first");
    }
    let partition: string;
    if (state.present) {
      // A premade (attached) partition: it must be empty, and rows are copied straight into it.
      partition = (await client.query("select audit_private.partition_name($1::date) as name", [month])).rows[0].name;
      const { rows } = await client.query(`select count(*)::bigint as n from audit.${client.escapeIdentifier(partition)}`);
      if (Number(rows[0].n) > 0) {
        throw refuse(`audit.${partition} already holds ${rows[0].n} rows`, ARCHIVE_ERRORS.wrongState);
      }
    } else {
      partition = (await client.query("select audit_private.create_restore_table($1::date) as name", [month])).rows[0].name;
    }
    const counter = rowCounter((rows) => options.onRows?.(rows, record.rows));
    await pipeline(
      await options.store.get(names.data), createGunzip(), counter,
      client.query(copyFrom(`copy audit.${client.escapeIdentifier(partition)} (${quotedColumns(client, record.schemaVersion)}) from stdin`)),
    );
    if (!state.present) await client.query("select audit_private.attach_restore_table($1::date)", [month]);
    if (counter.rows !== record.rows) {
      throw refuse(`the file held ${counter.rows} rows, audit.archives records ${record.rows}`, ARCHIVE_ERRORS.corrupted);
    }
    const unsealed = await monthSealProblems(client, month);
    if (unsealed.length) {
      throw refuse(`its rows do not match their seals (${unsealed.map((p) => `${p.day}: ${p.problem}`).join("; ")})`,
        ARCHIVE_ERRORS.corrupted, "the archive does not hold what was sealed; run `cartop-audit verify` and restore from an intact copy");
    }
    await client.query(
      "update audit.archives set status = 'restored', restored_at = now(), updated_at = now(), last_error = null where month = $1",
      [month]);
    await client.query("commit");
    client.release();
    return { month: label, rows: record.rows, partition: `audit.${partition}` };
  } catch (error) {
    // Discarding the connection rolls its transaction back, even one stuck in a broken COPY.
    client.release(error as Error);
    throw error;
  }
}
