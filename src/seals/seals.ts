// Tamper-evident seals (integrity/01_seals.sql): seal each finished UTC day of the trail with a digest of
// its rows chained to the previous day's seal, keep a copy of every seal in the archive store (directory or bucket), and
// verify both against the rows.
//
// The digest query lives here, not in the database, so that verifying does not trust code stored in the
// database being verified.
import { createHash } from "node:crypto";
import type pg from "pg";
import { columnsMismatch, storedColumns } from "../db/storedColumns.ts";
import type { ArchiveStore } from "../archive/store.ts";
import { ROWS_OUT_OF_DATABASE } from "../archive/status.ts";

/**
 * The stored columns each seal format digests, in order. A column added to storage needs a new format (sealing
 * refuses to run until there is one); days sealed in an older format are verified with that format's list.
 * Format 2 added statement_number.
 */
export const SEAL_COLUMNS_BY_FORMAT: Readonly<Record<number, readonly string[]>> = {
  1: ["id", "created_at", "tx_id", "table_id", "action", "entity_id", "old_entity_id", "row_data", "delta", "user_id",
    "user_email", "ip_address", "user_agent", "request_id", "metadata", "db_user", "application_name"],
  2: ["id", "created_at", "tx_id", "table_id", "action", "entity_id", "old_entity_id", "row_data", "delta", "user_id",
    "user_email", "ip_address", "user_agent", "request_id", "metadata", "db_user", "application_name", "statement_number"],
};
/** The format new seals are written in. */
export const SEAL_FORMAT = 2;

/**
 * rows_digest = SHA-256 of the concatenated SHA-256 digests of every row of the day in id order, each row being
 * the text of a ROW(...) of the format's stored columns (PostgreSQL's record output: quoted where needed, NULL
 * distinct from ''). The time is written in UTC by to_char and no other column's text depends on session
 * settings, so the digest is the same from any connection. ~32 bytes per row are aggregated in memory. (A jsonb
 * array per row was twice as slow: it copies every jsonb value before printing it.)
 */
function dayDigestSql(format: number): string {
  const columns = SEAL_COLUMNS_BY_FORMAT[format];
  if (!columns) throw new Error(`seal format ${format} is not one this version computes (${Object.keys(SEAL_COLUMNS_BY_FORMAT).join(", ")})`);
  // Fixed names from the list above, not input.
  const fields = columns.map((c) => (c === "created_at" ? `to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')` : c));
  return `
  select count(*)::bigint as rows,
         encode(sha256(coalesce(string_agg(sha256(convert_to(row(${fields.join(", ")})::text, 'UTF8')), ''::bytea order by id), ''::bytea)), 'hex') as digest
  from audit_private.log_entries
  where created_at >= ($1::date)::timestamp at time zone 'UTC'
    and created_at < ($1::date + 1)::timestamp at time zone 'UTC'`;
}

export interface Seal {
  day: string; // YYYY-MM-DD (UTC)
  rows: number;
  rows_digest: string;
  previous_digest: string | null;
  seal_digest: string;
  format: number;
  sealed_at: string;
}

type SealFields = Pick<Seal, "day" | "rows" | "rows_digest" | "previous_digest" | "format">;

/** The chain link: what the next day's seal points to. */
export function sealDigest(seal: SealFields): string {
  const text = [`cartop-audit seal v${seal.format}`, seal.day, seal.rows, seal.rows_digest, seal.previous_digest ?? ""].join("\n");
  return createHash("sha256").update(text).digest("hex");
}

/** Rows and digest of one UTC day as the trail holds it now, in seal format `format`. */
export async function dayDigest(db: pg.Pool | pg.PoolClient, day: string, format = SEAL_FORMAT): Promise<{ rows: number; digest: string }> {
  const { rows } = await db.query<{ rows: string; digest: string }>(dayDigestSql(format), [day]);
  return { rows: Number(rows[0]!.rows), digest: rows[0]!.digest };
}

const SEAL_COLUMNS = `to_char(day, 'YYYY-MM-DD') as day, rows::integer as rows, rows_digest, previous_digest, seal_digest, format,
  to_char(sealed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as sealed_at`;

async function sealsInDatabase(db: pg.Pool | pg.PoolClient): Promise<Seal[]> {
  return (await db.query<Seal>(`select ${SEAL_COLUMNS} from audit.seals order by day`)).rows;
}

// ---- the copy in the archive store: seals/YYYY-MM.jsonl, one line per day, only ever appended ----

async function sealsInFiles(store: ArchiveStore): Promise<Map<string, Seal>> {
  const found = new Map<string, Seal>();
  for (const name of (await store.list("seals/")).filter((n) => /^seals\/\d{4}-\d{2}\.jsonl$/.test(n))) {
    const lines = ((await store.read(name))?.toString("utf8") ?? "").split("\n").filter(Boolean);
    for (const [index, line] of lines.entries()) {
      let seal: Seal;
      try {
        seal = JSON.parse(line) as Seal;
      } catch {
        throw new Error(`${name} line ${index + 1} is not JSON`);
      }
      if (!found.has(seal.day)) found.set(seal.day, seal);
    }
  }
  return found;
}

