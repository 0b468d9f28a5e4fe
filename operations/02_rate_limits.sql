-- The API's request-rate counters, shared by every API instance (src/http/rateLimitStore.ts): requests to
-- any instance count together against RATE_LIMIT_PER_MINUTE. One row per client key and fixed window.
-- UNLOGGED: counters are worth no WAL, and a crash that empties the table only forgives one window.
-- (An unlogged table is not replicated, so a standby has none: only the primary's API writes it.)
create unlogged table if not exists audit_private.rate_limits (
  key      text        primary key,
  hits     integer     not null,
  reset_at timestamptz not null
);

comment on table audit_private.rate_limits is 'Request counters of the API''s rate limit, shared by all API instances (one row per client and window)';

revoke all on audit_private.rate_limits from public;

-- Counts one request of `client_key` and returns the window's total and when it ends. One statement, so
-- concurrent requests from several instances serialise on the row and none is lost; an expired window
-- starts again at 1.
create or replace function audit_private.rate_limit_hit(client_key text, window_ms integer, out hits integer, out reset_at timestamptz)
  language sql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
  insert into audit_private.rate_limits as r (key, hits, reset_at)
  values (client_key, 1, clock_timestamp() + make_interval(secs => window_ms / 1000.0))
  on conflict (key) do update
    set hits = case when r.reset_at <= clock_timestamp() then 1 else r.hits + 1 end,
        reset_at = case when r.reset_at <= clock_timestamp() then excluded.reset_at else r.reset_at end
  returning r.hits, r.reset_at
$$;

comment on function audit_private.rate_limit_hit(text, integer) is 'Counts one API request of a client in its current rate-limit window';

revoke all on function audit_private.rate_limit_hit(text, integer) from public;
