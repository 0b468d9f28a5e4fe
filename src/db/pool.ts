// Every connection pool the product, its tests and benchmarks open. A connection the server closes while it
// is idle (restart, failover, a dropped database) is replaced on next use and reported to `onLost`: never an
// unhandled 'error' event, which would end the process.
import pg from "pg";

export interface PoolOptions {
  max: number;
  connectionTimeoutMillis?: number;
  /** Told about each lost connection; default: nothing (the next query reconnects or fails by itself). */
  onLost?: (error: Error & { code?: string }) => void;
}

export function createPool(connectionString: string, options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({ connectionString, max: options.max, connectionTimeoutMillis: options.connectionTimeoutMillis });
  const lost = options.onLost ?? (() => {});
  pool.on("error", lost);
  pool.on("connect", (client) => client.on("error", lost));
  return pool;
}
