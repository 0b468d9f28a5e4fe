// Archiving a month: export (streamed COPY, gzip) + manifest → verify → detach → drop, each step recorded
// in audit.archives before the next, so a run killed anywhere resumes without duplicates or loss.
// Restoring: verify the file against its manifest first, then COPY it back into a fresh partition.
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rename, stat } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import type pg from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import {
  ARCHIVE_COLUMNS, ARCHIVE_SCHEMA_VERSION, archivePaths, fsyncFile, hasher, inspectArchiveFile, mismatch,
  monthLabel, readManifest, rowCounter, writeFileAtomically, type Manifest,
} from "./files.ts";

export type ArchiveStep = "exported" | "verified" | "detached" | "archived";

export interface ArchiveOptions {
  dir: string;
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
  file_name: string | null;
}

const columnList = ARCHIVE_COLUMNS.join(", ");

async function record(pool: pg.Pool, month: string, fields: Record<string, unknown>): Promise<void> {
  const names = Object.keys(fields);
  const sets = names.map((name, i) => `${name} = $${i + 2}`).join(", ");
  await pool.query(`update audit.archives set ${sets}, updated_at = now() where month = $1`, [month, ...names.map((n) => fields[n])]);
}

async function partitionName(pool: pg.Pool, month: string): Promise<string> {
  const { rows } = await pool.query<{ name: string }>("select audit_private.partition_name($1::date) as name", [month]);
  return rows[0]!.name;
}

