// express-rate-limit's Store, kept in PostgreSQL (operations/02_rate_limits.sql): every API instance counts
// into the same rows, so two instances behind a load balancer allow RATE_LIMIT_PER_MINUTE together, not each.
import type { ClientRateLimitInfo, Options, Store } from "express-rate-limit";
import type pg from "pg";

export class PostgresRateLimitStore implements Store {
  /** Keys are shared between instances: express-rate-limit must not assume it sees every hit itself. */
  localKeys = false;
  prefix: string;
  private windowMs = 60_000;
  private readonly pool: pg.Pool;
  private sweeper: NodeJS.Timeout | undefined;

  /** `prefix` separates limits: instances with the same prefix count together. */
  constructor(pool: pg.Pool, prefix: string) {
    this.pool = pool;
    this.prefix = prefix;
  }

  init(options: Options): void {
    this.windowMs = options.windowMs;
    // Windows that ended long ago are dead rows; one delete per window keeps the table small.
    this.sweeper = setInterval(() => {
      this.pool.query("delete from audit_private.rate_limits where reset_at < now() - interval '1 minute'").catch(() => {});
    }, Math.max(this.windowMs, 60_000));
    this.sweeper.unref();
  }

  async increment(key: string): Promise<ClientRateLimitInfo> {
    const { rows: [row] } = await this.pool.query<{ hits: number; reset_at: Date }>(
      "select hits, reset_at from audit_private.rate_limit_hit($1, $2)", [this.prefix + key, this.windowMs]);
    return { totalHits: row!.hits, resetTime: row!.reset_at };
  }

  async get(key: string): Promise<ClientRateLimitInfo | undefined> {
    const { rows: [row] } = await this.pool.query<{ hits: number; reset_at: Date }>(
      "select hits, reset_at from audit_private.rate_limits where key = $1 and reset_at > clock_timestamp()", [this.prefix + key]);
    return row ? { totalHits: row.hits, resetTime: row.reset_at } : undefined;
  }

  async decrement(key: string): Promise<void> {
    await this.pool.query("update audit_private.rate_limits set hits = greatest(hits - 1, 0) where key = $1", [this.prefix + key]);
  }

  async resetKey(key: string): Promise<void> {
    await this.pool.query("delete from audit_private.rate_limits where key = $1", [this.prefix + key]);
  }

  shutdown(): void {
    clearInterval(this.sweeper);
  }
}
