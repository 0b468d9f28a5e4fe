// The Parquet copy of an archived month, and SQL over all of them (`cartop-audit archive query`).
//
// Written from the same snapshot as the COPY text file: PostgreSQL streams the month as it reads in
// audit.log (the public columns, not the storage ones) as CSV to a temporary file, and DuckDB turns that
// into one Parquet file (zstd) under parquet/month=YYYY-MM/, the Hive-style layout DuckDB, Trino/Athena and
// Spark read directly. Nothing is held in memory but DuckDB's buffers. Restores read the COPY text file,
// not this one: it is for reading in place.
import { DuckDBInstance, StatementType, type DuckDBConnection } from "@duckdb/node-api";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import { ARCHIVE_ERRORS, ArchiveError } from "./errors.ts";
import { hasher } from "./files.ts";
import { putThrough, type ArchiveStore } from "./store.ts";

/** DuckDB types for the PostgreSQL types of audit.log's columns; anything else is kept as its text. */
const DUCKDB_TYPES: Record<string, string> = {
  bigint: "BIGINT", integer: "INTEGER", smallint: "SMALLINT", boolean: "BOOLEAN",
  "timestamp with time zone": "TIMESTAMPTZ", jsonb: "JSON", json: "JSON",
};

interface Column {
  name: string;
  type: string;
}

/** audit.log's columns, from the catalog: the Parquet files have exactly these. */
async function logColumns(db: pg.PoolClient): Promise<Column[]> {
  const { rows } = await db.query<{ name: string; type: string }>(
    `select attname::text as name, format_type(atttypid, atttypmod) as type from pg_attribute
      where attrelid = 'audit.log'::regclass and attnum > 0 and not attisdropped order by attnum`);
  return rows.map((r) => ({ name: r.name, type: DUCKDB_TYPES[r.type] ?? "VARCHAR" }));
}

const sqlString = (text: string) => `'${text.replaceAll("'", "''")}'`;

async function withDuckDb<T>(work: (duck: DuckDBConnection) => Promise<T>): Promise<T> {
  const instance = await DuckDBInstance.create(":memory:", { memory_limit: "1GB", threads: "2" });
  const duck = await instance.connect();
  try {
    return await work(duck);
  } finally {
    duck.closeSync();
    instance.closeSync();
  }
}

/**
 * Writes `month` (YYYY-MM-DD) as Parquet to `store` under `name`, reading through `client`, which is inside
 * the export's snapshot. Returns the object's checksum, size and row count.
 */
export async function exportParquet(
  client: pg.PoolClient, month: string, store: ArchiveStore, name: string,
): Promise<{ sha256: string; bytes: number; rows: number }> {
  const columns = await logColumns(client);
  const work = await mkdtemp(path.join(os.tmpdir(), "cartop-parquet-"));
  try {
    const csv = path.join(work, "month.csv");
    const parquet = path.join(work, "month.parquet");
    // Times in UTC with microseconds; NULL is an unquoted empty field, an empty string a quoted one.
    await client.query("set local timezone = 'UTC'");
    await client.query("set local datestyle = 'ISO, YMD'");
    const list = columns.map((c) => client.escapeIdentifier(c.name)).join(", ");
    const bound = (f: string) => `audit_private.${f}(${client.escapeLiteral(month)}::date)`;
    await pipeline(
      client.query(copyTo(`copy (select ${list} from audit.log where created_at >= ${bound("month_start")}
                                   and created_at < ${bound("month_end")} order by id) to stdout with (format csv)`)),
      createWriteStream(csv, { mode: 0o600 }),
    );
    const rows = await withDuckDb(async (duck) => {
      const types = columns.map((c) => `${sqlString(c.name)}: ${sqlString(c.type)}`).join(", ");
      await duck.run(
        `copy (select * from read_csv(${sqlString(csv)}, columns = {${types}}, auto_detect = false, header = false, delim = ',',
                                      quote = '"', escape = '"', new_line = '\\n', allow_quoted_nulls = false))
           to ${sqlString(parquet)} (format parquet, compression zstd, row_group_size 100000)`);
      const reader = await duck.runAndReadAll(`select count(*)::bigint as n from read_parquet(${sqlString(parquet)})`);
      return Number(reader.getRows()[0]![0]);
    });
    const hash = hasher();
    await putThrough(store, name, createReadStream(parquet), hash);
    return { sha256: hash.digest(), bytes: hash.bytes, rows };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface QueryResult {
  columns: string[];
  rows: Record<string, unknown>[];
}

/**
 * Runs `sql` over every archived month's Parquet copy in `store`, where they appear as one table
 * `audit_log` with audit.log's columns. S3 objects are copied to a private temporary directory first
 * (DuckDB's own S3 support is an extension it would download); local ones are read in place. Only one
 * SELECT runs, and it can read those files and nothing else: DuckDB's file access is locked down first.
 */
export async function queryArchive(store: ArchiveStore, sql: string): Promise<QueryResult> {
  const names = (await store.list("parquet/")).filter((n) => /^parquet\/month=\d{4}-\d{2}\/[^/]+\.parquet$/.test(n));
  if (!names.length) {
    throw new ArchiveError(`archive query: no archived months in Parquet at ${store.url}`, ARCHIVE_ERRORS.wrongState,
      "archive a month first (cartop-audit partitions archive), with AUDIT_ARCHIVE_PARQUET on");
  }
  const work = await mkdtemp(path.join(os.tmpdir(), "cartop-archive-query-"));
  try {
    let root = store.localRoot;
    if (!root) {
      root = work;
      for (const name of names) {
        const local = path.join(work, ...name.split("/"));
        await mkdir(path.dirname(local), { recursive: true, mode: 0o700 });
        await pipeline(await store.get(name), createWriteStream(local, { mode: 0o600 }));
      }
    }
    const files = names.map((n) => path.join(root!, ...n.split("/")));
    return await withDuckDb(async (duck) => {
      // The query may read these files and nothing else, and may only read (a COPY could overwrite them).
      await duck.run(`set allowed_paths = [${files.map(sqlString).join(", ")}]`);
      await duck.run("set enable_external_access = false");
      await duck.run("set TimeZone = 'UTC'");
      await duck.run("set lock_configuration = true");
      await duck.run(`create view audit_log as select * exclude (month)
                        from read_parquet([${files.map(sqlString).join(", ")}], hive_partitioning = true)`);
      const statements = await duck.extractStatements(sql);
      if (statements.count !== 1) {
        throw new ArchiveError(`archive query: expected one SQL statement, got ${statements.count}`, ARCHIVE_ERRORS.invalidValue,
          "pass a single SELECT, e.g. \"select count(*) from audit_log\"");
      }
      const statement = await statements.prepare(0);
      if (statement.statementType !== StatementType.SELECT && statement.statementType !== StatementType.EXPLAIN) {
        throw new ArchiveError("archive query: only SELECT (or EXPLAIN) statements are run over archives", ARCHIVE_ERRORS.invalidValue,
          "archives are read-only here; write a SELECT over audit_log");
      }
      const reader = await statement.runAndReadAll();
      // JSON columns (old_value, new_value, changes, metadata) come back as text: parse them, as psql shows jsonb.
      const columns = reader.columnNames();
      const json = columns.filter((_name, i) => reader.columnType(i).alias === "JSON");
      const rows = reader.getRowObjectsJson() as Record<string, unknown>[];
      for (const row of rows) {
        for (const name of json) if (typeof row[name] === "string") row[name] = JSON.parse(row[name] as string);
      }
      return { columns, rows };
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
