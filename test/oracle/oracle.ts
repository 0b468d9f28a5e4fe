// The WAL oracle: PostgreSQL's logical decoding sees every committed change; compare it, transaction by
// transaction, with audit.log. Same rows, same changed columns, same values, the context the transaction
// set, nothing extra, nothing from a transaction that rolled back.
//
// Values are compared as text: the WAL holds each value's output text, and the trail's values are read
// back into their SQL types with audit_private.row_from_trail and printed again, under the same settings.
// The WAL shows a row moved between partitions as a DELETE plus an INSERT (it is one, physically), so a
// trail UPDATE that moves its row is compared as those two; test/partitions-capture.test.ts checks that
// such a move is recorded as one UPDATE.
import pg from "pg";
import { parseChanges, type Tuple, type WalChange } from "./decode.ts";
import { excluded, masked, partitionOf, runWorkload, schemaSql, type TxRecord } from "./workload.ts";

export interface OracleOptions {
  /** A superuser connection to a migrated database on a server with wal_level = logical. */
  url: string;
  seed: number;
  clients: number;
  transactions: number;
  /** Runs after the workload, before the comparison (the suite uses it to check that a write the trail
   * lacks is reported). */
  afterWorkload?: (db: pg.Client) => Promise<void>;
}

export interface OracleResult {
  problems: string[];
  committed: number;
  aborted: number;
  walChanges: number;
  auditRows: number;
}

// Both the WAL's output text and the trail's values printed again use these (capture pins the same ones).
const settings = `set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; set extra_float_digits = 1;
  set bytea_output = 'hex'; set timezone = 'UTC'; set lc_monetary = 'C'`;

type Row = Record<string, string | null>;

/** One change as both sides can state it. Keys sorted, so equal changes print equal. */
function record(table: string, op: string, old: Row | null, next: Row | null, changed: string[] | null): string {
  const sorted = (row: Row | null) => row && Object.fromEntries(Object.entries(row).sort(([a], [b]) => a.localeCompare(b)));
  return JSON.stringify([table, op, sorted(old), sorted(next), changed && [...changed].sort()]);
}

/** The audited columns of a WAL tuple (excluded and masked columns left out: their values are not in the trail). */
function audited(table: string, tuple: Tuple): Row {
  const hidden = [...(excluded[table] ?? []), ...(masked[table] ?? [])];
  return Object.fromEntries(Object.entries(tuple).filter(([k]) => !hidden.includes(k)));
}

/** A WAL tuple with every column: the old row of test_decoding leaves NULLs out. */
function complete(tuple: Tuple | undefined, columns: string[]): Tuple | undefined {
  return tuple && Object.fromEntries(columns.map((c) => [c, tuple[c] ?? null]));
}

function walRecords(change: WalChange, roots: Map<string, string>, columns: Map<string, string[]>): string[] {
  if (change.op === "TRUNCATE") {
    return [...new Set(change.relations!.map((r) => roots.get(r)!).filter(Boolean))].map((t) => record(t, "T", null, null, null));
  }
  const table = roots.get(change.relation)!;
  change = { ...change, old: complete(change.old, columns.get(table)!), new: complete(change.new, columns.get(table)!) };
  if (change.op === "INSERT") return [record(table, "I", null, audited(table, change.new!), null)];
  if (change.op === "DELETE") return [record(table, "D", audited(table, change.old!), null, null)];
  if (!change.old) throw new Error(`UPDATE of ${change.relation} without its old row: is REPLICA IDENTITY FULL set?`);
  const changed = Object.keys(change.new!).filter((k) => !(excluded[table] ?? []).includes(k) && change.old![k] !== change.new![k]);
  // An UPDATE that changes no audited column leaves no audit row.
  return changed.length ? [record(table, "U", audited(table, change.old), audited(table, change.new!), changed)] : [];
}

interface AuditRow {
  xid: string;
  table: string;
  action: string;
  old_row: Row | null;
  new_row: Row | null;
  changed: string[] | null;
  user_id: string | null;
  request_id: string | null;
  statement_number: number | null;
}