/** Step 1: stream the month out in one snapshot, compressed, hashed and counted on the way. */
async function exportMonth(pool: pg.Pool, month: string, options: ArchiveOptions): Promise<Manifest> {
  const label = monthLabel(month);
  const paths = archivePaths(options.dir, label);
  const partition = await partitionName(pool, month);
  const client = await pool.connect();
  try {
    await client.query("begin isolation level repeatable read read only");
    const { rows: [stats] } = await client.query(
      `select count(*)::bigint as rows, min(created_at) as first, max(created_at) as last from audit.${client.escapeIdentifier(partition)}`,
    );
    const { rows: tables } = await client.query<{ id: number; name: string }>(
      `select t.id, format('%s.%s', t.schema_name, t.table_name) as name from audit_private.tables t
        where t.id in (select distinct table_id from audit.${client.escapeIdentifier(partition)})`,
    );
    const total = Number(stats.rows);
    const counter = rowCounter((rows) => options.onRows?.(rows, total));
    const hash = hasher();
    const copy = client.query(copyTo(
      `copy (select ${columnList} from audit.${client.escapeIdentifier(partition)} order by id) to stdout`,
    ));
    await pipeline(copy, counter, createGzip(), hash, createWriteStream(paths.partial));
    await client.query("commit");
    if (counter.rows !== total) {
      throw new Error(`export of ${label} wrote ${counter.rows} rows but the partition holds ${total}`);
    }
    await fsyncFile(paths.partial);
    await rename(paths.partial, paths.data);
    const manifest: Manifest = {
      month: label,
      partition: `audit.${partition}`,
      file: path.basename(paths.data),
      rows: total,
      firstCreatedAt: stats.first ? new Date(stats.first).toISOString() : null,
      lastCreatedAt: stats.last ? new Date(stats.last).toISOString() : null,
      sha256: hash.digest(),
      bytes: hash.bytes,
      schemaVersion: ARCHIVE_SCHEMA_VERSION,
      columns: [...ARCHIVE_COLUMNS],
      tables: Object.fromEntries(tables.map((t) => [String(t.id), t.name])),
      exportedAt: new Date().toISOString(),
    };
    await writeFileAtomically(paths.manifest, `${JSON.stringify(manifest, null, 2)}\n`);
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
  await mkdir(options.dir, { recursive: true });
  const label = monthLabel(month);
  const paths = archivePaths(options.dir, label);
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
        file_name: manifest.file, manifest_name: path.basename(paths.manifest),
        first_created_at: manifest.firstCreatedAt, last_created_at: manifest.lastCreatedAt,
        schema_version: manifest.schemaVersion,
      });
      await options.afterStep?.("exported");
      row = await current();
    }
    if (row.status === "exported") {
      const manifest = await readManifest(paths.manifest);
      const check = await inspectArchiveFile(paths.data, (rows) => options.onRows?.(rows, manifest.rows));
      const problem = mismatch(manifest, check) ?? (manifest.sha256 !== row.sha256 ? "the manifest file and audit.archives disagree" : null);
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
    month: label, rows: Number(row.rows), sha256: row.sha256 ?? "", bytes: (await stat(paths.data)).size,
    file: paths.data, status: row.status,
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
      const code = (error as { code?: string }).code;
      if (code === "55P03" && attempt < attempts) {
        // lock_not_available: writers are busy; back off and try again rather than queue them behind us.
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** attempt)));
        continue;
      }
      if (code === "22000") {
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

/** Re-checks one archive file against its manifest (and audit.archives, when it has the month). */
export async function verifyArchive(pool: pg.Pool, month: string, options: Pick<ArchiveOptions, "dir" | "onRows">): Promise<VerifyResult> {
  const label = monthLabel(month);
  const paths = archivePaths(options.dir, label);
  let problem: string | null;
  try {
    const manifest = await readManifest(paths.manifest);
    const check = await inspectArchiveFile(paths.data, (rows) => options.onRows?.(rows, manifest.rows));
    problem = mismatch(manifest, check);
    const { rows } = await pool.query<{ sha256: string | null }>("select sha256 from audit.archives where month = $1", [month]);
    if (!problem && rows[0]?.sha256 && rows[0].sha256 !== manifest.sha256) {
      problem = `audit.archives records SHA-256 ${rows[0].sha256}, the manifest ${manifest.sha256}`;
    }
  } catch (error) {
    problem = (error as Error).message;
  }
  return { month: label, file: paths.data, ok: problem === null, problem };
}

export interface RestoreResult {
  month: string;
  rows: number;
  partition: string;
}

/** Brings an archived month back into audit.log. Refuses, changing nothing, if the file does not verify. */
export async function restoreMonth(pool: pg.Pool, month: string, options: Pick<ArchiveOptions, "dir" | "onRows">): Promise<RestoreResult> {
  const label = monthLabel(month);
  const paths = archivePaths(options.dir, label);
  const manifest = await readManifest(paths.manifest);
  const check = await inspectArchiveFile(paths.data);
  const problem = mismatch(manifest, check);
  if (problem) throw new Error(`refusing to restore ${label}: ${problem}. Nothing was changed.`);

  const client = await pool.connect();
  try {
    await client.query("begin");
    const { rows: [state] } = await client.query("select * from audit_private.partition_state($1::date)", [month]);
    if (state.present && !state.attached) {
      throw new Error(`refusing to restore ${label}: its partition exists but is detached (an archive run was interrupted); ` +
        "run `cartop-audit partitions archive` to finish it first. Nothing was changed.");
    }
    let partition: string;
    if (state.present) {
      // A premade (attached) partition: it must be empty, and rows are copied straight into it.
      partition = (await client.query("select audit_private.partition_name($1::date) as name", [month])).rows[0].name;
      const { rows } = await client.query(`select count(*)::bigint as n from audit.${client.escapeIdentifier(partition)}`);
      if (Number(rows[0].n) > 0) {
        throw new Error(`refusing to restore ${label}: audit.${partition} already holds ${rows[0].n} rows. Nothing was changed.`);
      }
    } else {
      partition = (await client.query("select audit_private.create_restore_table($1::date) as name", [month])).rows[0].name;
    }
    const counter = rowCounter((rows) => options.onRows?.(rows, manifest.rows));
    await pipeline(
      createReadStream(paths.data), createGunzip(), counter,
      client.query(copyFrom(`copy audit.${client.escapeIdentifier(partition)} (${manifest.columns.join(", ")}) from stdin`)),
    );
    if (!state.present) await client.query("select audit_private.attach_restore_table($1::date)", [month]);
    if (counter.rows !== manifest.rows) {
      throw new Error(`restore of ${label} read ${counter.rows} rows, the manifest says ${manifest.rows}. Nothing was changed.`);
    }
    await client.query(
      `insert into audit.archives (month, partition_name, status, file_name, manifest_name, rows, sha256, bytes,
                                   first_created_at, last_created_at, schema_version, restored_at)
       values ($1, $2, 'restored', $3, $4, $5, $6, $7, $8, $9, $10, now())
       on conflict (month) do update set status = 'restored', restored_at = now(), updated_at = now(), last_error = null`,
      [month, partition, manifest.file, path.basename(paths.manifest), manifest.rows, manifest.sha256, manifest.bytes,
       manifest.firstCreatedAt, manifest.lastCreatedAt, manifest.schemaVersion],
    );
    await client.query("commit");
    client.release();
    return { month: label, rows: manifest.rows, partition: `audit.${partition}` };
  } catch (error) {
    // Discarding the connection rolls its transaction back, even one stuck in a broken COPY.
    client.release(error as Error);
    throw error;
  }
}
