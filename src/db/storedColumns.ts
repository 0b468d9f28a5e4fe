// The trail's stored columns (audit_private.log_entries), read from the catalog. Archive files and seal digests
// each fix their own column list per format version; both check it against this before they write, so a column
// added to storage can never silently be left out of a file (lost on restore) or a digest (tampering unseen).
import type pg from "pg";

export async function storedColumns(db: pg.Pool | pg.PoolClient): Promise<string[]> {
  const { rows } = await db.query<{ names: string[] }>(
    `select array_agg(attname::text order by attnum) as names from pg_attribute
      where attrelid = 'audit_private.log_entries'::regclass and attnum > 0 and not attisdropped`);
  return rows[0]!.names;
}

/** Why `format` (what it writes, in order) does not cover the stored columns `stored`, or null when it does. */
export function columnsMismatch(stored: readonly string[], format: readonly string[], what: string): string | null {
  if (stored.join(",") === format.join(",")) return null;
  const missing = stored.filter((c) => !format.includes(c));
  const gone = format.filter((c) => !stored.includes(c));
  return `audit_private.log_entries has columns ${stored.join(", ")}; ${what} has ${format.join(", ")}` +
    (missing.length ? ` (it would leave out ${missing.join(", ")})` : "") + (gone.length ? ` (no column ${gone.join(", ")} any more)` : "");
}
