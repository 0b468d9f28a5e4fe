// The read replica (DATABASE_READ_URL): a pool on it, and whether it may serve reads now — reachable and
// no more than DATABASE_READ_MAX_LAG_SECONDS behind the primary. Checked at most once a second.
import type pg from "pg";
import { createPool } from "./pool.ts";
import type { Logger } from "../log.ts";

export interface ReplicaState {
  usable: boolean;
  /** Seconds behind the primary (0 when it has replayed everything the primary had written); null: unreachable. */
  lagSeconds: number | null;
  /** Why it is not used, when it is not. */
  reason?: string;
}

const CHECK_EVERY_MS = 1000;

export class ReadReplica {
  readonly pool: pg.Pool;
  private readonly primary: pg.Pool;
  private readonly maxLagSeconds: number;
  private readonly logger: Logger;
  private checked: { at: number; state: Promise<ReplicaState> } | undefined;
  private lastUsable: boolean | undefined;

  constructor(readUrl: string, primary: pg.Pool, maxLagSeconds: number, logger: Logger) {
    // A short connect timeout: a replica that is down must not hold requests up before they fall back.
    this.pool = createPool(readUrl, { max: 10, connectionTimeoutMillis: 2000 });
    this.primary = primary;
    this.maxLagSeconds = maxLagSeconds;
    this.logger = logger;
  }

  /** The replica's state, from a check at most a second old. */
  state(): Promise<ReplicaState> {
    const now = Date.now();
    if (!this.checked || now - this.checked.at >= CHECK_EVERY_MS) this.checked = { at: now, state: this.check() };
    return this.checked.state;
  }

  private async check(): Promise<ReplicaState> {
    let state: ReplicaState;
    try {
      // The primary's position first: a replica that has replayed up to it is not behind at all, however
      // long ago the last write was (replay timestamps alone would call an idle pair "lagging").
      const { rows: [primary] } = await this.primary.query<{ lsn: string }>("select pg_current_wal_lsn()::text as lsn");
      const { rows: [replica] } = await this.pool.query<{ standby: boolean; caught_up: boolean | null; behind: number | null }>(
        `select pg_is_in_recovery() as standby,
                pg_last_wal_replay_lsn() >= $1::pg_lsn as caught_up,
                extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp())::float8 as behind`, [primary!.lsn]);
      const lag = !replica!.standby || replica!.caught_up ? 0 : replica!.behind ?? Infinity;
      state = lag <= this.maxLagSeconds
        ? { usable: true, lagSeconds: lag }
        : { usable: false, lagSeconds: lag, reason: `replica is ${Number.isFinite(lag) ? `${lag.toFixed(1)} s` : "an unknown time"} behind (DATABASE_READ_MAX_LAG_SECONDS=${this.maxLagSeconds})` };
    } catch (error) {
      state = { usable: false, lagSeconds: null, reason: `replica unreachable: ${(error as Error).message}` };
    }
    if (state.usable !== this.lastUsable) {
      if (state.usable) this.logger.info({ lagSeconds: state.lagSeconds }, "read replica in use for audit reads");
      else this.logger.warn({ reason: state.reason }, "read replica not used: audit reads go to the primary");
      this.lastUsable = state.usable;
    }
    return state;
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
