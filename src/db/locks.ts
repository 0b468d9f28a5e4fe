// Work that must never run twice at once, whichever process (worker, CLI) or instance starts it.
import type pg from "pg";

/**
 * Sealing and archiving change the trail's bookkeeping (audit.seals, audit.archives, the archive files) in
 * steps: two runs at once would write the same files. They share one lock, so an archive run (which seals
 * first) and a seal run never interleave either.
 */
export const MAINTENANCE_LOCK = "cartop-audit:seal-and-archive";

/**
 * Runs `work` while holding a session-level advisory lock on a connection of its own, waiting for another
 * holder to finish. The lock is released when the work ends, or by the server if this process dies.
 */
export async function exclusively<T>(pool: pg.Pool, lockName: string, work: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("select pg_advisory_lock(hashtext($1))", [lockName]);
    try {
      return await work();
    } finally {
      await client.query("select pg_advisory_unlock(hashtext($1))", [lockName]).catch((error: Error) => {
        broken = error; // a connection that could not unlock is discarded, which releases the lock
      });
    }
  } finally {
    client.release(broken);
  }
}
