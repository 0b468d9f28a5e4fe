-- Monthly partitions: naming, creation (one month, or the current month and N ahead), and status.
-- Months are calendar months in UTC, whatever the server's TimeZone: the partition for 2026-11 holds
-- created_at in [2026-11-01 00:00+00, 2026-12-01 00:00+00).

-- Held (SHARE ROW EXCLUSIVE, which conflicts with itself) while partitions are created; holds no rows.
create table if not exists audit_private.partition_maintenance ();
revoke all on audit_private.partition_maintenance from public;
comment on table audit_private.partition_maintenance is 'Lock only: serialises partition creation (no rows)';

-- How many months after the current one are kept premade: the last months_ahead given to ensure_partitions
-- (the worker passes AUDIT_PREMAKE_MONTHS every hour). audit.coverage checks this horizon, so the view, doctor,
-- the worker and /metrics agree on it.
create table if not exists audit_private.partition_horizon (
  singleton    boolean primary key default true check (singleton),
  months_ahead integer not null check (months_ahead >= 0)
);
insert into audit_private.partition_horizon (months_ahead) values (3) on conflict do nothing;
revoke all on audit_private.partition_horizon from public;
comment on table audit_private.partition_horizon is 'One row: the premake horizon (months after the current one) audit.ensure_partitions last kept';

create or replace function audit_private.partition_name(month date)
  returns text
  language sql
  immutable
  parallel safe
as $$
  select 'log_' || to_char(month, 'YYYY_MM')
$$;

comment on function audit_private.partition_name(date) is 'Name (in schema audit) of the partition holding the month of the given date';

-- The first instant of a month, in UTC, as timestamptz.
create or replace function audit_private.month_start(month date)
  returns timestamptz
  language sql
  immutable
  parallel safe
as $$
  select (date_trunc('month', month)::timestamp) at time zone 'UTC'
$$;

-- The first instant of the following month, in UTC: the exclusive upper bound of a month's partition.
create or replace function audit_private.month_end(month date)
  returns timestamptz
  language sql
  immutable
  parallel safe
as $$
  select (date_trunc('month', month) + interval '1 month')::timestamp at time zone 'UTC'
$$;

-- The current month in UTC.
create or replace function audit_private.current_month()
  returns date
  language sql
  stable
as $$
  select date_trunc('month', now() at time zone 'UTC')::date
$$;

-- Whether a month's partition exists, and whether it is attached to the audit table.
create or replace function audit_private.partition_state(month date, out present boolean, out attached boolean)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select c.oid is not null,
         exists (select from pg_inherits i where i.inhrelid = c.oid and i.inhparent = 'audit_private.log_entries'::regclass)
  from (select) as dummy
  left join pg_class c on c.relname = audit_private.partition_name(month) and c.relnamespace = 'audit'::regnamespace
$$;

-- Creates the partition for one month if it does not exist; returns its name.
-- Concurrent callers are serialised by a lock on audit_private.partition_maintenance, so two workers racing
-- both succeed. (Not an advisory lock: any role can take one of those and stall partition upkeep; locking
-- this table takes privileges only the owner has.)
-- If the default partition already holds rows of that month, they are moved into the new partition in
-- the same transaction: writers wait on the lock for that moment instead of failing, and no row is lost.
create or replace function audit.create_partition(month date)
  returns text
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  part_name text := audit_private.partition_name(month);
  range_from timestamptz := audit_private.month_start(month);
  range_to timestamptz := audit_private.month_end(month);
begin
  if month is null then
    raise exception 'audit.create_partition: month must not be null' using errcode = 'null_value_not_allowed';
  end if;
  lock table audit_private.partition_maintenance in share row exclusive mode;
  -- A fresh catalog query (not to_regclass, whose cache may predate the lock) sees a racing creator's commit.
  if (audit_private.partition_state(month)).present then
    return part_name;
  end if;

  if exists (select from audit.log_default where created_at >= range_from and created_at < range_to) then
    perform audit_private.create_partition_moving_default_rows(part_name, range_from, range_to);
  else
    execute format(
      'create table audit.%I partition of audit_private.log_entries for values from (%L) to (%L)',
      part_name, range_from, range_to);
  end if;
  perform audit_private.protect_partition(format('audit.%I', part_name)::regclass);
  return part_name;
end
$$;

comment on function audit.create_partition(date) is
  'Creates the monthly audit partition holding the given date (idempotent; moves matching rows out of the default partition)';