/**
 * Appends the seals the files do not hold yet (never rewrites a line: a tampered database cannot overwrite the
 * copy). Runs after the seals commit, outside the sealing lock: if two sealers race on an S3 object (rewritten
 * whole there), a line lost by one is written again by the next run, which compares with audit.seals.
 */
async function copySealsToFiles(store: ArchiveStore, seals: Seal[]): Promise<void> {
  const inFiles = await sealsInFiles(store);
  const missing = new Map<string, string>();
  for (const seal of seals.filter((s) => !inFiles.has(s.day))) {
    const name = `seals/${seal.day.slice(0, 7)}.jsonl`;
    missing.set(name, `${missing.get(name) ?? ""}${JSON.stringify(seal)}\n`);
  }
  for (const [name, lines] of missing) await store.append(name, lines);
}

// ---- sealing ----

export interface SealOptions {
  /** Where the seal copies go: the archive store. */
  store: ArchiveStore;
  /** How long after midnight (UTC) a day waits before it is sealed; default one hour. */
  grace?: string;
  /** Start no new day after this many seconds (at least one day is sealed per run); default: no limit. */
  stopAfterSeconds?: number;
}

/** Seals every sealable day, oldest first; each seal commits on its own, so an interrupted run keeps what it did. */
export async function sealDays(pool: pg.Pool, options: SealOptions): Promise<Seal[]> {
  const sealed: Seal[] = [];
  const { rows: days } = await pool.query<{ day: string }>(
    "select to_char(d, 'YYYY-MM-DD') as day from audit.sealable_days($1::interval) as d", [options.grace ?? "1 hour"]);
  const problem = columnsMismatch(await storedColumns(pool), SEAL_COLUMNS_BY_FORMAT[SEAL_FORMAT]!, `seal format ${SEAL_FORMAT}`);
  if (problem) throw new Error(`seal: ${problem}: update SEAL_COLUMNS_BY_FORMAT and bump SEAL_FORMAT (src/seals/seals.ts)`);
  const started = performance.now();
  for (const { day } of days) {
    if (sealed.length && options.stopAfterSeconds !== undefined && performance.now() - started > options.stopAfterSeconds * 1000) break;
    const client = await pool.connect();
    try {
      await client.query("begin");
      // Serialises sealers (worker and CLI); writers of the trail never touch this table.
      await client.query("lock table audit.seals in share row exclusive mode");
      const { rows: last } = await client.query<{ day: string; seal_digest: string }>(
        "select to_char(day, 'YYYY-MM-DD') as day, seal_digest from audit.seals order by day desc limit 1");
      if (last[0] && last[0].day >= day) {
        await client.query("rollback"); // another sealer got here first
        continue;
      }
      await client.query("set local work_mem = '256MB'"); // the ordered aggregate sorts in memory
      const { rows, digest } = await dayDigest(client, day);
      const fields: SealFields = { day, rows, rows_digest: digest, previous_digest: last[0]?.seal_digest ?? null, format: SEAL_FORMAT };
      const { rows: inserted } = await client.query<Seal>(
        `insert into audit.seals (day, rows, rows_digest, previous_digest, seal_digest, format)
         values ($1, $2, $3, $4, $5, $6) returning ${SEAL_COLUMNS}`,
        [day, rows, digest, fields.previous_digest, sealDigest(fields), SEAL_FORMAT]);
      await client.query("commit");
      sealed.push(inserted[0]!);
    } catch (error) {
      await client.query("rollback").catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }
  // Also copies seals committed by a run that stopped before writing its files.
  await copySealsToFiles(options.store, await sealsInDatabase(pool));
  return sealed;
}

// ---- verifying ----

export interface SealProblem {
  day: string;
  problem: string;
}

export interface VerifyReport {
  sealedDays: number;
  /** Days whose rows were recomputed and matched. */
  checkedDays: number;
  /** Sealed days whose month is archived (its file is checked by `partitions verify`). */
  archivedDays: number;
  firstSealedDay: string | null;
  lastSealedDay: string | null;
  problems: SealProblem[];
  /** The earliest day with a problem: where the trail stops being trustworthy. */
  firstBadDay: string | null;
}

export interface VerifyOptions {
  store: ArchiveStore;
  /** Only recompute rows for days in [from, to] (the chain and the copies are always checked in full). */
  from?: string;
  to?: string;
  /** Progress: sealed days checked so far (recomputed or skipped) out of all sealed days. */
  onProgress?: (done: number, total: number) => void;
}

const sameSeal = (a: Seal, b: Seal) =>
  a.rows === b.rows && a.rows_digest === b.rows_digest && a.previous_digest === b.previous_digest &&
  a.seal_digest === b.seal_digest && a.format === b.format;

/** Recomputes the chain, compares it with the copy in the archive store and recomputes every day's rows. */
export async function verifySeals(pool: pg.Pool, options: VerifyOptions): Promise<VerifyReport> {
  const problems: SealProblem[] = [];
  const seals = await sealsInDatabase(pool);
  const files = await sealsInFiles(options.store);
  const { rows: archived } = await pool.query<{ month: string }>(
    "select to_char(month, 'YYYY-MM') as month from audit.archives where status = any($1)", [ROWS_OUT_OF_DATABASE]);
  const archivedMonths = new Set(archived.map((r) => r.month));

  let previous: Seal | undefined;
  for (const seal of seals) {
    if (previous && seal.day !== nextDay(previous.day)) {
      problems.push({ day: nextDay(previous.day), problem: `no seal between ${previous.day} and ${seal.day} (seals were deleted)` });
    }
    if (seal.previous_digest !== (previous?.seal_digest ?? null)) {
      problems.push({ day: seal.day, problem: "seal does not link to the previous day's seal (the chain was rewritten)" });
    }
    if (!SEAL_COLUMNS_BY_FORMAT[seal.format]) {
      problems.push({ day: seal.day, problem: `seal format ${seal.format} is not one this version computes (${Object.keys(SEAL_COLUMNS_BY_FORMAT).join(", ")})` });
    } else if (seal.seal_digest !== sealDigest(seal)) {
      problems.push({ day: seal.day, problem: "seal digest does not match its own fields (the seal was edited)" });
    }
    const copy = files.get(seal.day);
    if (!copy) {
      if (files.size) problems.push({ day: seal.day, problem: "no copy of this seal in the archive directory" });
    } else if (!sameSeal(seal, copy)) {
      problems.push({ day: seal.day, problem: "seal differs from its copy in the archive directory" });
    }
    previous = seal;
  }
  if (seals.length && !files.size) {
    problems.push({ day: seals[0]!.day, problem: `no seal copies in ${options.store.locate("seals/")} (is AUDIT_ARCHIVE_URL or AUDIT_ARCHIVE_DIR right?)` });
  }
  const inDatabase = new Set(seals.map((s) => s.day));
  for (const day of files.keys()) {
    if (!inDatabase.has(day)) problems.push({ day, problem: "sealed in the archive directory, but the seal is gone from audit.seals" });
  }

  let checkedDays = 0;
  let archivedDays = 0;
  const client = await pool.connect();
  try {
    // One snapshot for every day: rows moving between days during the check cannot be counted twice.
    await client.query("begin isolation level repeatable read read only");
    await client.query("set local work_mem = '256MB'");
    for (const [index, seal] of seals.entries()) {
      options.onProgress?.(index, seals.length);
      if ((options.from && seal.day < options.from) || (options.to && seal.day > options.to)) continue;
      if (archivedMonths.has(seal.day.slice(0, 7))) {
        archivedDays++;
        continue;
      }
      const problem = await dayProblem(client, seal);
      checkedDays++;
      if (problem) problems.push({ day: seal.day, problem });
    }
    await client.query("commit");
  } finally {
    client.release();
  }

  problems.sort((a, b) => (a.day < b.day ? -1 : a.day > b.day ? 1 : 0));
  return {
    sealedDays: seals.length,
    checkedDays,
    archivedDays,
    firstSealedDay: seals[0]?.day ?? null,
    lastSealedDay: seals.at(-1)?.day ?? null,
    problems,
    firstBadDay: problems[0]?.day ?? null,
  };
}

/** Why the rows of a sealed day no longer match its seal, or null when they do. */
async function dayProblem(db: pg.Pool | pg.PoolClient, seal: Pick<Seal, "day" | "rows" | "rows_digest" | "format">): Promise<string | null> {
  if (!SEAL_COLUMNS_BY_FORMAT[seal.format]) return `seal format ${seal.format} is not one this version computes`;
  const now = await dayDigest(db, seal.day, seal.format);
  if (now.rows !== seal.rows) return `${now.rows} rows, but ${seal.rows} were sealed`;
  if (now.digest !== seal.rows_digest) return `rows differ from what was sealed (same count, ${seal.rows})`;
  return null;
}

/**
 * The sealed days of one month whose rows (as `db` sees them now) do not match their seals. Archiving and
 * restoring call it inside their transaction: a month leaves or re-enters the database only as it was sealed.
 */
export async function monthSealProblems(db: pg.PoolClient, month: string): Promise<SealProblem[]> {
  const { rows: seals } = await db.query<Seal>(
    `select ${SEAL_COLUMNS} from audit.seals
      where day >= $1::date and day < ($1::date + interval '1 month')::date order by day`, [month]);
  await db.query("set local work_mem = '256MB'");
  const problems: SealProblem[] = [];
  for (const seal of seals) {
    const problem = await dayProblem(db, seal);
    if (problem) problems.push({ day: seal.day, problem });
  }
  return problems;
}

function nextDay(day: string): string {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + 1);
  return date.toISOString().slice(0, 10);
}