/** The workload's tables and their columns. */
async function tableColumns(db: pg.Client): Promise<{ table: string; columns: string[] }[]> {
  return (await db.query<{ table: string; columns: string[] }>(`
    select c.relname as table, array_agg(a.attname::text order by a.attnum) as columns
    from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where n.nspname = 'w' and not c.relispartition and c.relkind in ('r', 'p')
    group by c.relname`)).rows;
}

/** The trail of the workload's tables, values printed again as text from their SQL types. */
async function auditRows(db: pg.Client, tables: { table: string; columns: string[] }[]): Promise<AuditRow[]> {
  const all: AuditRow[] = [];
  for (const { table, columns } of tables) {
    const hidden = [...(excluded[table] ?? []), ...(masked[table] ?? [])];
    const shown = columns.filter((c) => !hidden.includes(c));
    const printed = (value: string) => `case when ${value} is null then null else (select jsonb_build_object(${
      shown.map((c) => `'${c}', case when r.${c} is null then null else format('%s', r.${c}) end`).join(", ")
    }) from audit_private.row_from_trail(null::w.${table}, ${value}) r) end`;
    const { rows } = await db.query<AuditRow>(`
      select (l.tx_id % 4294967296)::text as xid, l.entity_name as table, l.action, ${printed("l.old_value")} as old_row,
             ${printed("l.new_value")} as new_row, (select array_agg(k) from jsonb_object_keys(l.changes) k) as changed,
             l.user_id, l.request_id, l.statement_number
      from audit.log l where l.entity_schema = 'w' and l.entity_name = $1 order by l.id`, [table]);
    all.push(...rows);
  }
  return all;
}

function auditRecords(row: AuditRow, problems: string[]): string[] {
  const action = row.action[0]!;
  if (action !== "U") return [record(row.table, action, action === "D" ? row.old_row : null, action === "I" ? row.new_row : null, null)];
  // The changed columns must be exactly those whose values differ (masked ones cannot be checked here).
  const differ = Object.keys(row.new_row!).filter((k) => row.old_row![k] !== row.new_row![k]).sort();
  const claimed = (row.changed ?? []).filter((k) => !(masked[row.table] ?? []).includes(k)).sort();
  if (JSON.stringify(differ) !== JSON.stringify(claimed)) {
    problems.push(`tx ${row.xid}: ${row.table} UPDATE lists changed ${JSON.stringify(claimed)} but its values differ in ${JSON.stringify(differ)}`);
  }
  const partition = partitionOf[row.table];
  if (partition && partition(row.old_row!) !== partition(row.new_row!)) {
    return [record(row.table, "D", row.old_row, null, null), record(row.table, "I", null, row.new_row, null)];
  }
  return [record(row.table, "U", row.old_row, row.new_row, row.changed)];
}

function countBy(records: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of records) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

/** What differs between the two multisets, as short lines. */
function difference(wal: string[], trail: string[]): string[] {
  const a = countBy(wal);
  const b = countBy(trail);
  const lines: string[] = [];
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    const diff = (a.get(key) ?? 0) - (b.get(key) ?? 0);
    if (diff > 0) lines.push(`  missing from the trail (${diff}x): ${key}`);
    if (diff < 0) lines.push(`  in the trail, not in the WAL (${-diff}x): ${key}`);
  }
  return lines;
}

