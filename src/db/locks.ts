// Work that must never run twice at once, whichever process (worker, CLI) or instance starts it.
import type pg from "pg";

/**
 * Sealing and archiving change the trail's bookkeeping (audit.seals, audit.archives, the archive files) in
 * steps: two runs at once would write the same files. They share one lock, so an archive run (which seals
 * first) and a seal run never interleave either. It is a lock on a table only the trail's owner may lock
 * (operations/01_task_runs.sql), so no other role can take it and stall them, as it could an advisory key.
 */
export const MAINTENANCE_LOCK = "audit_private.seal_and_archive_runs";

/**
 * Runs `work` while a connection of its own holds `lockTable` locked (waiting for another holder to finish).
 * The lock lives in that connection's transaction, which does nothing else; it ends with the work, or with
 * the connection if this process dies.
 */
export async function exclusively<T>(pool: pg.Pool, lockTable: string, work: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    try {
      await client.query("begin");
      // Self-conflicting, and conflicting with nothing readers or writers of the trail take.
      await client.query(`lock table ${lockTable} in share update exclusive mode`);
    } catch (error) {
      broken = error as Error; // never hand a connection in a failed transaction back to the pool
      throw error;
    }
    try {
      return await work();
    } finally {
      await client.query("commit").catch((error: Error) => {
        broken = error; // a connection that could not end its transaction is discarded, which releases the lock
      });
    }
  } finally {
    client.release(broken);
  }
}