-- A partition cannot be attached while the default partition holds rows of its range, and audit rows may
-- never be deleted. So: detach the default, create the month, route the default's rows back through the
-- parent (each lands in its month or in a fresh default), then drop the detached copy. All in one
-- transaction under an exclusive lock on the parent.
create or replace function audit_private.create_partition_moving_default_rows(part_name text, range_from timestamptz, range_to timestamptz)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  moved bigint;
begin
  lock table audit_private.log_entries in access exclusive mode;
  alter table audit_private.log_entries detach partition audit.log_default;
  alter table audit.log_default rename to log_default_moving;
  create table audit.log_default partition of audit_private.log_entries default;
  perform audit_private.protect_partition('audit.log_default'::regclass);
  execute format(
    'create table audit.%I partition of audit_private.log_entries for values from (%L) to (%L)',
    part_name, range_from, range_to);
  insert into audit_private.log_entries select * from audit.log_default_moving;
  get diagnostics moved = row_count;
  drop table audit.log_default_moving;
  raise notice 'audit: moved % row(s) out of audit.log_default while creating audit.%', moved, part_name;
end
$$;

-- Creates the current month's partition and `months_ahead` months after it; returns the names it created.
create or replace function audit.ensure_partitions(months_ahead integer default 3)
  returns setof text
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  first_month date := audit_private.current_month();
  i integer;
  month date;
  created text;
  prior_lock_timeout constant text := current_setting('lock_timeout');
  lock_wait constant text := '2s';
begin
  if months_ahead is null or months_ahead < 0 then
    raise exception 'audit.ensure_partitions: months_ahead must be >= 0, got %', months_ahead
      using errcode = '22023', hint = 'AUDIT_PREMAKE_MONTHS is the number of months premade after the current one';
  end if;
  -- The same lock as create_partition: a racing caller waits here, then finds the months made.
  lock table audit_private.partition_maintenance in share row exclusive mode;
  update audit_private.partition_horizon h set months_ahead = $1 where h.months_ahead <> $1;
  for i in 0 .. months_ahead loop
    month := (first_month + make_interval(months => i))::date;
    if not (audit_private.partition_state(month)).present then
      -- Adding a partition locks the whole trail exclusively, so it waits for every open transaction that read
      -- or wrote the trail, and every writer queues behind it: an auditor's idle transaction would stall all
      -- audited writes. Give up after lock_wait instead (the caller's setting is put back); the worker retries.
      begin
        perform set_config('lock_timeout', lock_wait, true);
        created := audit.create_partition(month);
        perform set_config('lock_timeout', prior_lock_timeout, true);
      exception when lock_not_available then
        raise exception 'audit.ensure_partitions: could not add the partition for % within %: another transaction holds a lock on the audit trail', to_char(month, 'YYYY-MM'), lock_wait
          using errcode = 'lock_not_available',
                hint = 'Writers waited at most that long. Run it again, or find the transaction in pg_stat_activity (often one left idle in transaction); the worker retries by itself.';
      end;
      return next created;
    end if;
  end loop;
end
$$;

comment on function audit.ensure_partitions(integer) is
  'Creates the current month''s audit partition and months_ahead months after it, if missing (idempotent, safe to race)';

-- One row per partition of the audit table: what it covers, how big it is.
create or replace view audit.partitions as
select
  c.relname::text                                                        as partition_name,
  nullif(substring(pg_get_expr(c.relpartbound, c.oid) from $re$FROM \('([^']+)'\)$re$), '')::timestamptz as range_start,
  nullif(substring(pg_get_expr(c.relpartbound, c.oid) from $re$TO \('([^']+)'\)$re$), '')::timestamptz   as range_end,
  coalesce(s.n_live_tup, 0)::bigint                                      as estimated_rows,
  pg_total_relation_size(c.oid)                                          as total_bytes,
  pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'                         as is_default
from pg_inherits i
join pg_class c on c.oid = i.inhrelid
left join pg_stat_user_tables s on s.relid = c.oid
where i.inhparent = 'audit_private.log_entries'::regclass
order by is_default, range_start;

comment on view audit.partitions is 'Partitions of the audit trail: range (UTC months), estimated rows, bytes, default or not';

-- Rows waiting in the default partition, by month (exact counts). Should be empty; see the runbook.
-- Security definer (as the owner) so auditors' coverage checks can count rows they may not read; it runs only
-- built-in code over the trail's own columns.
create or replace function audit.default_partition_months()
  returns table (month date, rows bigint)
  language sql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
  select date_trunc('month', created_at at time zone 'UTC')::date, count(*)
  from audit.log_default
  group by 1
  order by 1
$$;

comment on function audit.default_partition_months() is 'Months that have rows in the default partition, with exact counts (monitoring: should return nothing)';
revoke all on function audit.default_partition_months() from public;
grant execute on function audit.default_partition_months() to cartop_auditor;

-- Moves every row of the default partition into its monthly partition (created as needed); returns the
-- partitions it created.
create or replace function audit.drain_default_partition()
  returns setof text
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  waiting date;
begin
  for waiting in select month from audit.default_partition_months() loop
    return next audit.create_partition(waiting);
  end loop;
end
$$;

comment on function audit.drain_default_partition() is 'Moves rows out of audit.log_default into monthly partitions, creating them';

-- A fresh install has the current month and the next three; the worker keeps them ahead from then on.
select audit.ensure_partitions(3);