/** Sets up the workload tables and a logical slot, runs the workload, and compares. */
export async function runOracle(options: OracleOptions): Promise<OracleResult> {
  const db = new pg.Client({ connectionString: options.url });
  await db.connect();
  const slot = `cartop_oracle_${options.seed}`.replace(/[^a-z0-9_]/g, "_");
  try {
    await db.query(schemaSql);
    await db.query("select pg_create_logical_replication_slot($1, 'test_decoding')", [slot]);
    const txs: TxRecord[] = await runWorkload(options);
    await options.afterWorkload?.(db);

    // Decoding reads only flushed WAL, and the workload committed with synchronous_commit off: wait for the
    // WAL writer to flush past the last commit.
    const { rows: [end] } = await db.query<{ lsn: string }>("select pg_current_wal_insert_lsn()::text as lsn");
    while (!(await db.query<{ done: boolean }>("select pg_current_wal_flush_lsn() >= $1::pg_lsn as done", [end!.lsn])).rows[0]!.done) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await db.query(settings);
    const { rows: lines } = await db.query<{ data: string }>(
      "select data from pg_logical_slot_get_changes($1, null, null, 'include-xids', '1', 'skip-empty-xacts', '1')", [slot]);
    const { rows: relations } = await db.query<{ relation: string; root: string }>(`
      select format('%I.%I', n.nspname, c.relname) as relation, coalesce(pg_partition_root(c.oid), c.oid::regclass)::text as root
      from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'w' and c.relkind in ('r', 'p')`);
    const roots = new Map(relations.map((r) => [r.relation, r.root.replace(/^w\./, "")]));
    const changes = parseChanges(lines.map((l) => l.data)).filter((c) =>
      c.op === "TRUNCATE" ? c.relations!.some((r) => roots.has(r)) : roots.has(c.relation));
    const tables = await tableColumns(db);
    const columns = new Map(tables.map((t) => [t.table, t.columns]));
    const trail = await auditRows(db, tables);

    const problems: string[] = [];
    const walByTx = new Map<string, string[]>();
    for (const change of changes) {
      const key = String(change.xid);
      walByTx.set(key, [...(walByTx.get(key) ?? []), ...walRecords(change, roots, columns)]);
    }
    const trailByTx = new Map<string, string[]>();
    for (const row of trail) trailByTx.set(row.xid, [...(trailByTx.get(row.xid) ?? []), ...auditRecords(row, problems)]);
    // The WAL cannot tell a move from a DELETE plus an INSERT, but the workload never inserts an id again
    // once deleted: a DELETE and then an INSERT of the same id of a partitioned table in one transaction are
    // a move the trail split (rows come in id order per table).
    const deleted = new Set<string>();
    for (const row of trail.filter((r) => partitionOf[r.table])) {
      const id = `${row.xid}/${row.table}/${(row.old_row ?? row.new_row)?.id}`;
      if (row.action === "DELETE") deleted.add(id);
      if (row.action === "INSERT" && deleted.has(id)) problems.push(`tx ${id}: a row moved between partitions is recorded as a DELETE and an INSERT`);
    }

    for (const xid of new Set([...walByTx.keys(), ...trailByTx.keys()])) {
      const lines = difference(walByTx.get(xid) ?? [], trailByTx.get(xid) ?? []);
      if (lines.length) problems.push(`tx ${xid}:\n${lines.slice(0, 12).join("\n")}`);
    }
    const byXid = new Map(txs.map((t) => [String(t.xid), t]));
    for (const row of trail) {
      const tx = byXid.get(row.xid);
      if (!tx) {
        problems.push(`tx ${row.xid}: audit rows from a transaction the workload did not run`);
      } else if (!tx.committed) {
        problems.push(`tx ${row.xid}: audit row from a transaction that rolled back`);
      } else if (row.user_id !== tx.userId || row.request_id !== tx.requestId) {
        problems.push(`tx ${row.xid}: audit row with context ${row.user_id}/${row.request_id}, the transaction set ${tx.userId}/${tx.requestId}`);
      } else if (row.statement_number === null) {
        problems.push(`tx ${row.xid}: audit row without a statement number`);
      }
    }
    for (const tx of txs) {
      if (!tx.committed && walByTx.has(String(tx.xid))) problems.push(`tx ${tx.xid}: rolled back, yet decoded (the oracle's own check)`);
    }
    // Capture cleaned up after itself, and every capture trigger is still in place.
    const { rows: [left] } = await db.query<{ n: number }>("select count(*)::int as n from audit_private.capture_notes");
    if (left!.n) problems.push(`${left!.n} capture note(s) left behind`);
    const { rows: triggers } = await db.query(
      "select table_name, triggers_installed, triggers_active, triggers_expected from audit.tracked_tables where schema_name = 'w' and triggers_active <> triggers_expected");
    for (const t of triggers) problems.push(`capture triggers of w.${t.table_name}: ${t.triggers_active} of ${t.triggers_expected} in place and enabled`);
    return {
      problems: [...new Set(problems)],
      committed: txs.filter((t) => t.committed).length,
      aborted: txs.filter((t) => !t.committed).length,
      walChanges: changes.length,
      auditRows: trail.length,
    };
  } finally {
    await db.query("select pg_drop_replication_slot($1) from pg_replication_slots where slot_name = $1", [slot]).catch(() => undefined);
    await db.end();
  }
}
