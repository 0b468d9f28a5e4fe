--! Previous: sha1:a2d117e478d445fa73badc1e0149ab3550fa755b
--! Hash: sha1:da00f329ccc08e7c398e4c86bf7591b51347e223
--! Message: Capture compares built-in values by their bytes; reads build each value inline, row_as_of only the state it returns, and entity_history and row_as_of keep their plans (PL/pgSQL)

-- source: base/01_schemas_and_roles.sql
-- Schemas and roles. Idempotent: every source file is replayed whole by each source migration.
--
-- audit          the public contract: the audit.log view, tracking API, partition API, context setter
-- audit_private  storage and machinery that users never call directly

create schema if not exists audit;
create schema if not exists audit_private;

comment on schema audit is 'cartop-audit: the audit trail and its API';
comment on schema audit_private is 'cartop-audit internals: storage and capture machinery (not an API)';

-- Roles are cluster-wide, so they may already exist (another database, an earlier install).
do $$
declare
  role_name text;
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_authenticator') then
    create role cartop_authenticator login noinherit;
  end if;
  foreach role_name in array array['cartop_anonymous', 'cartop_user', 'cartop_auditor', 'cartop_capture'] loop
    if not exists (select from pg_catalog.pg_roles where rolname = role_name) then
      execute format('create role %I nologin', role_name);
    end if;
  end loop;
end
$$;

-- cartop_capture owns the generated capture functions (security definer): it may append audit rows, nothing
-- else. Never a superuser, never granted to a login (see SECURITY.md).
alter role cartop_capture nologin nosuperuser nocreatedb nocreaterole noinherit nobypassrls;

-- Reads the plaintext of encrypted columns (triggers/03_sensitive.sql): auditors, granted once when the role is
-- made, so an operator who revokes it is not overruled by the next deploy.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_sensitive_reader') then
    create role cartop_sensitive_reader nologin;
    grant cartop_sensitive_reader to cartop_auditor;
  end if;
end
$$;

-- pgcrypto: the keys and ciphers of encrypted columns (and the example application's password hashes).
create extension if not exists pgcrypto;

-- The API connects as cartop_authenticator and switches (SET ROLE) to the role its JWT selects.
grant cartop_anonymous, cartop_user, cartop_auditor to cartop_authenticator;

-- Nobody but the owner creates objects in these schemas; readers get usage explicitly.
revoke all on schema audit, audit_private from public;
grant usage on schema audit to cartop_anonymous, cartop_user, cartop_auditor;
grant usage on schema audit_private to cartop_user, cartop_auditor, cartop_capture;

-- source: partitions/01_log_storage.sql
-- Where audit rows are stored: one range-partitioned table, one partition per calendar month (UTC).
--
-- Compact by design: an INSERT keeps the new row, a DELETE the old row, and an UPDATE the old row plus
-- only the new values of the columns that changed (`delta`). The view audit.log rebuilds old_value,
-- new_value and changes from these, so readers see the full contract while each UPDATE stores about
-- half of what "old + new + diff" would.

-- Ids come from a sequence with a session cache: increasing within a transaction, cheap for bulk writes.
create sequence if not exists audit_private.log_id_seq as bigint cache 64;

create table if not exists audit_private.log_entries (
  id               bigint      not null default nextval('audit_private.log_id_seq'),
  created_at       timestamptz not null,
  tx_id            bigint      not null,
  table_id         integer     not null,
  action           "char"      not null,
  entity_id        text,
  old_entity_id    text,
  row_data         jsonb,
  delta            jsonb,
  user_id          text,
  user_email       text,
  ip_address       inet,
  user_agent       text,
  request_id       text,
  metadata         jsonb,
  db_user          text        not null,
  application_name text
) partition by range (created_at);

-- No CHECK constraints: only the generated capture writes here (cartop_capture), and PostgreSQL re-reads and
-- re-plans every check of a partition each time an INSERT runs: the three that checked the row's shape
-- (action known, row present, delta only on UPDATE) cost ~107k instructions of a ~1,170k single-row UPDATE
-- (docs/design/capture.md). The shape is asserted by the capture tests instead (test/oracle.test.ts).
alter table audit_private.log_entries drop constraint if exists log_entries_action_known;
alter table audit_private.log_entries drop constraint if exists log_entries_row_present;
alter table audit_private.log_entries drop constraint if exists log_entries_delta_only_on_update;

-- Added after the first release, so fresh and upgraded databases have the same column order.
alter table audit_private.log_entries add column if not exists statement_number integer;

alter sequence audit_private.log_id_seq owned by audit_private.log_entries.id;

comment on table audit_private.log_entries is
  'Audit rows as stored (compact). Read them through the audit.log view.';
comment on column audit_private.log_entries.table_id is 'audit_private.tables.id of the audited table (not an OID: survives dump/restore)';
comment on column audit_private.log_entries.action is 'I = INSERT, U = UPDATE, D = DELETE, T = TRUNCATE';
comment on column audit_private.log_entries.row_data is 'INSERT: the new row; UPDATE and DELETE: the old row (excluded columns removed, masked columns replaced)';
comment on column audit_private.log_entries.delta is 'UPDATE only: the new values of the columns that changed';
comment on column audit_private.log_entries.statement_number is 'Which statement of its transaction wrote the row (1, 2, …; see audit_private.statement_number_statements); null for rows written before it existed';
comment on column audit_private.log_entries.old_entity_id is 'UPDATE that changed the primary key only: the entity id before the change';

-- Entity history: all rows of one entity, in order. entity_id leads: it is what every entity query knows
-- (the table id may arrive through a join the planner cannot turn into an index condition).
create index if not exists log_entries_entity_idx on audit_private.log_entries (entity_id, table_id, created_at);
-- Primary-key changes, for point-in-time reads of the old key (rare: costs nothing for other rows).
create index if not exists log_entries_old_entity_idx on audit_private.log_entries (old_entity_id, table_id, created_at) where old_entity_id is not null;
-- TRUNCATEs of a table, for point-in-time reads, are found through the entity index: they are the only rows
-- without an entity id (row_as_of asks for entity_id is null). A partial index of their own cost every INSERT
-- ~7k instructions to evaluate its predicate.
drop index if exists audit_private.log_entries_truncate_idx;
-- User activity: only rows written with a user in context (bulk SQL without context costs nothing here).
create index if not exists log_entries_user_idx on audit_private.log_entries (user_id, created_at) where user_id is not null;
-- Time ranges inside a month: BRIN is a few pages per month and costs almost nothing on writes.
create index if not exists log_entries_created_at_brin on audit_private.log_entries using brin (created_at);

-- Rows outside the premade months land here instead of failing the business write.
-- audit.create_partition moves them into their month once it exists.
create table if not exists audit.log_default partition of audit_private.log_entries default;
comment on table audit.log_default is
  'Audit rows whose month had no partition yet. Should stay empty: audit.ensure_partitions moves rows out.';

-- source: partitions/02_immutability.sql
-- The audit trail is append-only: no role, the owner included, may UPDATE, DELETE or TRUNCATE it.
-- Old months leave only as whole partitions (detach/drop) through the archive path.
-- Statement-level guards refuse the statement even when it would touch no row. Statement triggers are
-- not inherited by partitions, so every partition gets its own (audit_private.protect_partition).

create or replace function audit_private.tg__append_only()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'audit trail is append-only: % on %.% is not allowed', tg_op, tg_table_schema, tg_table_name
    using errcode = 'insufficient_privilege',
          hint = 'Old months leave the database as whole partitions through the archive path.';
end
$$;

create or replace function audit_private.protect_partition(target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select from pg_trigger where tgrelid = target and tgname = '_100_append_only') then
    execute format('drop trigger _100_append_only on %s', target);
  end if;
  execute format(
    'create trigger _100_append_only before update or delete or truncate on %s
       for each statement execute function audit_private.tg__append_only()', target);
end
$$;

select audit_private.protect_partition('audit_private.log_entries'::regclass);
select audit_private.protect_partition(inhrelid::regclass)
  from pg_inherits where inhparent = 'audit_private.log_entries'::regclass;

-- Privileges: nobody gets write access to the storage; capture writes through security definer functions.
revoke all on audit_private.log_entries from public;
revoke all on audit.log_default from public;

-- source: partitions/03_partition_management.sql
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

-- source: partitions/04_archives.sql
-- Archiving old months: a recorded state machine per month, driven by the worker or the CLI
-- (src/archive/). The database side: the manifest table and the helpers that touch partitions.
--
--   exporting → exported → verified → detached → archived      (restored: brought back from its file)
--
-- Each step is recorded before the next begins, so a job killed anywhere and run again resumes where it
-- stopped; a step that finds its work already done (file written, partition detached or gone) records it.

create table if not exists audit.archives (
  month            date        primary key,
  partition_name   text        not null,
  status           text        not null default 'exporting',
  file_name        text,
  manifest_name    text,
  rows             bigint,
  first_created_at timestamptz,
  last_created_at  timestamptz,
  sha256           text,
  bytes            bigint,
  schema_version   integer     not null default 1,
  started_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  archived_at      timestamptz,
  restored_at      timestamptz,
  last_error       text,
  constraint archives_month_is_first_day check (month = date_trunc('month', month)::date),
  constraint archives_status_known check (status in ('exporting', 'exported', 'verified', 'detached', 'archived', 'restored')),
  constraint archives_exported_has_manifest check (status = 'exporting' or (rows is not null and sha256 is not null and file_name is not null))
);

-- Added with archives in object storage and Parquet copies (migrations replay this file: idempotent).
alter table audit.archives add column if not exists location text;
alter table audit.archives add column if not exists parquet_file text;
alter table audit.archives add column if not exists parquet_sha256 text;
alter table audit.archives add column if not exists parquet_bytes bigint;

comment on table audit.archives is 'One row per archived (or restored) month of the audit trail: the state of its archive and its manifest';
comment on column audit.archives.status is 'exporting → exported → verified → detached → archived; restored once brought back';
comment on column audit.archives.sha256 is 'SHA-256 of the compressed archive file';
comment on column audit.archives.rows is 'Audit rows in the month (and in the file)';
comment on column audit.archives.location is 'The archive store the month was written to (AUDIT_ARCHIVE_URL at export time)';
comment on column audit.archives.parquet_sha256 is 'SHA-256 of the month''s Parquet copy (parquet/month=YYYY-MM/…), when one was written';

grant select on audit.archives to cartop_auditor;

-- Months whose partition exists and that end before the first day of the month `older_than_months`
-- before the current (UTC) month: with 12 in 2026-11, every month before 2025-11.
create or replace function audit.archivable_months(older_than_months integer)
  returns setof date
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select range_start::date
  from audit.partitions
  where not is_default
    and older_than_months >= 0
    and range_end <= audit_private.month_start((audit_private.current_month() - make_interval(months => older_than_months))::date)
  order by range_start
$$;

comment on function audit.archivable_months(integer) is 'Months (first days) whose partitions are old enough to archive';

-- Detaches an archived month's partition after checking it still holds exactly the rows that were
-- exported (so nothing written since the export can be lost). Plain DETACH, not CONCURRENTLY: the
-- default partition forbids the concurrent form. The caller sets a short lock_timeout and retries, so
-- writers never queue behind a long wait. Returns false if the partition was already detached or gone.
create or replace function audit_private.detach_archived_partition(month date, expected_rows bigint)
  returns boolean
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  state record;
  actual bigint;
begin
  select * into state from audit_private.partition_state(month);
  if not state.present or not state.attached then
    return false;
  end if;
  execute format('alter table audit_private.log_entries detach partition audit.%I', audit_private.partition_name(month));
  -- Detached now: no writer can add rows, so the count is final.
  execute format('select count(*) from audit.%I', audit_private.partition_name(month)) into actual;
  if actual <> expected_rows then
    raise exception 'audit: partition audit.% holds % rows but its archive has %; export it again',
      audit_private.partition_name(month), actual, expected_rows
      using errcode = 'data_exception';
  end if;
  return true;
end
$$;

-- Drops a detached archived partition. Refuses an attached one: rows leave only through the archive path.
create or replace function audit_private.drop_archived_partition(month date)
  returns boolean
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  state record;
begin
  select * into state from audit_private.partition_state(month);
  if not state.present then
    return false;
  end if;
  if state.attached then
    raise exception 'audit: partition audit.% is still attached; archive it before dropping', audit_private.partition_name(month)
      using errcode = 'object_not_in_prerequisite_state';
  end if;
  execute format('drop table audit.%I', audit_private.partition_name(month));
  return true;
end
$$;

-- Restoring a month fast: load into a standalone table without indexes, then attach it. ATTACH builds
-- the partition's indexes in one sort each (much cheaper than maintaining them row by row) and, thanks to
-- the CHECK constraint matching the range, skips the validation scan. Only takes SHARE UPDATE EXCLUSIVE
-- on the audit table, so writers are not blocked. Returns the table name to COPY into.
create or replace function audit_private.create_restore_table(month date)
  returns text
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  part_name text := audit_private.partition_name(month);
begin
  if month is null or (audit_private.partition_state(month)).present then
    raise exception 'audit: cannot create a restore table for %: audit.% exists', month, part_name
      using errcode = 'duplicate_table';
  end if;
  execute format('create table audit.%I (like audit_private.log_entries including defaults including constraints)', part_name);
  execute format('alter table audit.%I add constraint restore_range check (created_at >= %L and created_at < %L)',
    part_name, audit_private.month_start(month), audit_private.month_end(month));
  return part_name;
end
$$;

create or replace function audit_private.attach_restore_table(month date)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  part_name text := audit_private.partition_name(month);
begin
  execute format('alter table audit_private.log_entries attach partition audit.%I for values from (%L) to (%L)',
    part_name, audit_private.month_start(month), audit_private.month_end(month));
  execute format('alter table audit.%I drop constraint restore_range', part_name);
  perform audit_private.protect_partition(format('audit.%I', part_name)::regclass);
end
$$;

-- source: triggers/01_context.sql
-- Who made a change travels in transaction-local settings (set_config(name, value, true)), so it never
-- outlives the transaction and survives connection pools:
--   audit.user_id, audit.user_email, audit.ip_address, audit.user_agent, audit.request_id, audit.metadata
-- A value that cannot be parsed (an ip_address that is not an inet, a metadata that is not a JSON object)
-- never fails the business write and is never dropped: the column stays null and the raw text is kept in
-- metadata under "invalid_context", e.g. {"invalid_context": {"audit.ip_address": "not-an-ip"}}.

do $$
begin
  if not exists (select from pg_type where typname = 'context' and typnamespace = 'audit_private'::regnamespace) then
    create type audit_private.context as (
      user_id          text,
      user_email       text,
      ip_address       inet,
      user_agent       text,
      request_id       text,
      metadata         jsonb,
      db_user          text,
      application_name text
    );
  end if;
end
$$;

-- A setting as text, or null when unset. After a transaction-local set, a setting reads '' (not null)
-- for the rest of the session, hence nullif.
create or replace function audit_private.setting(name text)
  returns text
  language sql
  stable
  parallel safe
as $$
  select nullif(current_setting(name, true), '')
$$;

-- The marker that says ip_address and metadata were checked when they were set (by audit.set_context or the
-- API): the text "<length of ip>:ip|metadata" (the length keeps two different pairs from reading the same; no
-- hash: md5 is refused on FIPS servers). Capture then casts them without a
-- subtransaction. The marker is not a trust boundary: a session that forges it for values that do not parse
-- only makes its own writes fail.
-- Stable like concat, so that PostgreSQL inlines it into capture (an immutable SQL function over a stable one is
-- called instead, and its first call in each transaction plans it: ~27k instructions per write).
create or replace function audit_private.context_checked_marker(raw_ip text, raw_metadata text)
  returns text
  language sql
  stable
  parallel safe
as $$
  select pg_catalog.concat(pg_catalog.length(raw_ip), ':', raw_ip, '|', raw_metadata)
$$;

-- ip_address and metadata as typed values, for settings nobody checked (set with set_config): the casts run in
-- a subtransaction (BEGIN … EXCEPTION), and what does not parse goes to `invalid`, never failing the write.
create or replace function audit_private.checked_context(raw_ip text, raw_metadata text,
                                                         out ip_address inet, out metadata jsonb, out invalid jsonb)
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
begin
  invalid := '{}';
  if raw_ip is not null then
    begin
      ip_address := raw_ip::inet;
    exception when others then
      invalid := invalid || jsonb_build_object('audit.ip_address', raw_ip);
    end;
  end if;
  if raw_metadata is not null then
    begin
      metadata := raw_metadata::jsonb;
    exception when others then
      invalid := invalid || jsonb_build_object('audit.metadata', raw_metadata);
    end;
  end if;
end
$$;

-- The role acting now: the one the session switched to (SET ROLE; the API does per request), else the login.
-- Inside a security definer function current_user is the definer; these two still name the caller. (A session
-- sets `role` only to a role it is a member of.) An inlinable SQL function: free inside capture.
create or replace function audit_private.acting_role()
  returns text
  language sql
  stable
  parallel safe
as $$
  select coalesce(nullif(pg_catalog.current_setting('role'), 'none'), session_user::text)
$$;

-- The context of the current statement, as PL/pgSQL that every capture function inlines (declarations, then
-- statements): they leave _user_id, _user_email, _ip_address, _user_agent, _request_id, _metadata, _db_user and
-- _application_name set. Inlined, not called: a call to a PL/pgSQL function returning the context cost ~160k
-- instructions per single-row UPDATE, the inlined assignments ~80k (docs/design/capture.md).
create or replace function audit_private.context_declarations()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select $code$
      _user_id text := nullif(current_setting('audit.user_id', true), '');
      _user_email text := nullif(current_setting('audit.user_email', true), '');
      _user_agent text := nullif(current_setting('audit.user_agent', true), '');
      _request_id text := nullif(current_setting('audit.request_id', true), '');
      _db_user text := audit_private.acting_role();
      _application_name text := nullif(current_setting('application_name'), '');
      _raw_ip text := nullif(current_setting('audit.ip_address', true), '');
      _raw_metadata text := nullif(current_setting('audit.metadata', true), '');
      _ip_address inet;
      _metadata jsonb;
      _invalid jsonb;$code$
$$;

create or replace function audit_private.context_statements()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select $code$
      if _raw_ip is not null or _raw_metadata is not null then
        if nullif(current_setting('audit_private.context_checked', true), '') = audit_private.context_checked_marker(_raw_ip, _raw_metadata) then
          -- Checked when set (every API request, every set_context): plain casts, no subtransaction.
          _ip_address := _raw_ip::inet;
          _metadata := _raw_metadata::jsonb;
          _invalid := '{}';
        else
          select c.ip_address, c.metadata, c.invalid into _ip_address, _metadata, _invalid
          from audit_private.checked_context(_raw_ip, _raw_metadata) c;
        end if;
        if jsonb_typeof(_metadata) <> 'object' then
          _metadata := null;
          _invalid := _invalid || jsonb_build_object('audit.metadata', _raw_metadata);
        end if;
        if _invalid <> '{}' then
          _metadata := coalesce(_metadata, '{}') || jsonb_build_object('invalid_context', _invalid);
        end if;
      end if;$code$
$$;

-- The same context as a value, for code that is not generated (undo's metadata).
do $$
begin
  execute format($create$
    create or replace function audit_private.current_context()
      returns audit_private.context
      language plpgsql
      stable
      set search_path = pg_catalog, pg_temp
    as %L
  $create$, 'declare' || audit_private.context_declarations() || '
    begin' || audit_private.context_statements() || '
      return row(_user_id, _user_email, _ip_address, _user_agent, _request_id, _metadata, _db_user, _application_name)::audit_private.context;
    end');
end
$$;

-- STATEMENT GROUPING (begin). Which statement of its transaction wrote an audit row: 1, 2, 3… in the order
-- their capture ran, so one bulk UPDATE is one unit to read or revert. Every capture trigger calls it once
-- per statement with tg_relid. One SQL statement can fire several statement triggers on a table — MERGE
-- (UPDATE, INSERT, DELETE), INSERT … ON CONFLICT DO UPDATE (INSERT, UPDATE) — and they must share a
-- number; statements run one after another inside a function share statement_timestamp() and must not.
-- The triggers of one statement fire back to back after all its rows are written, so they see the same
-- key: statement start, table, and the transaction's count of the table's blocks read
-- (pg_stat_get_xact_blocks_fetched), which any statement that writes rows moves before its triggers fire.
-- A new number starts when the key changes. State: one transaction-local setting "key|n" (a rolled-back
-- savepoint restores it). Measured (callgrind, single-row UPDATE, one per transaction): ~51k instructions
-- per audited statement of ~600k; a version that also tracked the events seen cost ~64k.
-- Residual: partitioned tables (the parent has no block counts) and track_counts = off: statements on the
-- same table inside one function call share a number. An application AFTER STATEMENT trigger that reads
-- the table between the triggers of one MERGE splits it in two. The setting is not a trust boundary: a
-- session that forges it only renumbers its own statements.
-- Inlined into every capture function like the context (a call cost ~59k instructions, inlined ~18k): sets
-- _stmt from tg_relid.
create or replace function audit_private.statement_number_declarations()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select $code$
      _stmt integer;
      _stmt_key text := concat(statement_timestamp(), '/', tg_relid, '/', pg_stat_get_xact_blocks_fetched(tg_relid));
      _stmt_state text := current_setting('audit_private.statement', true);$code$
$$;

create or replace function audit_private.statement_number_statements()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select $code$
      if split_part(_stmt_state, '|', 1) = _stmt_key then
        _stmt := split_part(_stmt_state, '|', 2)::integer;
      else
        _stmt := coalesce(nullif(split_part(_stmt_state, '|', 2), ''), '0')::integer + 1;
        _stmt_state := set_config('audit_private.statement', _stmt_key || '|' || _stmt, true);
      end if;$code$
$$;

-- Capture inlines the text above; the function of earlier versions has no caller left.
drop function if exists audit_private.statement_number(oid);
-- STATEMENT GROUPING (end)

-- Sets the context for the rest of the current transaction. Only the arguments given (not null) are set,
-- so several calls can add to one context.
create or replace function audit.set_context(
  user_id text default null,
  user_email text default null,
  ip_address inet default null,
  user_agent text default null,
  request_id text default null,
  metadata jsonb default null
)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  prior_ip text := audit_private.setting('audit.ip_address');
  prior_metadata text := audit_private.setting('audit.metadata');
  -- Whether what was set before this call was checked (by an earlier call or the API), or nothing was.
  prior_checked boolean := (prior_ip is null and prior_metadata is null)
    or audit_private.setting('audit_private.context_checked') = audit_private.context_checked_marker(prior_ip, prior_metadata);
begin
  if metadata is not null and jsonb_typeof(metadata) <> 'object' then
    raise exception 'audit.set_context: metadata must be a JSON object, got %', jsonb_typeof(metadata)
      using errcode = 'invalid_parameter_value';
  end if;
  if user_id is not null then perform set_config('audit.user_id', user_id, true); end if;
  if user_email is not null then perform set_config('audit.user_email', user_email, true); end if;
  if ip_address is not null then perform set_config('audit.ip_address', ip_address::text, true); end if;
  if user_agent is not null then perform set_config('audit.user_agent', user_agent, true); end if;
  if request_id is not null then perform set_config('audit.request_id', request_id, true); end if;
  if metadata is not null then perform set_config('audit.metadata', metadata::text, true); end if;
  -- Values given here are typed, so checked; a value set before by set_config and kept is checked only if
  -- it was then. When both are, capture casts them without a subtransaction (current_context).
  if (ip_address is not null or prior_ip is null or prior_checked)
     and (metadata is not null or prior_metadata is null or prior_checked) then
    perform set_config('audit_private.context_checked', audit_private.context_checked_marker(
      audit_private.setting('audit.ip_address'), audit_private.setting('audit.metadata')), true);
  end if;
end
$$;

comment on function audit.set_context(text, text, inet, text, text, jsonb) is
  'Sets who is acting for the rest of the current transaction (transaction-local settings audit.*)';

grant execute on function audit.set_context(text, text, inet, text, text, jsonb) to cartop_anonymous, cartop_user, cartop_auditor;

-- source: triggers/02_tracking.sql
-- Tracking: which tables are audited, with which options, and the triggers that capture their changes.
--
-- Capture is statement-level (AFTER ... FOR EACH STATEMENT with transition tables): one INSERT ... SELECT
-- per audited statement writes one audit row per changed row, whether the statement touched one row or
-- a million (COPY, MERGE, ON CONFLICT and cascades included). Everything that can be known about a table
-- (primary key, excluded and masked columns, which columns to compare) is worked out once, at
-- enable_tracking time, and handed to the trigger as arguments or baked into a generated function.

create table if not exists audit_private.tables (
  id               integer     generated always as identity primary key,
  schema_name      text        not null,
  table_name       text        not null,
  primary_key      text[]      not null,
  excluded_columns text[]      not null default '{}',
  masked_columns   text[]      not null default '{}',
  enabled          boolean     not null default true,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  constraint tables_name_unique unique (schema_name, table_name),
  constraint tables_primary_key_present check (cardinality(primary_key) > 0)
);

comment on table audit_private.tables is
  'Every table ever tracked, by schema and name (never by OID, so history survives dump/restore). Rows are kept after disable_tracking so old audit rows keep their names.';
-- Encrypted columns (triggers/03_sensitive.sql) and the column naming each row's data subject.
alter table audit_private.tables add column if not exists encrypted_columns text[] not null default '{}';
alter table audit_private.tables add column if not exists subject_column text;

-- A tracked table by the name the registry holds, or null: looked up in the catalog, not by to_regclass, which
-- needs USAGE on the schema (an auditor reading audit.coverage need not have it). The one registry lookup.
create or replace function audit_private.table_by_name(schema_name text, table_name text)
  returns regclass
  language sql
  stable
  parallel safe
  set search_path = pg_catalog, pg_temp
as $$
  select c.oid::regclass from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = schema_name and c.relname = table_name
$$;

-- Generator functions of earlier versions, replaced by the ones below under other signatures.
drop function if exists audit_private.row_json_sql(audit_private.tables, text, text[]);
drop function if exists audit_private.write_capture_function(text, regclass, text);
drop function if exists audit_private.write_capture_function(text, audit_private.tables, text, text);

-- Text that marks a masked value: the column is recorded as changed, its value never is.
create or replace function audit_private.masked_value()
  returns jsonb
  language sql
  immutable
  parallel safe
as $$ select '"[masked]"'::jsonb $$;

create or replace function audit_private.masked_object(masked_columns text[])
  returns jsonb
  language sql
  immutable
  parallel safe
as $$
  select coalesce(jsonb_object_agg(c, audit_private.masked_value()), '{}')
  from unnest(masked_columns) as c
$$;

-- The shared TRUNCATE capture of earlier versions; capture is now generated per table (capture_truncate_<id>).
drop function if exists audit_private.tg__capture_truncate() cascade;
drop function if exists audit_private.type_has_equality(text);

-- How a column's values enter the trail, decided once per column from its type (domains looked through).
-- The trail must be lossless and capture must never run code a table owner can define, so nothing here
-- goes through a cast, a user operator or a domain CHECK (to_jsonb consults casts to json of user types;
-- format('%s', v) runs only the type's output function):
--   plain  built-in scalar types whose JSON is exact: bool and integers as JSON, numeric as a JSON number
--          ("NaN", "Infinity" as strings), dates and times as ISO strings ("infinity" as is), everything
--          else (text, uuid, bytea, bit, inet, built-in ranges, ...) as a JSON string of its text form
--   float  float4/float8: a JSON number; "NaN", "Infinity", "-Infinity" and "-0" as strings
--   array  an empty or one-dimensional array of plain elements with lower bound 1: a JSON array; any other array
--          (bounds, dimensions, other elements) as a JSON string of its text form ("[0:1]={1,2}")
--   jsonb  an object or array as itself; a scalar (null, true, 1, "s") as a JSON string of its text
--          ("null", "true", "1", "\"s\""), so JSON null stays distinct from SQL NULL (null)
--   text   json (its exact text: spacing, key order, duplicate keys), enums, composites, user-defined and
--          extension types, arrays of them: a JSON string of the text form
-- SQL NULL is always JSON null. README "Values in the trail" documents the mapping and how to decode it.
-- A type with its domains looked through.
create or replace function audit_private.base_type(type_oid oid)
  returns oid
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  t pg_type;
begin
  select * into t from pg_type where oid = type_oid;
  while t.typtype = 'd' loop
    select * into t from pg_type where oid = t.typbasetype;
  end loop;
  return t.oid;
end
$$;

create or replace function audit_private.value_kind(type_oid oid)
  returns text
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  t pg_type;
  element oid;
begin
  select * into t from pg_type where oid = audit_private.base_type(type_oid);
  -- Types created after initdb (by users or extensions) and non-base types: only their text form is safe.
  if t.oid >= 16384 or t.typtype <> 'b' or t.typrelid <> 0 then
    return 'text';
  end if;
  if t.oid = 'jsonb'::regtype then
    return 'jsonb';
  end if;
  if t.oid = 'json'::regtype then
    return 'text';
  end if;
  if t.oid in ('float4'::regtype, 'float8'::regtype) then
    return 'float';
  end if;
  select e.oid into element from pg_type e where e.typarray = t.oid;
  if element is not null then
    return case when audit_private.value_kind(element) = 'plain' then 'array' else 'text' end;
  end if;
  return 'plain';
end
$$;

-- SQL for the trail value of column `column_name` of row `row_alias`, by value_kind.
create or replace function audit_private.value_sql(row_alias text, column_name text, kind text)
  returns text
  language sql
  immutable
as $$
  select case kind
    when 'plain' then format('%I.%I', row_alias, column_name)
    when 'float' then format(
      'case when %1$I.%2$I = 0 and format(''%%s'', %1$I.%2$I) = ''-0'' then ''"-0"''::jsonb else to_jsonb(%1$I.%2$I) end',
      row_alias, column_name)
    when 'array' then format(
      'case when coalesce(array_ndims(%1$I.%2$I), 1) = 1 and coalesce(array_lower(%1$I.%2$I, 1), 1) = 1 then to_jsonb(%1$I.%2$I)
            else to_jsonb(format(''%%s'', %1$I.%2$I)) end',
      row_alias, column_name)
    when 'jsonb' then format(
      'case when jsonb_typeof(%1$I.%2$I) in (''object'', ''array'') then %1$I.%2$I
            when %1$I.%2$I is not null then to_jsonb(format(''%%s'', %1$I.%2$I)) end',
      row_alias, column_name)
    else format('case when num_nulls(%1$I.%2$I) = 0 then to_jsonb(format(''%%s'', %1$I.%2$I)) end', row_alias, column_name)
  end
$$;

-- SQL for "this column differs between rows o and n": a change is a change of the value's text form (1.0 vs
-- 1.00, -0 vs 0, 'a' vs 'A' under a case-insensitive collation all count), and no user operator runs.
--   - types whose equality is identity: their built-in `is distinct from`;
--   - built-in types whose stored bytes are their text form's (one byte image per text: numeric keeps its
--     scale, jsonb is canonical): the built-in byte comparison record_image_ne, ~5x cheaper per value than
--     printing both (numeric_out, jsonb_out); floats compare by value, and by bytes only at zero (-0);
--   - every other type (arrays, whose bytes may carry a null bitmap without nulls; types created after initdb,
--     whose bytes may differ for one text): the text forms.
create or replace function audit_private.changed_sql(column_name text, type_oid oid, collation_oid oid)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select case
    when t in ('bool'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'uuid'::regtype,
                      'date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype)
      or (t in ('text'::regtype, 'varchar'::regtype)
          and coalesce((select collisdeterministic from pg_collation where oid = collation_oid), true))
      then format('o.%1$I is distinct from n.%1$I', column_name)
    when t in ('float4'::regtype, 'float8'::regtype)
      then format('(o.%1$I is distinct from n.%1$I or (o.%1$I = 0 and record_image_ne(row(o.%1$I), row(n.%1$I))))', column_name)
    when t in ('numeric'::regtype, 'jsonb'::regtype, 'json'::regtype, 'text'::regtype, 'varchar'::regtype,
                      'bpchar'::regtype, 'bytea'::regtype, 'interval'::regtype, 'time'::regtype, 'timetz'::regtype,
                      'money'::regtype, 'inet'::regtype, 'cidr'::regtype, 'macaddr'::regtype, 'xml'::regtype,
                      'bit'::regtype, 'varbit'::regtype)
      then format('record_image_ne(row(o.%1$I), row(n.%1$I))', column_name)
    else format('((o.%1$I is null) <> (n.%1$I is null) or format(''%%s'', o.%1$I) <> format(''%%s'', n.%1$I))', column_name)
  end
  -- A domain compares as its base type (comparing runs no domain check).
  from (select audit_private.base_type(type_oid) as t) base
$$;

-- The audited columns of a table, in order, with what capture needs to know about each.
drop function if exists audit_private.audited_columns(audit_private.tables, regclass);
create or replace function audit_private.audited_columns(tracked audit_private.tables, target regclass)
  returns table (name text, kind text, changed_sql text, masked boolean, encrypted boolean)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select a.attname::text, audit_private.value_kind(a.atttypid),
         audit_private.changed_sql(a.attname::text, a.atttypid, a.attcollation),
         a.attname::text = any (tracked.masked_columns),
         a.attname::text = any (tracked.encrypted_columns)
  from pg_attribute a
  where a.attrelid = target and a.attnum > 0 and not a.attisdropped
    and a.attname::text <> all (tracked.excluded_columns)
  order by a.attnum
$$;

-- jsonb_build_object over (key, value SQL) pairs, in chunks: a function takes at most 100 arguments.
create or replace function audit_private.build_object_sql(pairs text[])
  returns text
  language sql
  immutable
as $$
  select coalesce(string_agg(format('jsonb_build_object(%s)', chunk), ' || ' order by n), '''{}''::jsonb')
  from (
    select (ord - 1) / 50 as n, string_agg(pair, ', ' order by ord) as chunk
    from unnest(pairs) with ordinality as p(pair, ord)
    group by 1
  ) c
$$;

-- SQL for column `column_name` of row `row_alias` as the trail keeps it: the mask, the value encrypted under
-- the key of the row's data subject (its subject column's text form), or the value.
create or replace function audit_private.trail_value_sql(tracked audit_private.tables, row_alias text, column_name text,
                                                         kind text, masked boolean, encrypted boolean)
  returns text
  language sql
  immutable
  set search_path = pg_catalog, pg_temp
as $$
  select case
    when masked then 'audit_private.masked_value()'
    -- jsonb_build_array(v) -> 0: the value as jsonb_build_object would put it (the same conversion, no cast).
    when encrypted then format('audit_private.encrypted_value(case when num_nulls(%1$I.%2$I) = 0 then format(''%%s'', %1$I.%2$I) end, jsonb_build_array(%3$s) -> 0)',
                               row_alias, tracked.subject_column, audit_private.value_sql(row_alias, column_name, kind))
    else audit_private.value_sql(row_alias, column_name, kind)
  end
$$;

-- SQL for "this row as audited JSON" (excluded columns left out, masked ones replaced, encrypted ones
-- encrypted), from row `row_alias`.
create or replace function audit_private.row_json_sql(tracked audit_private.tables, target regclass, row_alias text)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select audit_private.build_object_sql(array_agg(
           format('%L, %s', c.name, audit_private.trail_value_sql(tracked, row_alias, c.name, c.kind, c.masked, c.encrypted))))
  from audit_private.audited_columns(tracked, target) c
$$;

-- SQL for the entity id, read from audited JSON in `json_sql` (and, for UPDATE, from `delta_sql` first,
-- where a changed key lives): the key value as text, or a JSON array of the values of a composite key.
create or replace function audit_private.entity_id_sql(tracked audit_private.tables, json_sql text, delta_sql text default null)
  returns text
  language sql
  immutable
as $$
  select case
    when cardinality(tracked.primary_key) = 1 and delta_sql is null
      then format('%s ->> %L', json_sql, tracked.primary_key[1])
    when cardinality(tracked.primary_key) = 1
      then format('coalesce(%s ->> %L, %s ->> %2$L)', delta_sql, tracked.primary_key[1], json_sql)
    else format('jsonb_build_array(%s)::text', (
      select string_agg(
               case when delta_sql is null then format('%s -> %L', json_sql, k)
                    else format('coalesce(%s -> %L, %s -> %2$L)', delta_sql, k, json_sql) end,
               ', ' order by ord)
      from unnest(tracked.primary_key) with ordinality as u(k, ord)))
  end
$$;

-- SQL for the UPDATE delta: the new values of the columns that changed (compared in the clear, so an encrypted
-- column is in the delta exactly when its value changed); masked columns get the mask.
create or replace function audit_private.delta_sql(tracked audit_private.tables, target regclass)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select coalesce(string_agg(format('case when %s then jsonb_build_object(%L, %s) else ''{}''::jsonb end',
                                    c.changed_sql, c.name,
                                    audit_private.trail_value_sql(tracked, 'n', c.name, c.kind, c.masked, c.encrypted)),
                             E'\n          || '), '''{}''::jsonb')
  from audit_private.audited_columns(tracked, target) c
$$;

-- The WHEN of _900_audit_move_new as PostgreSQL prints it back (checked by capture_trigger_state).
create or replace function audit_private.move_new_condition()
  returns text
  language sql
  immutable
as $$ select $q$(current_setting('audit_private.moving'::text, true) = 'moved'::text)$q$ $$;

-- The capture triggers a tracked table must have, by what they are: name, function, events (pg_trigger.tgtype:
-- timing, level, events), transition tables and WHEN. A partitioned table, and each of its partitions, has
-- four more (MOVES AND PARTITIONS); the row ones on partitions are PostgreSQL's clones of the table's.
-- Guards and checks compare against this.
drop function if exists audit_private.expected_capture_triggers(integer);
create or replace function audit_private.expected_capture_triggers(table_id integer, partitioned boolean default false)
  returns table (trigger_name text, function_name text, trigger_type smallint, old_table text, new_table text, event text,
                 row_level boolean, condition text)
  language sql
  immutable
  parallel safe
as $$
  select * from (values
    ('_900_audit_insert', format('capture_insert_%s', table_id), 4::smallint, null, 'new_rows', 'after insert', false, null),
    ('_900_audit_update', format('capture_update_%s', table_id), 16::smallint, 'old_rows', 'new_rows', 'after update', false, null),
    ('_900_audit_delete', format('capture_delete_%s', table_id), 8::smallint, 'old_rows', null, 'after delete', false, null),
    ('_900_audit_truncate', format('capture_truncate_%s', table_id), 32::smallint, null, null, 'after truncate', false, null)) v
  union all
  select * from (values
    ('_900_audit_begin', format('capture_begin_%s', table_id), 62::smallint, null::text, null::text,
     'before insert or update or delete or truncate', false, null::text),
    ('_900_audit_move_mark', format('capture_move_mark_%s', table_id), 19::smallint, null, null, 'before update', true, null),
    ('_900_audit_move_old', format('capture_move_old_%s', table_id), 11::smallint, null, null, 'before delete', true, null),
    ('_900_audit_move_new', format('capture_move_new_%s', table_id), 5::smallint, null, null, 'after insert', true,
     audit_private.move_new_condition())) p
  where partitioned
$$;

-- Whether a relation is (in) a partitioned tree, so has the partitioned set of capture triggers.
create or replace function audit_private.in_partition_tree(target regclass)
  returns boolean
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$ select exists (select from pg_class c where c.oid = target and (c.relkind = 'p' or c.relispartition)) $$;

-- The relations capture triggers go on: the table and, if partitioned, all its partitions at every level.
create or replace function audit_private.capture_relations(target regclass)
  returns setof regclass
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select target
  union
  select t.relid from pg_partition_tree(target) t
$$;

-- Each expected capture trigger of one relation (a tracked table or one of its partitions) and whether it is
-- in place exactly (right name, function, events, transition tables, WHEN, no arguments) and enabled.
create or replace function audit_private.capture_trigger_state(table_id integer, target regclass)
  returns table (trigger_name text, installed boolean, enabled boolean)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select x.trigger_name, g.oid is not null, coalesce(g.tgenabled <> 'D', false)
  from audit_private.expected_capture_triggers(table_id, audit_private.in_partition_tree(target)) x
  left join pg_trigger g
    on g.tgrelid = target and g.tgname = x.trigger_name
   and g.tgfoid = to_regprocedure(format('audit_private.%I()', x.function_name))
   and g.tgtype = x.trigger_type and g.tgnargs = 0 and g.tgattr = ''::int2vector
   and pg_get_expr(g.tgqual, g.tgrelid) is not distinct from x.condition
   and g.tgoldtable is not distinct from x.old_table and g.tgnewtable is not distinct from x.new_table
$$;

-- The same over a tracked table's whole tree (what audit.tracked_tables counts).
create or replace function audit_private.capture_tree_state(table_id integer, target regclass)
  returns table (relation regclass, trigger_name text, installed boolean, enabled boolean)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select r, s.* from audit_private.capture_relations(target) r, audit_private.capture_trigger_state(table_id, r) s
$$;

-- Fills {{name}} slots of a template with slots->>name, in one pass: a filled-in value is never scanned for
-- slots again, so a value holding "{{…}}" stays as it is. Callers quote what they put in (%I, %L).
create or replace function audit_private.fill_template(template text, slots jsonb)
  returns text
  language plpgsql
  immutable
  set search_path = pg_catalog, pg_temp
as $$
declare
  done text := '';
  rest text := template;
  at integer;
  slot text;
begin
  loop
    at := strpos(rest, '{{');
    exit when at = 0;
    slot := substring(rest from at + 2 for greatest(strpos(substr(rest, at + 2), '}}') - 1, 0));
    if slot = '' or not (slots ? slot) then
      raise exception 'audit_private.fill_template: the template has slot "%", which is not given', slot
        using errcode = 'invalid_parameter_value';
    end if;
    done := done || left(rest, at - 1) || (slots ->> slot);
    rest := substr(rest, at + length(slot) + 4);
  end loop;
  return done || rest;
end
$$;

-- Whether relation `relid` is a partition (at any level) of the table schema_name.table_name. A function, so the
-- capture guard stays a simple expression (a subquery in it made every capture run it as a query: ~80k
-- instructions per statement), and it runs only when the names differ, i.e. on partitions.
create or replace function audit_private.partition_root_is(relid oid, schema_name text, table_name text)
  returns boolean
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where c.oid = pg_partition_root(relid) and n.nspname = schema_name and c.relname = table_name)
$$;

-- The CREATE FUNCTION statement of one capture function: a pure function of the table's registry row and the
-- capture SQL, so what a table should have can be compared with what it has (capture_function_problem).
-- Owned by cartop_capture (security definer as that role: it can append audit rows and its own notes, nothing
-- else) and executable by nobody else. It records only when fired as generated (timing, level, one of its
-- events) on the table it was generated for or one of that table's partitions (renames regenerate it), so
-- attaching it anywhere else records nothing and fails the write. Row-level and BEFORE functions only take
-- notes (MOVES AND PARTITIONS): no context, no statement number (counted after the writes). Names and values reach it only through %I and %L, and the body is one quoted literal (no dollar
-- quoting a name could close). Settings that change how values print are pinned.
create or replace function audit_private.capture_function_sql(function_name text, tracked audit_private.tables, events text[],
                                                              capture_sql text, timing text default 'AFTER', level text default 'STATEMENT')
  returns text
  language sql
  immutable
  set search_path = pg_catalog, pg_temp
  -- %I and pg_get_functiondef follow it: a session's quote_all_identifiers must not change a stamp.
  set quote_all_identifiers = off
as $$
  select format($create$create or replace function audit_private.%I()
      returns trigger
      language plpgsql
      security definer
      set search_path = pg_catalog, pg_temp
      -- A plan cached for small statements is reused for large ones: JIT would compile on every call,
      -- and the UPDATE pairing would sort on disk with the default work_mem.
      set jit = off
      set work_mem = '64MB'
      -- Values print the same whatever the writing session's settings (the trail holds text forms).
      set datestyle = 'ISO, YMD'
      set intervalstyle = 'postgres'
      set extra_float_digits = 1
      set bytea_output = 'hex'
      set lc_monetary = 'C'%s
    as %L$create$, function_name,
    -- A row trigger looks up its note once per row while the statement adds thousands: a plan cached while
    -- the notes were few must still use the indexes.
    case when level = 'ROW' then E'\n      set enable_seqscan = off' else '' end,
    audit_private.fill_template($template$
    -- Generated by cartop-audit for audit_private.tables id {{table_id}}; audit.enable_tracking rewrites it, do not edit.
    declare
      _at timestamptz := statement_timestamp();
      _tx bigint := txid_current();{{context_declarations}}{{statement_declarations}}
    begin
      if tg_when <> {{timing}} or tg_level <> {{level}} or tg_op <> all ({{events}}::text[])
         or ((tg_table_schema <> {{schema_name}} or tg_table_name <> {{table_name}})
             and not audit_private.partition_root_is(tg_relid, {{schema_name}}, {{table_name}})) then
        raise exception 'audit_private.%: generated for % on %.%, fired % % on %.%',
          {{function_name}}, {{generated_for}}, {{schema_name}}, {{table_name}}, tg_when, case when tg_level = 'ROW' then 'ROW ' else '' end || tg_op, tg_table_schema, tg_table_name
          using errcode = 'insufficient_privilege',
                hint = 'Capture functions run only from the triggers audit.enable_tracking installs; re-run audit.enable_tracking after renaming a table where no event trigger does it.';
      end if;{{context_statements}}{{statement_statements}}
      {{capture}};
      return {{returns}};
    end
  $template$, jsonb_build_object(
    'table_id', tracked.id::text, 'schema_name', quote_literal(tracked.schema_name), 'table_name', quote_literal(tracked.table_name),
    'function_name', quote_literal(function_name), 'timing', quote_literal(timing), 'level', quote_literal(level),
    'events', quote_literal((select array_agg(upper(e)) from unnest(events) e)::text),
    -- What it was generated for, as the refusal says it: "INSERT", or e.g. "BEFORE ROW UPDATE".
    'generated_for', quote_literal(concat_ws(' ', nullif(timing, 'AFTER'), case when level = 'ROW' then 'ROW' end,
                                             (select string_agg(upper(e), '/') from unnest(events) e))),
    'context_declarations', case when level = 'STATEMENT' and timing = 'AFTER' then audit_private.context_declarations() else '' end,
    'context_statements', case when level = 'STATEMENT' and timing = 'AFTER' then audit_private.context_statements() else '' end,
    'statement_declarations', case when level = 'STATEMENT' and timing = 'AFTER' then audit_private.statement_number_declarations() else '' end,
    'statement_statements', case when level = 'STATEMENT' and timing = 'AFTER' then audit_private.statement_number_statements() else '' end,
    'returns', case when level = 'ROW' and timing = 'BEFORE' then 'case tg_op when ''DELETE'' then old else new end' else 'null' end,
    'capture', capture_sql)))
$$;

-- The columns every capture INSERT writes, and the context values (capture_function_sql's variables) it writes
-- into the last eight.
create or replace function audit_private.capture_insert_sql()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select 'insert into audit_private.log_entries (created_at, tx_id, statement_number, table_id, action, entity_id, old_entity_id, row_data, delta,
        user_id, user_email, ip_address, user_agent, request_id, metadata, db_user, application_name)'
$$;
create or replace function audit_private.capture_context_values_sql()
  returns text
  language sql
  immutable
  parallel safe
as $$
  select '_user_id, _user_email, _ip_address, _user_agent, _request_id, _metadata, _db_user, _application_name'
$$;

-- MOVES AND PARTITIONS (begin). A partitioned tracked table is captured on every relation of its tree:
-- the statement triggers sit on the table and on each partition (a statement aimed at a partition fires
-- only that partition's statement triggers; one aimed at the table fires only the table's), all calling
-- the table's capture functions, so a write straight into a partition is recorded under the tracked table.
--
-- A row an UPDATE moves to another partition is deleted from one and inserted into the other. A plain
-- UPDATE still puts it into its UPDATE transition tables; the UPDATE action of a MERGE does not: the row
-- goes to the DELETE/INSERT transition tables, which are read only when the MERGE has those actions too
-- (docs/merge-partition-moves.md). So partitioned tables also get three row triggers (cloned by PostgreSQL
-- onto every partition, present and future) that take a note of each move, in order:
--   _900_audit_move_mark  BEFORE UPDATE that changes a partition key column: "this row (trigger depth,
--                         partition, old key) is being updated to new key"
--   _900_audit_move_old   BEFORE DELETE of that same row from that partition: it is moving; note its old row
--   _900_audit_move_new   AFTER INSERT, only while a move is under way (WHEN): the new row of the move
-- and the statement triggers read the notes: UPDATE records each move it did not see itself as one UPDATE,
-- DELETE and INSERT leave moved rows out. _900_audit_begin (BEFORE each statement) counts the statement
-- triggers that will fire; the last of them to finish drops the notes, so a statement run inside another
-- (a function it calls, at the same trigger depth) leaves the outer one's notes alone. Notes live in an
-- unlogged table that only capture writes (so a session cannot forge one), per transaction (rolled back
-- with it); a masked column is noted by a digest of its text, never its value. The setting
-- audit_private.moving only says whether to look.
create unlogged table if not exists audit_private.capture_notes (
  tx_id      bigint  not null,
  depth      integer not null,
  table_id   integer not null,
  kind       text    not null check (kind in ('mark', 'move', 'insert', 'update', 'delete', 'truncate')),
  relid      oid,
  remaining  integer,
  recorded   boolean not null default false,
  old_key    jsonb,
  new_key    jsonb,
  row_data   jsonb,
  old_masked jsonb,
  new_data   jsonb,
  new_masked jsonb
);
-- Row triggers find a note by key, once per row (hash: a key of any size; they write `tx_id + 0` so that
-- the transaction's index never looks cheaper to them). Statement triggers find their transaction's notes.
-- Every statement on a partitioned tracked table adds and removes a few notes: vacuum the dead ones often.
drop index if exists audit_private.capture_notes_statement;
create index if not exists capture_notes_old_key on audit_private.capture_notes using hash (old_key);
create index if not exists capture_notes_new_key on audit_private.capture_notes using hash (new_key);
create index if not exists capture_notes_tx on audit_private.capture_notes (tx_id);
alter table audit_private.capture_notes set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
comment on table audit_private.capture_notes is
  'Capture''s notes within one statement (rows moved between partitions, a partitioned table being truncated); never read by anything else';
revoke all on audit_private.capture_notes from public;
grant select, insert, update, delete on audit_private.capture_notes to cartop_capture;

-- SQL for the primary key of row `row_alias` as a JSON array of its trail values (what moves are matched by).
create or replace function audit_private.key_sql(tracked audit_private.tables, target regclass, row_alias text)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select format('jsonb_build_array(%s)', string_agg(audit_private.value_sql(row_alias, k, audit_private.value_kind(a.atttypid)), ', ' order by ord))
  from unnest(tracked.primary_key) with ordinality as u(k, ord)
  join pg_attribute a on a.attrelid = target and a.attname = k
$$;

-- SQL for a digest of each masked column of row `row_alias` (so a move can tell whether it changed), or null.
create or replace function audit_private.masked_digest_sql(tracked audit_private.tables, target regclass, row_alias text)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select case when count(*) = 0 then 'null' else audit_private.build_object_sql(array_agg(format(
           '%L, case when num_nulls(%2$I.%1$I) = 0 then encode(sha256(convert_to(format(''%%s'', %2$I.%1$I), ''UTF8'')), ''hex'') end',
           c.name, row_alias))) end
  from audit_private.audited_columns(tracked, target) c
  where c.masked
$$;

-- The delta of a noted move, from the two audited rows: the columns whose trail values differ (as text, so
-- 1.0 -> 1.00 counts, as it does for an UPDATE) or, for masked columns, whose digests differ.
create or replace function audit_private.move_delta(old_row jsonb, old_masked jsonb, new_row jsonb, new_masked jsonb)
  returns jsonb
  language sql
  immutable
  parallel safe
as $$
  select coalesce(jsonb_object_agg(n.key, n.value), '{}')
  from jsonb_each(new_row) n
  where (old_row -> n.key)::text is distinct from n.value::text
     or (old_masked -> n.key) is distinct from (new_masked -> n.key)
$$;

-- MOVES AND PARTITIONS (end)

-- The capture functions of one tracked table, as CREATE statements. Everything known about the table is baked
-- in: its id, name, key, columns, exclusions and masks, so a statement does no lookups.
--
-- INSERT and DELETE store the audited JSON of each new or old row. UPDATE stores the old row plus the
-- new values of the changed columns. Old and new rows are paired by their position in the transition
-- tables (PostgreSQL fills both in the same order), so an UPDATE that changes the primary key still
-- yields one audit row per row. A FULL JOIN cannot be planned as a nested loop, which keeps a cached plan
-- made for one row fast for a million. OFFSET 0 stops the planner from pulling the subquery up and
-- building the JSON once per reference instead of once per row. Partitioned tables get the move handling
-- above; other tables none of it.
create or replace function audit_private.capture_functions_sql(tracked audit_private.tables, target regclass)
  returns table (function_name text, create_sql text)
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
  -- %I and pg_get_functiondef follow it: a session's quote_all_identifiers must not change a stamp.
  set quote_all_identifiers = off
as $$
declare
  insert_columns constant text := audit_private.capture_insert_sql();
  context_values constant text := audit_private.capture_context_values_sql();
  partitioned constant boolean := (select c.relkind = 'p' from pg_class c where c.oid = target);
  -- This statement's notes (the same transaction, table and trigger depth).
  notes constant text := format('audit_private.capture_notes m where m.tx_id = _tx and m.table_id = %s and m.depth = pg_trigger_depth()', tracked.id);
  -- The end of a statement trigger: it is done; the statement's last one drops the statement's notes. Which
  -- ones fire is counted by _900_audit_begin (a statement fires the BEFORE and AFTER triggers of the same
  -- events, each once per table or partition it aims at, even with several writes to the table in WITH),
  -- not taken from their order, which WITH can change.
  done_sql constant text := format(
    'update audit_private.capture_notes m set remaining = m.remaining - 1
      where m.tx_id = _tx and m.table_id = %2$s and m.depth = pg_trigger_depth() and m.kind = lower(tg_op);
      delete from %1$s and m.kind = lower(tg_op) and m.remaining <= 0;
      if not exists (select from %1$s and m.kind in (''insert'', ''update'', ''delete'')) then
        delete from %1$s;
      end if', notes, tracked.id);
  op record;
  plain_sql text;
  update_select text;
begin
  for op in select * from (values ('insert', 'I', 'new_rows', 'new_key'), ('delete', 'D', 'old_rows', 'old_key')) as v(name, action, transition, note_key) loop
    plain_sql := format(
      '%s
      select _at, _tx, _stmt, %s, %L, %s, null, r.row_data, null, %s
      from (select %s as row_data from %I t /*filter*/ offset 0) r',
      insert_columns, tracked.id, op.action, audit_private.entity_id_sql(tracked, 'r.row_data'), context_values,
      audit_private.row_json_sql(tracked, target, 't'), op.transition);
    function_name := format('capture_%s_%s', op.name, tracked.id);
    create_sql := audit_private.capture_function_sql(function_name, tracked, array[op.name],
      case when not partitioned then replace(plain_sql, ' /*filter*/', '')
           -- Rows moved by a MERGE are in these transition tables too; the UPDATE capture records them.
           else format('if exists (select from %s and m.kind = ''move'') then
        %s;
      else
        %s;
      end if',
             -- NOT IN over a subquery: hashed once, not probed per row (keys are never null).
             notes, replace(plain_sql, '/*filter*/', format('where %3$s not in (select m.%2$I from %1$s and m.kind = ''move'' and m.new_data is not null)',
                                             notes, op.note_key, audit_private.key_sql(tracked, target, 't'))),
             replace(plain_sql, ' /*filter*/', ''))
           || ';
      ' || done_sql end);
    return next;
  end loop;

  -- UPDATE: the columns inserted are the same in all branches; only how old and new rows are paired differs.
  update_select := format(
    'select _at, _tx, _stmt, %s, %L, %s, case when c.delta ?| %L::text[] then %s end, c.row_data, c.delta, %s',
    tracked.id, 'U', audit_private.entity_id_sql(tracked, 'c.row_data', 'c.delta'),
    -- The key changed exactly when the delta holds a key column: then record the old entity id too.
    tracked.primary_key, audit_private.entity_id_sql(tracked, 'c.row_data'), context_values);
  function_name := format('capture_update_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked, array['update'], format(
    -- One row or none (what an API sends): pair the two rows directly. Setting up the general pairing (two
    -- window functions and a join) on every statement made single-row UPDATEs ~25% slower. Whether there is a
    -- second row is one probe (a count, to tell none from one, cost ~22k instructions more).
    'perform from old_rows offset 1;
    if not found then
      %1$s
      %2$s
      from (select %3$s as row_data, %4$s as delta from old_rows o, new_rows n offset 0) c
      where c.delta <> ''{}''::jsonb;
    else
      %1$s
      %2$s
      from (
        select %3$s as row_data,
          %4$s as delta
        from (select row_number() over () as audit_ordinal__, t.* from old_rows t) o
        full join (select row_number() over () as audit_ordinal__, t.* from new_rows t) n using (audit_ordinal__)
        offset 0
      ) c
      where c.delta <> ''{}''::jsonb;
    end if%5$s',
    insert_columns, update_select, audit_private.row_json_sql(tracked, target, 'o'), audit_private.delta_sql(tracked, target),
    case when partitioned then format(';
    -- Moves: a plain UPDATE saw them (their new rows are in new_rows); a MERGE did not, so record them here.
    if exists (select from %1$s and m.kind = ''move'' and not m.recorded) then
      -- The last UPDATE trigger of the statement (an earlier one may belong to a statement run inside it,
      -- before the rows of this one are complete) sees every move whole, or something went wrong.
      if (select m.remaining from %1$s and m.kind = ''update'') = 1
         and exists (select from %1$s and m.kind = ''move'' and m.new_data is null) then
        raise exception ''cartop-audit: a row of %%.%% moved to another partition, but its new version was not seen (a BEFORE trigger changed its key or dropped it); refusing to write it unaudited'', tg_table_schema, tg_table_name
          using errcode = ''triggered_action_exception'';
      end if;
      %2$s
      %3$s
      from (select m.row_data, audit_private.move_delta(m.row_data, m.old_masked, m.new_data, m.new_masked) as delta
            from %1$s and m.kind = ''move'' and m.new_data is not null and not m.recorded
              and m.new_key not in (select %4$s from new_rows n)
            offset 0) c
      where c.delta <> ''{}''::jsonb;
      update audit_private.capture_notes m set recorded = true
      where m.tx_id = _tx and m.table_id = %6$s and m.depth = pg_trigger_depth() and m.kind = ''move'' and m.new_data is not null;
    end if;
    %5$s', notes, insert_columns, update_select, audit_private.key_sql(tracked, target, 'n'), done_sql, tracked.id) else '' end));
  return next;

  -- TRUNCATE: one audit row for the statement, no entity. A TRUNCATE of a partitioned table fires the
  -- truncate triggers of its partitions too (all BEFORE ones, then all AFTER ones): the table's BEFORE
  -- trigger leaves a note, and theirs find it and record nothing. A partition truncated on its own cannot
  -- be recorded (the trigger cannot see the rows it removes), so that is refused.
  function_name := format('capture_truncate_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked, array['truncate'],
    case when not partitioned then format(
    '%s
      values (_at, _tx, _stmt, %s, %L, null, null, null, null, %s)',
    insert_columns, tracked.id, 'T', context_values)
    else format(
    'if tg_table_schema = %7$L and tg_table_name = %8$L then
      %1$s
      values (_at, _tx, _stmt, %2$s, %3$L, null, null, null, null, %4$s);
    elsif exists (select from %6$s and m.kind = ''truncate'') then
      update audit_private.capture_notes m set remaining = m.remaining - 1
      where m.tx_id = _tx and m.table_id = %2$s and m.depth = pg_trigger_depth() and m.kind = ''truncate'';
      delete from %6$s and m.kind = ''truncate'' and m.remaining <= 0;
    else
      raise exception ''cartop-audit: %% is a partition of the tracked table %%; truncating it alone would remove rows without audit rows'', tg_relid::regclass, %5$L
        using errcode = ''feature_not_supported'',
              hint = ''DELETE FROM the partition (recorded row by row), or TRUNCATE the whole table.'';
    end if', insert_columns, tracked.id, 'T', context_values, format('%I.%I', tracked.schema_name, tracked.table_name), notes,
             tracked.schema_name, tracked.table_name) end);
  return next;

  if not partitioned then
    return;
  end if;
  function_name := format('capture_begin_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked,
    array['insert', 'update', 'delete', 'truncate'], format(
    'if tg_op = ''TRUNCATE'' then
        -- The truncate trigger of each partition counts itself off; the last one drops the note.
        if tg_table_schema = %3$L and tg_table_name = %4$L then
          insert into audit_private.capture_notes (tx_id, depth, table_id, kind, remaining)
          select _tx, pg_trigger_depth(), %2$s, ''truncate'', count(*) - 1 from pg_partition_tree(tg_relid) having count(*) > 1;
        end if;
      else
        delete from %1$s and m.kind = ''truncate'';
        -- Counted: a statement run inside this one (a function it calls) fires its own at the same depth.
        update audit_private.capture_notes m set remaining = m.remaining + 1
        where m.tx_id = _tx and m.table_id = %2$s and m.depth = pg_trigger_depth() and m.kind = lower(tg_op);
        if not found then
          insert into audit_private.capture_notes (tx_id, depth, table_id, kind, remaining) values (_tx, pg_trigger_depth(), %2$s, lower(tg_op), 1);
        end if;
      end if;
      perform set_config(''audit_private.moving'', '''', true)', notes, tracked.id, tracked.schema_name, tracked.table_name), 'BEFORE');
  return next;
  -- Only a row whose partition key columns change (compared as text: no user operator) can move.
  select coalesce(string_agg(format('(%1$I.%3$I is null) <> (%2$I.%3$I is null) or format(''%%s'', %1$I.%3$I) <> format(''%%s'', %2$I.%3$I)',
                                    'old', 'new', k), ' or '), 'false')
    into plain_sql
  from (
    select distinct a.attname as k
    from audit_private.capture_relations(target) r
    join pg_partitioned_table p on p.partrelid = r
    join pg_attribute a on a.attrelid = r and a.attnum > 0 and not a.attisdropped
     and (a.attnum = any (p.partattrs::int2[]) or p.partexprs is not null) -- expressions: any column may feed them
  ) c;
  function_name := format('capture_move_mark_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked, array['update'], format(
    'if %s then
        insert into audit_private.capture_notes (tx_id, depth, table_id, kind, relid, old_key, new_key)
        values (_tx, pg_trigger_depth(), %s, ''mark'', tg_relid, %s, %s);
        perform set_config(''audit_private.moving'', ''mark'', true);
      end if',
    plain_sql, tracked.id, audit_private.key_sql(tracked, target, 'old'), audit_private.key_sql(tracked, target, 'new')), 'BEFORE', 'ROW');
  return next;
  function_name := format('capture_move_old_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked, array['delete'], format(
    'if coalesce(current_setting(''audit_private.moving'', true), '''') <> '''' then
        update audit_private.capture_notes m set kind = ''move'', row_data = %3$s, old_masked = %4$s
        where m.tx_id + 0 = _tx and m.table_id = %2$s and m.depth = pg_trigger_depth() and m.kind = ''mark''
          and m.relid = tg_relid and m.old_key = %1$s;
        perform set_config(''audit_private.moving'', case when found then ''moved'' else ''mark'' end, true);
      end if',
    audit_private.key_sql(tracked, target, 'old'), tracked.id, audit_private.row_json_sql(tracked, target, 'old'),
    audit_private.masked_digest_sql(tracked, target, 'old')), 'BEFORE', 'ROW');
  return next;
  function_name := format('capture_move_new_%s', tracked.id);
  create_sql := audit_private.capture_function_sql(function_name, tracked, array['insert'], format(
    'update audit_private.capture_notes m set new_data = %s, new_masked = %s
      where m.tx_id + 0 = _tx and m.table_id = %s and m.depth = pg_trigger_depth()
        and m.kind = ''move'' and m.new_data is null and m.new_key = %s',
    audit_private.row_json_sql(tracked, target, 'new'), audit_private.masked_digest_sql(tracked, target, 'new'),
    tracked.id, audit_private.key_sql(tracked, target, 'new')), 'AFTER', 'ROW');
  return next;
end
$$;

-- Every generated function carries a stamp: the SHA-256 of the CREATE statement that made it and of the
-- definition PostgreSQL then holds (pg_get_functiondef), in its comment. Whether a capture function is what
-- the generator makes now: null when it is, else what is wrong (doctor's capture_outdated).
create or replace function audit_private.capture_stamp(create_sql text, function_oid oid)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
  -- %I and pg_get_functiondef follow it: a session's quote_all_identifiers must not change a stamp.
  set quote_all_identifiers = off
as $$
  select format('cartop-audit capture; generator sha256 %s; definition sha256 %s',
    encode(sha256(convert_to(create_sql, 'UTF8')), 'hex'), encode(sha256(convert_to(pg_get_functiondef(function_oid), 'UTF8')), 'hex'))
$$;

create or replace function audit_private.capture_function_problem(function_name text, create_sql text)
  returns text
  language sql
  stable
  set search_path = pg_catalog, pg_temp
  -- %I and pg_get_functiondef follow it: a session's quote_all_identifiers must not change a stamp.
  set quote_all_identifiers = off
as $$
  select case
    when p.oid is null then 'missing'
    when p.proowner <> 'cartop_capture'::regrole then format('owned by %s, not cartop_capture', p.proowner::regrole)
    when obj_description(p.oid, 'pg_proc') is distinct from audit_private.capture_stamp(create_sql, p.oid)
      then 'not what this version generates (changed by hand, or generated by another version)'
  end
  from (select to_regprocedure(format('audit_private.%I()', function_name)) as oid) f
  left join pg_proc p on p.oid = f.oid
$$;

-- Writes one capture function unless it is in place exactly (same stamp): a deploy that changes nothing
-- rewrites nothing. Returns whether it wrote.
create or replace function audit_private.write_capture_function(function_name text, create_sql text)
  returns boolean
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
  -- %I and pg_get_functiondef follow it: a session's quote_all_identifiers must not change a stamp.
  set quote_all_identifiers = off
as $$
declare
  fn oid;
begin
  if audit_private.capture_function_problem(function_name, create_sql) is null then
    return false;
  end if;
  execute create_sql;
  fn := to_regprocedure(format('audit_private.%I()', function_name));
  execute format('alter function audit_private.%I() owner to cartop_capture', function_name);
  execute format('revoke all on function audit_private.%I() from public', function_name);
  execute format('comment on function audit_private.%I() is %L', function_name, audit_private.capture_stamp(create_sql, fn));
  return true;
end
$$;

-- Writes the capture functions of one tracked table (only those not in place).
create or replace function audit_private.write_capture_functions(tracked audit_private.tables, target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform audit_private.write_capture_function(f.function_name, f.create_sql)
  from audit_private.capture_functions_sql(tracked, target) f;
end
$$;

-- (Re)creates the capture triggers of one tracked table from its registry row, on the table and each of
-- its partitions (row triggers on the table only: PostgreSQL clones them onto the partitions, and onto
-- partitions created or attached later). CREATE OR REPLACE TRIGGER: nothing is dropped (so no DROP TRIGGER
-- event to tell apart from an attack), a disabled trigger comes back enabled, a look-alike under our name
-- is replaced.
create or replace function audit_private.attach_capture(tracked audit_private.tables, target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  partitioned constant boolean := audit_private.in_partition_tree(target);
  x record;
  rel record;
begin
  perform audit_private.write_capture_functions(tracked, target);
  for rel in
    select r.oid, n.nspname, r.relname, r.oid = target as is_root
    from audit_private.capture_relations(target) t join pg_class r on r.oid = t join pg_namespace n on n.oid = r.relnamespace
  loop
    for x in select * from audit_private.expected_capture_triggers(tracked.id, partitioned) e where rel.is_root or not e.row_level loop
      execute format('create or replace trigger %I %s on %I.%I %s for each %s %s execute function audit_private.%I()',
        x.trigger_name, x.event, rel.nspname, rel.relname,
        case when x.old_table is null and x.new_table is null then ''
             else 'referencing' || case when x.old_table is not null then format(' old table as %I', x.old_table) else '' end
                                || case when x.new_table is not null then format(' new table as %I', x.new_table) else '' end end,
        case when x.row_level then 'row' else 'statement' end,
        case when x.condition is not null then format('when %s', x.condition) else '' end,
        x.function_name);
    end loop;
  end loop;
  -- A copy of a capture trigger under another name (made where no event trigger refused it) would capture
  -- twice, and one left on a partition since detached would fail its writes: remove them, now that the real
  -- ones are in place.
  for x in
    select g.tgname, n.nspname, c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
    where not g.tgisinternal and g.tgparentid = 0
      and exists (select from audit_private.expected_capture_triggers(tracked.id, true) e
                  where g.tgfoid = to_regprocedure(format('audit_private.%I()', e.function_name))
                    and (e.trigger_name <> g.tgname or g.tgrelid not in (select audit_private.capture_relations(target))))
  loop
    execute format('drop trigger %I on %I.%I', x.tgname, x.nspname, x.relname);
  end loop;
end
$$;

-- Removes the capture triggers of a table and its partitions (by what they are, whatever their name: any
-- trigger running one of its capture functions or holding a capture trigger's name; clones go with the
-- table's own).
create or replace function audit_private.detach_capture(table_id integer, target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  x record;
begin
  for x in
    select g.tgname, n.nspname, c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
    where not g.tgisinternal and g.tgparentid = 0
      and exists (select from audit_private.expected_capture_triggers(table_id, true) e
                  where g.tgfoid = to_regprocedure(format('audit_private.%I()', e.function_name))
                     or (g.tgname = e.trigger_name and g.tgrelid in (select audit_private.capture_relations(target))))
  loop
    execute format('drop trigger %I on %I.%I', x.tgname, x.nspname, x.relname);
  end loop;
end
$$;
drop function if exists audit_private.detach_capture(regclass);

-- Starts (or re-configures) auditing of a table. Idempotent: calling it again sets the options given, but
-- never weakens a protection by accident: while the table is tracked, a column excluded before must stay
-- excluded and a column masked before must stay masked or become excluded, unless drop_protections is true
-- (what reached the append-only trail can never be taken back).
-- A table's primary key columns, in key order (null without one).
create or replace function audit_private.primary_key_columns(target regclass)
  returns text[]
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select array_agg(a.attname::text order by k.ord)
  from pg_index i
  cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = target and i.indisprimary
$$;

drop function if exists audit.enable_tracking(regclass, text[], text[]);
drop function if exists audit.enable_tracking(regclass, text[], text[], boolean);
create or replace function audit.enable_tracking(
  target regclass,
  excluded_columns text[] default '{}',
  masked_columns text[] default '{}',
  drop_protections boolean default false,
  encrypted_columns text[] default '{}',
  subject_column text default null
)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  rel record;
  key_columns text[];
  unknown text[];
  tracked audit_private.tables;
  previous audit_private.tables;
  unexcluded text[];
  unmasked text[];
  unencrypted text[];
begin
  if target is null then
    raise exception 'audit.enable_tracking: target table must not be null' using errcode = 'null_value_not_allowed';
  end if;
  excluded_columns := coalesce(excluded_columns, '{}');
  masked_columns := coalesce(masked_columns, '{}');
  encrypted_columns := coalesce(encrypted_columns, '{}');

  select c.relname::text as table_name, n.nspname::text as schema_name, c.relkind, c.relispartition, c.relpersistence
    into rel
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.oid = target;

  if rel.relkind not in ('r', 'p') then
    raise exception 'audit.enable_tracking: % is not a table', target using errcode = 'wrong_object_type';
  end if;
  if rel.relispartition then
    raise exception 'audit.enable_tracking: % is a partition; track its partitioned parent instead', target
      using errcode = 'wrong_object_type';
  end if;
  if rel.relpersistence = 't' then
    raise exception 'audit.enable_tracking: % is a temporary table; only permanent tables can be tracked', target
      using errcode = 'wrong_object_type';
  end if;
  if rel.schema_name in ('audit', 'audit_private') then
    raise exception 'audit.enable_tracking: % belongs to the audit system and cannot be tracked', target
      using errcode = 'wrong_object_type';
  end if;

  key_columns := audit_private.primary_key_columns(target);
  if key_columns is null then
    raise exception 'audit.enable_tracking: table % has no primary key', target
      using errcode = 'invalid_table_definition',
            hint = 'Audit rows are keyed by the primary key; add one before tracking the table.';
  end if;

  select array_agg(c) into unknown
  from unnest(array_remove(excluded_columns || masked_columns || encrypted_columns || subject_column, null)) as c
  where not exists (select from pg_attribute a where a.attrelid = target and a.attname = c and a.attnum > 0 and not a.attisdropped);
  if unknown is not null then
    raise exception 'audit.enable_tracking: table % has no column(s) %', target, array_to_string(unknown, ', ')
      using errcode = 'undefined_column';
  end if;
  if key_columns && (excluded_columns || masked_columns || encrypted_columns) then
    raise exception 'audit.enable_tracking: primary key column(s) of % cannot be excluded, masked or encrypted', target
      using errcode = 'invalid_parameter_value';
  end if;
  if excluded_columns && masked_columns or encrypted_columns && (excluded_columns || masked_columns) then
    raise exception 'audit.enable_tracking: a column of % can be only one of excluded, masked and encrypted', target
      using errcode = 'invalid_parameter_value';
  end if;
  if cardinality(encrypted_columns) > 0 and subject_column is null then
    raise exception 'audit.enable_tracking: encrypted columns of % need a subject_column (whose value names the data subject each row belongs to)', target
      using errcode = 'invalid_parameter_value',
            hint = 'e.g. subject_column => ''user_id'': each subject''s values get their own key, which audit.erase_subject destroys.';
  end if;
  -- The key is named by the subject's text form: only types whose text does not depend on session settings
  -- (TimeZone, DateStyle, numeric scale), so one subject always has one key to erase.
  if subject_column is not null and (select audit_private.base_type(a.atttypid) from pg_attribute a
        where a.attrelid = target and a.attname = subject_column) <> all (array['int2', 'int4', 'int8', 'text', 'varchar', 'uuid']::regtype[]) then
    raise exception 'audit.enable_tracking: the subject column % of % must be an integer, text or uuid column', subject_column, target
      using errcode = 'invalid_parameter_value';
  end if;
  if subject_column = any (excluded_columns || masked_columns || encrypted_columns) then
    raise exception 'audit.enable_tracking: the subject column % of % must stay in the trail in the clear', subject_column, target
      using errcode = 'invalid_parameter_value';
  end if;

  select * into previous from audit_private.tables t
  where t.schema_name = rel.schema_name and t.table_name = rel.table_name and t.enabled;
  if previous.id is not null and not coalesce(drop_protections, false) then
    select array_agg(c order by c) into unexcluded from unnest(previous.excluded_columns) c where c <> all (excluded_columns);
    select array_agg(c order by c) into unmasked from unnest(previous.masked_columns) c where c <> all (masked_columns || excluded_columns);
    -- Encrypted may become masked or excluded (less is kept), never plain.
    select array_agg(c order by c) into unencrypted from unnest(previous.encrypted_columns) c
      where c <> all (encrypted_columns || masked_columns || excluded_columns);
    if unexcluded is not null or unmasked is not null or unencrypted is not null then
      raise exception 'audit.enable_tracking: % would no longer %', target,
        concat_ws(' and ',
          'exclude ' || array_to_string(unexcluded, ', '),
          'mask ' || array_to_string(unmasked, ', '),
          'encrypt ' || array_to_string(unencrypted, ', '))
        using errcode = 'invalid_parameter_value',
              detail = format('Now excluded: %s; masked: %s; encrypted: %s.', previous.excluded_columns, previous.masked_columns, previous.encrypted_columns),
              hint = 'Name them again (excluded_columns, masked_columns, encrypted_columns), or pass drop_protections => true to let their values into the trail from now on.';
    end if;
  end if;

  insert into audit_private.tables as t (schema_name, table_name, primary_key, excluded_columns, masked_columns, encrypted_columns, subject_column)
  values (rel.schema_name, rel.table_name, key_columns, excluded_columns, masked_columns, encrypted_columns,
          case when cardinality(encrypted_columns) > 0 then subject_column end)
  on conflict (schema_name, table_name) do update
    set primary_key = excluded.primary_key,
        excluded_columns = excluded.excluded_columns,
        masked_columns = excluded.masked_columns,
        encrypted_columns = excluded.encrypted_columns,
        subject_column = excluded.subject_column,
        enabled = true,
        updated_at = now()
    -- Called again with the same options (every deploy replays the example's calls): the row stays as it is.
    where (t.primary_key, t.excluded_columns, t.masked_columns, t.encrypted_columns, t.subject_column, t.enabled)
          is distinct from (excluded.primary_key, excluded.excluded_columns, excluded.masked_columns,
                            excluded.encrypted_columns, excluded.subject_column, true)
  returning t.* into tracked;
  if tracked.id is null then
    select t.* into tracked from audit_private.tables t where t.schema_name = rel.schema_name and t.table_name = rel.table_name;
  end if;

  perform audit_private.attach_capture(tracked, target);
end
$$;

comment on function audit.enable_tracking(regclass, text[], text[], boolean, text[], text) is
  'Starts auditing a table (idempotent; a second call sets the options, refusing to drop an exclusion, mask or encryption unless drop_protections); encrypted_columns are kept encrypted under a key per data subject (subject_column)';

-- Ends the tracking of one registry row: marks it disabled, removes the capture triggers (if the table is
-- still there) and the generated functions. The audit rows stay, and so does the registry row.
create or replace function audit_private.end_tracking(tracked_id integer)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  tracked audit_private.tables;
  target regclass;
begin
  update audit_private.tables set enabled = false, updated_at = now()
   where id = tracked_id
  returning * into tracked;
  target := audit_private.table_by_name(tracked.schema_name, tracked.table_name);
  if target is not null then
    perform audit_private.detach_capture(tracked.id, target);
  end if;
  execute (select string_agg(format('drop function audit_private.%I()', x.function_name), '; ')
           from audit_private.expected_capture_triggers(tracked.id, true) x
           where to_regprocedure(format('audit_private.%I()', x.function_name)) is not null);
end
$$;

-- Stops auditing a table. Its audit rows stay; so does its registry row (marked disabled).
create or replace function audit.disable_tracking(target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  tracked_id integer;
begin
  select t.id into tracked_id
  from audit_private.tables t
  join pg_namespace n on n.nspname = t.schema_name
  join pg_class c on c.relnamespace = n.oid and c.relname = t.table_name
  where c.oid = target and t.enabled;
  if tracked_id is null then
    raise exception 'audit.disable_tracking: table % is not tracked', target using errcode = 'undefined_object';
  end if;
  perform audit_private.end_tracking(tracked_id);
end
$$;

comment on function audit.disable_tracking(regclass) is 'Stops auditing a table; its audit history is kept';

-- The same by name, for a tracked table that no longer exists (dropped where no event trigger saw it).
create or replace function audit.disable_tracking(schema_name text, table_name text)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  tracked_id integer;
begin
  select t.id into tracked_id from audit_private.tables t
  where t.schema_name = disable_tracking.schema_name and t.table_name = disable_tracking.table_name and t.enabled;
  if tracked_id is null then
    raise exception 'audit.disable_tracking: table %.% is not tracked', schema_name, table_name using errcode = 'undefined_object';
  end if;
  perform audit_private.end_tracking(tracked_id);
end
$$;

comment on function audit.disable_tracking(text, text) is 'Stops auditing a table given by schema and name (also one that no longer exists); its audit history is kept';

revoke all on function audit.enable_tracking(regclass, text[], text[], boolean, text[], text) from public;
revoke all on function audit.disable_tracking(regclass) from public;
revoke all on function audit.disable_tracking(text, text) from public;

-- What is tracked, and whether its capture triggers (4 on a table; on a partitioned one 8, on it and on each
-- of its partitions) are in place and enabled.
create or replace view audit.tracked_tables as
select
  t.schema_name,
  t.table_name,
  t.primary_key,
  t.excluded_columns,
  t.masked_columns,
  t.enabled,
  coalesce(tr.installed, 0) as triggers_installed,
  coalesce(tr.active, 0) as triggers_active,
  t.created_at,
  t.updated_at,
  coalesce(tr.expected, 0) as triggers_expected, -- new columns last: create or replace view can only add at the end
  t.encrypted_columns,
  t.subject_column
from audit_private.tables t
left join lateral (
  select count(*) filter (where s.installed)::integer as installed,
         count(*) filter (where s.installed and s.enabled)::integer as active,
         count(*)::integer as expected
  from audit_private.capture_tree_state(t.id, audit_private.table_by_name(t.schema_name, t.table_name)) s
) tr on true;

comment on view audit.tracked_tables is
  'Tables under audit (or once audited): options, and how many of their capture triggers (triggers_expected: 4 on a table, 8 on a partitioned table and on each partition) exist exactly as installed (function, events, transition tables) and are enabled';

-- Schema changes must not break capture: after ALTER TABLE on a tracked table, rewrite its capture so
-- new columns are compared and dropped ones forgotten. If an excluded or masked column disappeared
-- (renamed or dropped), its protection cannot follow it by name, so the ALTER TABLE is refused rather
-- than let a renamed secret into the trail.
create or replace function audit_private.refresh_tracking(target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  tracked audit_private.tables;
  missing text[];
begin
  -- A partition (created, attached, altered, renamed): its tracked table's capture covers it.
  if (select c.relispartition from pg_class c where c.oid = target) then
    target := pg_partition_root(target);
  end if;
  select t.* into tracked
  from audit_private.tables t
  join pg_class c on c.relname = t.table_name
  join pg_namespace n on n.oid = c.relnamespace and n.nspname = t.schema_name
  where c.oid = target and t.enabled;
  if tracked.id is null then
    -- Renamed (ALTER TABLE … RENAME TO or SET SCHEMA): its capture triggers still call the functions named
    -- after its registry id. The registry follows the table, and so does its history in audit.log.
    -- (A table holding capture triggers of a table that still exists under its name is a partition
    -- detached from it: refreshing that table, which the same command does, removes them.)
    select t.* into tracked
    from audit_private.tables t
    where t.enabled and audit_private.table_by_name(t.schema_name, t.table_name) is null and exists (
      select from pg_trigger g
      where g.tgrelid = target and g.tgfoid = to_regprocedure(format('audit_private.capture_insert_%s()', t.id)));
    if tracked.id is null then
      return;
    end if;
    if exists (select from audit_private.tables t, pg_class c join pg_namespace n on n.oid = c.relnamespace
               where c.oid = target and t.schema_name = n.nspname and t.table_name = c.relname) then
      raise exception 'cartop-audit: % was audited before under this name; a tracked table cannot take it', target
        using errcode = 'object_in_use',
              hint = 'Its history would merge with the earlier table''s. Choose another name.';
    end if;
    update audit_private.tables t
       set schema_name = n.nspname, table_name = c.relname, updated_at = now()
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = target and t.id = tracked.id
    returning t.* into tracked;
  end if;
  select array_agg(c) into missing
  from unnest(array_remove(tracked.excluded_columns || tracked.masked_columns || tracked.encrypted_columns || tracked.subject_column, null)) as c
  where not exists (select from pg_attribute a where a.attrelid = target and a.attname = c and a.attnum > 0 and not a.attisdropped);
  if missing is not null then
    raise exception 'cartop-audit: column(s) % of % are excluded or masked from the audit trail and would no longer be', array_to_string(missing, ', '), target
      using errcode = 'object_in_use',
            hint = format('In one transaction: select audit.disable_tracking(%L); your ALTER TABLE; select audit.enable_tracking(%L, ...) with the new column names.', target, target);
  end if;
  -- The same primary key: the registry row stays as it is (no updated_at bump on every deploy) and only capture
  -- that is not in place is rewritten. A changed key goes through enable_tracking, which checks it.
  if tracked.primary_key is not distinct from audit_private.primary_key_columns(target) then
    perform audit_private.attach_capture(tracked, target);
  else
    perform audit.enable_tracking(target, tracked.excluded_columns, tracked.masked_columns,
      encrypted_columns => tracked.encrypted_columns, subject_column => tracked.subject_column);
  end if;
end
$$;

-- A trigger created or renamed on a tracked table (ddl_command_end of CREATE TRIGGER / ALTER TRIGGER):
-- capture triggers are what audit_private.expected_capture_triggers says, under their own names. Renaming
-- one, replacing one with something else, or attaching a capture function under another name is refused,
-- so capture cannot be moved out of the way and dropped without trace.
create or replace function audit_private.check_trigger(trigger_oid oid)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  g pg_trigger;
  tracked_id integer;
begin
  select * into g from pg_trigger where oid = trigger_oid;
  select t.id into tracked_id
  from audit_private.tables t
  join pg_class c on c.relname = t.table_name
  join pg_namespace n on n.oid = c.relnamespace and n.nspname = t.schema_name
  where c.oid = coalesce(pg_partition_root(g.tgrelid), g.tgrelid) and t.enabled;
  if tracked_id is null then
    return; -- untracked tables are none of our business (audit.coverage reports look-alikes there)
  end if;
  if exists (select from audit_private.expected_capture_triggers(tracked_id, true) x
             where x.trigger_name <> g.tgname and g.tgfoid = to_regprocedure(format('audit_private.%I()', x.function_name)))
     or exists (select from audit_private.capture_trigger_state(tracked_id, g.tgrelid) s
                where s.trigger_name = g.tgname and not s.installed) then
    raise exception 'cartop-audit: trigger % on % is not the capture trigger of this tracked table; capture triggers cannot be renamed, replaced or copied',
      g.tgname, g.tgrelid::regclass
      using errcode = 'object_in_use',
            hint = format('To stop auditing the table: select audit.disable_tracking(%L)', g.tgrelid::regclass);
  end if;
end
$$;

create or replace function audit_private.tg__refresh_after_ddl()
  returns event_trigger
  language plpgsql
  -- Runs for every role's DDL: as its owner, so a role without access to audit_private can still ALTER its
  -- own (untracked or temporary) tables. It reads only catalogs and the registry, and regenerates capture
  -- for tracked tables; it evaluates nothing a table owner can define.
  security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  cmd record;
begin
  for cmd in
    select distinct classid, objid from pg_event_trigger_ddl_commands()
    where (classid = 'pg_class'::regclass and object_type in ('table', 'table column')) or classid = 'pg_trigger'::regclass
       or classid = 'pg_namespace'::regclass
  loop
    if cmd.classid = 'pg_trigger'::regclass then
      perform audit_private.check_trigger(cmd.objid);
    elsif cmd.classid = 'pg_namespace'::regclass then
      -- A schema renamed: its tracked tables' registry rows follow them (else the guards, which know a
      -- tracked table by its name, would not recognise it until the next enable_tracking).
      perform audit_private.refresh_tracking(c.oid::regclass)
      from pg_class c where c.relnamespace = cmd.objid and c.relkind in ('r', 'p') and not c.relispartition;
    elsif exists (select from pg_class c where c.oid = cmd.objid and c.relpersistence <> 't') then
      perform audit_private.refresh_tracking(cmd.objid::regclass);
    end if;
  end loop;
end
$$;

-- A capture trigger dropped from a table that is still tracked is put back at once, with a warning: the
-- way to stop auditing a table is audit.disable_tracking, which unregisters it first. Which triggers are
-- capture triggers is decided by what they are (audit_private.capture_trigger_state), not by the name the
-- dropped one had. A tracked table that is dropped (DROP TABLE, DROP SCHEMA … CASCADE) stops being
-- tracked, with a notice: its audit history stays.
-- A superuser can still write unaudited (session_replication_role = replica silences triggers and event
-- triggers alike, and can drop these): no check can see a write that never reached the trail. Superusers
-- are trusted (SECURITY.md); audit.coverage shows capture triggers left missing or disabled afterwards.
create or replace function audit_private.tg__capture_after_drop()
  returns event_trigger
  language plpgsql
  security definer -- as tg__refresh_after_ddl: every role's DROP passes through here
  set search_path = pg_catalog, pg_temp
as $$
declare
  dropped record;
  target regclass;
  tracked_id integer;
begin
  for dropped in
    select distinct o.object_type, o.address_names[1] as schema_name, o.address_names[2] as table_name
    from pg_event_trigger_dropped_objects() o
    -- Tables however they went (DROP SCHEMA … CASCADE drops them as dependents); triggers only when dropped
    -- themselves, not along with their table.
    where (o.object_type = 'table' and not o.is_temporary) or (o.object_type = 'trigger' and o.original)
  loop
    if dropped.object_type = 'trigger' then
      -- A trigger dropped from a partition: the partition's tracked table is the one to check.
      select n.nspname, c.relname into dropped.schema_name, dropped.table_name
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = coalesce(pg_partition_root(audit_private.table_by_name(dropped.schema_name, dropped.table_name)),
                             audit_private.table_by_name(dropped.schema_name, dropped.table_name));
    end if;
    select t.id into tracked_id from audit_private.tables t
    where t.enabled and t.schema_name = dropped.schema_name and t.table_name = dropped.table_name;
    continue when tracked_id is null;
    if dropped.object_type = 'table' then
      raise notice 'cartop-audit: tracked table %.% was dropped; tracking ended, its audit history is kept',
        dropped.schema_name, dropped.table_name;
      perform audit_private.end_tracking(tracked_id);
    else
      target := audit_private.table_by_name(dropped.schema_name, dropped.table_name);
      continue when target is null
        or not exists (select from audit_private.capture_tree_state(tracked_id, target) s where not s.installed);
      raise warning 'cartop-audit: a capture trigger of %, which is tracked, was dropped; capture was re-attached', target
        using hint = format('To stop auditing the table: select audit.disable_tracking(%L)', target);
      perform audit_private.refresh_tracking(target);
    end if;
  end loop;
end
$$;

-- The machinery changes capture: only its owner (and the event triggers, running as it) calls it.
revoke all on function audit_private.tg__refresh_after_ddl(), audit_private.tg__capture_after_drop(),
  audit_private.check_trigger(oid), audit_private.refresh_tracking(regclass), audit_private.end_tracking(integer),
  audit_private.attach_capture(audit_private.tables, regclass), audit_private.detach_capture(integer, regclass),
  audit_private.write_capture_functions(audit_private.tables, regclass),
  audit_private.write_capture_function(text, text) from public;

-- Event triggers need a superuser; on a managed server without one, capture still works but ALTER TABLE
-- on a tracked table must be followed by audit.enable_tracking (audit.tracked_tables and audit.coverage
-- show the state).
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    drop event trigger if exists audit_refresh_after_ddl;
    create event trigger audit_refresh_after_ddl on ddl_command_end
      -- CREATE TABLE: a partition created in a tracked table gets its capture triggers.
      when tag in ('ALTER TABLE', 'CREATE TABLE', 'CREATE TRIGGER', 'ALTER TRIGGER', 'ALTER SCHEMA')
      execute function audit_private.tg__refresh_after_ddl();
    drop event trigger if exists audit_capture_after_drop;
    create event trigger audit_capture_after_drop on sql_drop
      when tag in ('DROP TRIGGER', 'DROP TABLE', 'DROP SCHEMA')
      execute function audit_private.tg__capture_after_drop();
  else
    raise notice 'cartop-audit: not a superuser, so no event triggers; re-run audit.enable_tracking after ALTER TABLE on tracked tables';
  end if;
end
$$;

-- A migration that changes how capture is generated must reach the tables already tracked: regenerate
-- their capture functions (the same functions again when nothing changed). A table whose protected
-- columns went missing is left as it is, with a warning, rather than failing the migration.
do $$
declare
  target regclass;
begin
  for target in
    select audit_private.table_by_name(schema_name, table_name) from audit_private.tables
    where enabled and audit_private.table_by_name(schema_name, table_name) is not null
  loop
    begin
      perform audit_private.refresh_tracking(target);
    exception when object_in_use then
      raise warning 'cartop-audit: capture of % not regenerated: %', target, sqlerrm;
    end;
  end loop;
end
$$;

-- source: triggers/03_sensitive.sql
-- Sensitive values: a third protection beside excluded and masked columns. An encrypted column's values are
-- kept in the trail encrypted (AES-256-CBC, a random IV per value, pgcrypto) under a key per data subject (the
-- value of the column enable_tracking names as subject_column, e.g. the user id of the row). Members of
-- cartop_sensitive_reader (auditors, by default) read the plaintext in audit.log, audit.changes and row_as_of;
-- everyone else reads "[encrypted]", and, once audit.erase_subject destroyed the subject's key, everyone reads
-- "[erased]". The trail holds ciphertext only, so seals and archives cover it unchanged before and after an
-- erasure. In the trail a value reads "[encrypted:<key id>:<base64 of IV and ciphertext>]", the key id being
-- audit_private.subject_keys.id. Erasure reaches what the trail held until then; the subject's data in the
-- tracked tables is the application's to erase (a later write records the row as it is then, under a new key).

-- One key per data subject. Only its owner and cartop_capture (which makes keys on first use) touch it;
-- readers reach plaintext only through audit_private.revealed.
create table if not exists audit_private.subject_keys (
  id         bigint      generated always as identity primary key,
  subject    text        not null unique,
  key        bytea       not null,
  created_at timestamptz not null default now()
);
comment on table audit_private.subject_keys is
  'Encryption keys of encrypted columns, one per data subject; a deleted row is an erased subject (audit.erase_subject)';
revoke all on audit_private.subject_keys from public;
grant select, insert on audit_private.subject_keys to cartop_capture;
-- Readers decrypt with their own privilege on the keys: who may read plaintext is decided by the privileges of
-- the code running (current_user), never by settings, which say nothing when an owner's function runs inside
-- another role's session (an index expression during ANALYZE, a security definer function).
grant select on audit_private.subject_keys to cartop_sensitive_reader;
-- No statistics: a sample of keys in pg_statistic would outlive their erasure.
alter table audit_private.subject_keys alter column key set statistics 0;
alter table audit_private.subject_keys alter column subject set statistics 0;
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    delete from pg_statistic where starelid = 'audit_private.subject_keys'::regclass;
  end if;
end
$$;

-- Who erased which subject, when: the record of every erasure, append-only like the trail.
create table if not exists audit.erasures (
  id             bigint      generated always as identity primary key,
  subject        text        not null,
  erased_at      timestamptz not null default now(),
  erased_by      text        not null,
  keys_destroyed integer     not null
);
comment on table audit.erasures is 'Every audit.erase_subject: whose key was destroyed, by whom, when (append-only)';
revoke all on audit.erasures from public;
grant select on audit.erasures to cartop_auditor;
do $$
begin
  if not exists (select from pg_trigger where tgrelid = 'audit.erasures'::regclass and tgname = '_100_append_only') then
    create trigger _100_append_only before update or delete or truncate on audit.erasures
      for each statement execute function audit_private.tg__append_only();
  end if;
end
$$;

-- Whether a key id was erased (its key is gone): what everyone may know, to read "[erased]" rather than
-- "[encrypted]". Security definer: it reads only whether the row exists.
create or replace function audit_private.key_erased(key_id bigint)
  returns boolean
  language sql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
  select not exists (select from audit_private.subject_keys k where k.id = key_id)
$$;
revoke all on function audit_private.key_erased(bigint) from public;
grant execute on function audit_private.key_erased(bigint) to cartop_user, cartop_auditor, cartop_sensitive_reader;

-- The encryption and reading functions call pgcrypto wherever it is installed, schema-qualified (%I), with
-- exact argument types: no function a lower role could add is ever picked.
do $do$
declare
  crypto text := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pgcrypto');
begin
  -- A value as the trail keeps it: encrypted under the subject's key (made on first use). Runs inside capture,
  -- as cartop_capture. Without a subject (its column is null) there is no key to erase later: the value is
  -- kept as masked, never in the clear.
  execute format($sql$
    create or replace function audit_private.encrypted_value(for_subject text, plain jsonb)
      returns jsonb
      language plpgsql
      volatile
      set search_path = pg_catalog, pg_temp
    as $body$
    declare
      key_id bigint;
      key_bytes bytea;
      iv bytea := %1$I.gen_random_bytes(16);
    begin
      if for_subject is null or for_subject = '' then
        return audit_private.masked_value();
      end if;
      select k.id, k.key into key_id, key_bytes from audit_private.subject_keys k where k.subject = for_subject;
      if key_id is null then
        insert into audit_private.subject_keys (subject, key) values (for_subject, %1$I.gen_random_bytes(32))
        on conflict (subject) do nothing;
        select k.id, k.key into key_id, key_bytes from audit_private.subject_keys k where k.subject = for_subject;
      end if;
      return to_jsonb(format('[encrypted:%%s:%%s]', key_id, translate(encode(iv || %1$I.encrypt_iv(
        convert_to(plain::text, 'UTF8'), key_bytes, iv, 'aes-cbc/pad:pkcs'), 'base64'), E'\n', '')));
    end
    $body$
  $sql$, crypto);

  -- One stored value as the running code may read it: the plaintext (whoever can read the keys:
  -- cartop_sensitive_reader, while the key exists), "[erased]" (the key is gone), "[encrypted]" (everyone
  -- else). Security invoker: decrypting needs the caller's own privilege on the keys. A value that is not one
  -- of ours (text an application wrote into a column before it was encrypted) is returned as it is.
  execute format($sql$
    create or replace function audit_private.revealed_value(value jsonb)
      returns jsonb
      language plpgsql
      stable
      set search_path = pg_catalog, pg_temp
    as $body$
    declare
      parts text[] := regexp_match(value #>> '{}', '^\[encrypted:([0-9]{1,18}):([A-Za-z0-9+/=]+)\]$');
      key_bytes bytea;
    begin
      if jsonb_typeof(value) is distinct from 'string' or parts is null then
        return value;
      elsif audit_private.key_erased(parts[1]::bigint) then
        return to_jsonb('[erased]'::text);
      elsif not has_table_privilege('audit_private.subject_keys', 'select') then
        return to_jsonb('[encrypted]'::text);
      end if;
      select k.key into key_bytes from audit_private.subject_keys k where k.id = parts[1]::bigint;
      begin
        return convert_from(%1$I.decrypt_iv(substr(decode(parts[2], 'base64'), 17), key_bytes,
          substr(decode(parts[2], 'base64'), 1, 16), 'aes-cbc/pad:pkcs'), 'UTF8')::jsonb;
      exception when others then
        return value;
      end;
    end
    $body$
  $sql$, crypto);
end
$do$;
revoke all on function audit_private.revealed_value(jsonb) from public;
grant execute on function audit_private.revealed_value(jsonb) to cartop_user, cartop_auditor, cartop_sensitive_reader;
revoke all on function audit_private.encrypted_value(text, jsonb) from public;
grant execute on function audit_private.encrypted_value(text, jsonb) to cartop_capture;

-- A stored row (row_data or delta) of a table with encrypted columns, as the acting role may read it. Inlined
-- into the reading query (no SET, one expression without a subquery: PostgreSQL inlines no SQL function whose
-- body holds one), so a table without encrypted columns costs a CASE per row; revealed_columns, which does the
-- work, runs only for tables with encrypted columns. (With the subquery inline, every audit.log row paid up to
-- five SQL function calls: ~25 µs a row.)
create or replace function audit_private.revealed_columns(data jsonb, encrypted_columns text[])
  returns jsonb
  language sql
  stable
  parallel safe
as $$
  select data || coalesce((select pg_catalog.jsonb_object_agg(c, audit_private.revealed_value(data -> c))
                          from pg_catalog.unnest(encrypted_columns) c where data ? c), '{}')
$$;

create or replace function audit_private.revealed(data jsonb, encrypted_columns text[])
  returns jsonb
  language sql
  stable
  parallel safe
as $$
  select case when data is null or pg_catalog.cardinality(encrypted_columns) = 0 then data
    else audit_private.revealed_columns(data, encrypted_columns) end
$$;

-- Erasure: destroys the subject's key, so every value encrypted under it reads "[erased]" everywhere (archives
-- restored later included), and records who did it. Cannot be undone: the key was random and only here. The
-- deleted row lingers in the table file until VACUUM and in WAL and backups until they expire (SECURITY.md).
create or replace function audit.erase_subject(subject text)
  returns audit.erasures
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  destroyed integer;
  erasure audit.erasures;
begin
  if subject is null or subject = '' then
    raise exception 'audit.erase_subject: subject must be given' using errcode = 'null_value_not_allowed';
  end if;
  delete from audit_private.subject_keys k where k.subject = erase_subject.subject;
  get diagnostics destroyed = row_count;
  if destroyed = 0 then
    raise notice 'audit.erase_subject: no key for subject %: nothing of theirs is encrypted in the trail (or it was erased before)', subject;
  end if;
  insert into audit.erasures (subject, erased_by, keys_destroyed)
  values (subject, audit_private.acting_role(), destroyed)
  returning * into erasure;
  return erasure;
end
$$;
comment on function audit.erase_subject(text) is
  'Destroys the key of one data subject: its encrypted values read "[erased]" from now on, everywhere; recorded in audit.erasures';
revoke all on function audit.erase_subject(text) from public;

-- source: reading/01_log_view.sql
-- audit.log: the audit trail as readers expect it (full old and new rows, per-column changes, context),
-- computed from the compact storage. Only the columns a query names are computed.

-- {"column": {"old": ..., "new": ...}} for every column in delta.
create or replace function audit_private.changes_of(old_row jsonb, delta jsonb)
  returns jsonb
  language sql
  immutable
  parallel safe
as $$
  select jsonb_object_agg(d.key, jsonb_build_object('old', old_row -> d.key, 'new', d.value))
  from jsonb_each(delta) as d
$$;

-- The row after a change: the stored row for INSERT, the old row with the changed values for UPDATE. Each
-- argument appears once, so the function is inlined even when an argument is a function call (PostgreSQL
-- does not inline a function that would evaluate such an argument twice).
create or replace function audit_private.new_row(action "char", row_data jsonb, delta jsonb)
  returns jsonb
  language sql
  immutable
  parallel safe
as $$
  select case when action in ('I', 'U') then row_data || case when action = 'U' then delta else '{}' end end
$$;

create or replace function audit_private.action_name(action "char")
  returns text
  language sql
  immutable
  parallel safe
as $$
  select case action when 'I' then 'INSERT' when 'U' then 'UPDATE' when 'D' then 'DELETE' when 'T' then 'TRUNCATE' end
$$;

-- security_invoker: row-level security of the storage applies to whoever reads the view.
create or replace view audit.log with (security_invoker = true) as
select
  e.id,
  e.created_at,
  e.tx_id,
  t.schema_name                               as entity_schema,
  t.table_name                                as entity_name,
  e.entity_id,
  audit_private.action_name(e.action)         as action,
  case when e.action in ('U', 'D') then v.row_data end             as old_value,
  audit_private.new_row(e.action, v.row_data, v.delta) as new_value,
  case when e.action = 'U' then audit_private.changes_of(v.row_data, v.delta) end as changes,
  e.user_id,
  e.user_email,
  e.ip_address,
  e.user_agent,
  e.request_id,
  e.metadata,
  e.db_user,
  e.application_name,
  e.statement_number -- last: create or replace view can only add columns at the end
from audit_private.log_entries e
join audit_private.tables t on t.id = e.table_id
-- Encrypted columns as the reader may see them (triggers/03_sensitive.sql); other tables pass through.
cross join lateral (select audit_private.revealed(e.row_data, t.encrypted_columns) as row_data,
                           audit_private.revealed(e.delta, t.encrypted_columns) as delta) v;

comment on view audit.log is 'The audit trail: one row per changed row (one per TRUNCATE), append-only, partitioned by month';
comment on column audit.log.id is 'Unique; increasing within a transaction';
comment on column audit.log.created_at is 'When the statement that made the change started';
comment on column audit.log.tx_id is 'Id of the writing transaction (txid_current())';
comment on column audit.log.statement_number is 'Which statement of its transaction wrote the row: 1, 2, … (one MERGE or upsert is one statement); null before statement numbers existed';
comment on column audit.log.entity_schema is 'Schema of the audited table';
comment on column audit.log.entity_name is 'Name of the audited table';
comment on column audit.log.entity_id is 'Primary key as text; composite keys as a JSON array in key order, e.g. [42, "eu"]';
comment on column audit.log.action is 'INSERT, UPDATE, DELETE or TRUNCATE';
comment on column audit.log.old_value is 'The row before the change (UPDATE, DELETE); excluded columns absent, masked ones "[masked]"';
comment on column audit.log.new_value is 'The row after the change (INSERT, UPDATE)';
comment on column audit.log.changes is 'UPDATE only: {"column": {"old": ..., "new": ...}} for each changed column';
comment on column audit.log.user_id is 'Setting audit.user_id of the writing transaction';
comment on column audit.log.user_email is 'Setting audit.user_email';
comment on column audit.log.ip_address is 'Setting audit.ip_address';
comment on column audit.log.user_agent is 'Setting audit.user_agent';
comment on column audit.log.request_id is 'Setting audit.request_id';
comment on column audit.log.metadata is 'Setting audit.metadata (a JSON object); unparsable context values are kept under "invalid_context"';
comment on column audit.log.db_user is 'Database role that made the change (after SET ROLE)';
comment on column audit.log.application_name is 'application_name of the writing session';

-- Who may read: auditors everything, users their own activity, anonymous nothing. Users read the registry
-- only as far as audit.log needs it (which table an audit row belongs to), not its options.
grant select on audit.log to cartop_user, cartop_auditor;
grant select on audit.tracked_tables to cartop_auditor;
revoke select on audit.tracked_tables from cartop_user;
grant select on audit_private.log_entries, audit_private.tables to cartop_auditor;
grant select on audit_private.log_entries to cartop_user;
revoke select on audit_private.tables from cartop_user;
-- encrypted_columns: which values audit.log shows as the reader may see them (never their keys or plaintext).
grant select (id, schema_name, table_name, encrypted_columns) on audit_private.tables to cartop_user;
grant select on audit.partitions to cartop_auditor;

-- Capture (functions owned by cartop_capture) appends rows; nothing else (everything it needs to know about
-- its table is baked into it).
grant insert on audit_private.log_entries to cartop_capture;
grant usage on sequence audit_private.log_id_seq to cartop_capture;
revoke all on audit_private.tables from cartop_capture;

alter table audit_private.log_entries enable row level security;

drop policy if exists auditor_reads_all on audit_private.log_entries;
create policy auditor_reads_all on audit_private.log_entries
  for select to cartop_auditor using (true);

drop policy if exists capture_appends on audit_private.log_entries;
create policy capture_appends on audit_private.log_entries
  for insert to cartop_capture with check (true);

-- Whose rows "their own activity" is. Any session can set audit.user_id, so it is believed only from a
-- login that could read every row anyway: the API's login cartop_authenticator (a member of cartop_auditor,
-- which sets it from a verified JWT on every request), a superuser, or the owner of the trail (the
-- migrating role, which the API uses when AUTHENTICATOR_DATABASE_URL is unset). For such a login the
-- setting only narrows what it sees. Any other SQL login reads the rows recorded under its login name.
create or replace function audit_private.reader_user_id()
  returns text
  language sql
  stable
  parallel safe
  set search_path = pg_catalog, pg_temp
as $$
  -- Only while the code running is the session's own (current_user is the role it logged in as or switched to):
  -- not inside another owner's function running in the session (an index expression during ANALYZE, a
  -- security definer function), which could otherwise set audit.user_id to anyone's.
  select case when current_user::text = audit_private.acting_role()
               and (exists (select from pg_roles r where r.rolname = session_user and (r.rolsuper or r.rolbypassrls))
                or pg_has_role(session_user, 'cartop_auditor', 'MEMBER')
                or pg_has_role(session_user, (select c.relowner from pg_class c where c.oid = 'audit_private.log_entries'::regclass), 'MEMBER'))
              then audit_private.setting('audit.user_id')
              else session_user::text end
$$;

drop policy if exists user_reads_own on audit_private.log_entries;
create policy user_reads_own on audit_private.log_entries
  for select to cartop_user using (user_id = audit_private.reader_user_id());

-- source: reading/02_history.sql
-- Reading the trail: one entity's history and one user's activity, newest first. The GraphQL API exposes
-- both (entityHistory, userActivity); analysts can call them from SQL. security invoker: the caller's
-- row-level security applies (a user sees only their own rows). No `set search_path` (every name is
-- qualified): user_activity, a SQL function without SET clauses, is inlined, so the caller's time range
-- prunes partitions; entity_history's own arguments already name what its query reads.

-- entity_name is a table name (`products`) or schema-qualified (`app.products`).
-- PL/pgSQL, not SQL: a SQL function is inlined into the statement that calls it and planned again with it
-- every time (~1.5-5 ms over a year of partitions); a PL/pgSQL function's query is planned once per session.
create or replace function audit.entity_history(entity_name text, entity_id text)
  returns setof audit.log
  language plpgsql
  stable
as $$
begin
  return query
  select l.*
  from audit.log l
  where l.entity_id = entity_history.entity_id
    and (l.entity_name = entity_history.entity_name
         or l.entity_schema || '.' || l.entity_name = entity_history.entity_name)
  order by l.id desc;
end
$$;

comment on function audit.entity_history(text, text) is 'Audit rows of one entity (table name or schema.table, and primary key as text), newest first';

create or replace function audit.user_activity(user_id text, since timestamptz default null, until timestamptz default null)
  returns setof audit.log
  language sql
  stable
as $$
  select l.*
  from audit.log l
  where l.user_id = user_activity.user_id
    and (since is null or l.created_at >= since)
    and (until is null or l.created_at < until)
  order by l.id desc
$$;

comment on function audit.user_activity(text, timestamptz, timestamptz) is 'Audit rows written with the given audit.user_id, newest first, optionally within [since, until)';

grant execute on function audit.entity_history(text, text), audit.user_activity(text, timestamptz, timestamptz)
  to cartop_user, cartop_auditor;

-- source: reading/03_reporting.sql
-- Reporting for analysts: one row per changed field, daily activity, and a row's state at a past time.

-- One row per changed field of every UPDATE. (INSERTs and DELETEs are whole rows: see audit.log.)
create or replace view audit.changes with (security_invoker = true) as
select
  e.id                                   as log_id,
  e.created_at,
  t.schema_name                          as entity_schema,
  t.table_name                           as entity_name,
  e.entity_id,
  d.key                                  as field,
  v.row_data -> d.key                    as old_value,
  d.value                                as new_value,
  e.user_id,
  e.user_email,
  e.db_user,
  e.request_id
from audit_private.log_entries e
join audit_private.tables t on t.id = e.table_id
-- Encrypted columns as the reader may see them (triggers/03_sensitive.sql).
cross join lateral (select audit_private.revealed(e.row_data, t.encrypted_columns) as row_data,
                           audit_private.revealed(e.delta, t.encrypted_columns) as delta) v
cross join lateral jsonb_each(v.delta) as d
where e.action = 'U';

comment on view audit.changes is 'One row per changed field of every audited UPDATE: who changed which field of which entity, from what to what, and when';
comment on column audit.changes.log_id is 'audit.log id of the UPDATE';
comment on column audit.changes.created_at is 'When the statement that made the change started';
comment on column audit.changes.entity_schema is 'Schema of the audited table';
comment on column audit.changes.entity_name is 'Name of the audited table';
comment on column audit.changes.entity_id is 'Primary key (after the change) as text';
comment on column audit.changes.field is 'Column that changed';
comment on column audit.changes.old_value is 'Value before (JSON; "[masked]" for masked columns)';
comment on column audit.changes.new_value is 'Value after (JSON; "[masked]" for masked columns)';
comment on column audit.changes.user_id is 'audit.user_id of the writing transaction';
comment on column audit.changes.user_email is 'audit.user_email of the writing transaction';
comment on column audit.changes.db_user is 'Database role that made the change';
comment on column audit.changes.request_id is 'audit.request_id of the writing transaction';

-- Counts per UTC day × table × action × user. Finished days are summarised once into a small table by the
-- worker (audit.summarize_activity, hourly, and before archiving); the view adds the days not yet
-- summarised (today) from the trail itself, pruned to their partition at run time. So the view is always
-- current, a quarter reads a few thousand summary rows instead of millions of audit rows, and the counts
-- of archived months stay available after their rows leave the database.
create table if not exists audit_private.activity_summary (
  day      date    not null,
  table_id integer not null,
  action   "char"  not null,
  user_id  text,
  changes  bigint  not null,
  constraint activity_summary_key unique nulls not distinct (day, table_id, action, user_id)
);

create table if not exists audit_private.activity_summary_state (
  singleton       boolean primary key default true check (singleton),
  summarized_until date   not null
);

comment on table audit_private.activity_summary is 'Audit rows per finished UTC day, table, action and user (see audit.activity_daily)';

-- The first instant not yet summarised (UTC), or -infinity before the first summary.
create or replace function audit_private.activity_live_from()
  returns timestamptz
  language sql
  stable
  parallel safe
as $$
  select coalesce((select summarized_until::timestamp at time zone 'UTC' from audit_private.activity_summary_state), '-infinity')
$$;

-- Summarises every finished day (before today, UTC) not summarised yet; returns the summary rows written.
create or replace function audit.summarize_activity()
  returns integer
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  live_from timestamptz;
  today date := (now() at time zone 'UTC')::date;
  added integer;
begin
  -- A table lock, not an advisory lock (any role could take that key and stall the summary).
  lock table audit_private.activity_summary_state in share row exclusive mode;
  live_from := audit_private.activity_live_from();
  if live_from >= (today::timestamp at time zone 'UTC') then
    return 0;
  end if;
  insert into audit_private.activity_summary (day, table_id, action, user_id, changes)
  select (e.created_at at time zone 'UTC')::date, e.table_id, e.action, e.user_id, count(*)
  from audit_private.log_entries e
  where e.created_at >= live_from and e.created_at < (today::timestamp at time zone 'UTC')
  group by 1, 2, 3, 4
  on conflict on constraint activity_summary_key do update set changes = excluded.changes;
  get diagnostics added = row_count;
  insert into audit_private.activity_summary_state (summarized_until) values (today)
  on conflict (singleton) do update set summarized_until = excluded.summarized_until;
  return added;
end
$$;

comment on function audit.summarize_activity() is 'Summarises finished days into audit.activity_daily''s summary (run hourly by the worker); returns summary rows written';

create or replace view audit.activity_daily with (security_invoker = true) as
select s.day, t.schema_name as entity_schema, t.table_name as entity_name,
       audit_private.action_name(s.action) as action, s.user_id, s.changes
from audit_private.activity_summary s
join audit_private.tables t on t.id = s.table_id
union all
select (e.created_at at time zone 'UTC')::date, t.schema_name, t.table_name,
       audit_private.action_name(e.action), e.user_id, count(*)
from audit_private.log_entries e
join audit_private.tables t on t.id = e.table_id
where e.created_at >= audit_private.activity_live_from()
group by 1, 2, 3, 4, 5;

comment on view audit.activity_daily is 'Audit rows per UTC day, table, action and user: finished days from a summary the worker keeps, today live from the trail';
comment on column audit.activity_daily.day is 'UTC day of created_at';
comment on column audit.activity_daily.entity_schema is 'Schema of the audited table';
comment on column audit.activity_daily.entity_name is 'Name of the audited table';
comment on column audit.activity_daily.action is 'INSERT, UPDATE, DELETE or TRUNCATE';
comment on column audit.activity_daily.user_id is 'audit.user_id (null: no user in context, e.g. a DBA in psql)';
comment on column audit.activity_daily.changes is 'Number of audit rows';

-- Ids of the tracked tables a name refers to: `products` (any schema) or `app.products`.
create or replace function audit_private.table_ids(entity_name text)
  returns integer[]
  language sql
  stable
  parallel safe
as $$
  select coalesce(array_agg(t.id), '{}') from audit_private.tables t
  where t.table_name = entity_name or t.schema_name || '.' || t.table_name = entity_name
$$;

-- The row as it was at `at` (inclusive), or null if it did not exist then: not yet inserted, deleted,
-- truncated, or its primary key had been changed to another value. entity_name as in entity_history.
-- PL/pgSQL, not SQL: a SQL function's query is planned again by every statement that calls it (~5 ms over
-- a year of partitions), a PL/pgSQL function's once per session.
create or replace function audit.row_as_of(entity_name text, entity_id text, at timestamptz)
  returns jsonb
  language plpgsql
  stable
as $$
begin
  -- The entity's last event at `at`, then its state: the state is built (decrypted, old row || delta) for that
  -- one row only, not for every event before it (4x faster on a 50-event history).
  return (with last_event as (
    select * from (
      -- Changes to this entity (an UPDATE that gave another row this key included).
      select e.created_at, e.id, e.action, e.table_id, e.row_data, e.delta
      from audit_private.log_entries e
      where e.entity_id = row_as_of.entity_id and e.table_id = any (audit_private.table_ids(row_as_of.entity_name))
        and e.created_at <= at
      union all
      -- An UPDATE that moved this key to another value: the row no longer exists under it.
      select e.created_at, e.id, null, e.table_id, null, null
      from audit_private.log_entries e
      where e.old_entity_id = row_as_of.entity_id and e.table_id = any (audit_private.table_ids(row_as_of.entity_name))
        and e.created_at <= at
      union all
      select e.created_at, e.id, null, e.table_id, null, null
      from audit_private.log_entries e
      -- TRUNCATEs, the only rows without an entity id: found through the entity index.
      where e.entity_id is null and e.action = 'T' and e.table_id = any (audit_private.table_ids(row_as_of.entity_name))
        and e.created_at <= at
    ) events
    order by created_at desc, id desc
    limit 1
  )
  select case when l.action in ('I', 'U') then audit_private.new_row(l.action,
           audit_private.revealed(l.row_data, t.encrypted_columns), audit_private.revealed(l.delta, t.encrypted_columns)) end
  from last_event l
  join audit_private.tables t on t.id = l.table_id);
end
$$;

comment on function audit.row_as_of(text, text, timestamptz) is 'The audited row (as JSON) at a point in time, or null if it did not exist then';

grant select on audit.changes to cartop_user, cartop_auditor;
-- Counts cover everybody's activity: auditors only.
grant select on audit.activity_daily, audit_private.activity_summary, audit_private.activity_summary_state to cartop_auditor;
grant execute on function audit.row_as_of(text, text, timestamptz) to cartop_user, cartop_auditor;

-- A row of the trail (old_value, new_value, row_as_of) back as a row of its table, exactly: decodes the
-- (In audit_private: PostGraphile cannot expose an anyelement function, and it is SQL-only anyway.)
-- mapping of audit_private.value_kind (README "Values in the trail"). Excluded columns come back null,
-- masked ones fail to decode unless text-like. Decode with the table's row type as it was when the row was
-- written. security invoker: the caller's casts and domain checks are the caller's business.
create or replace function audit_private.row_from_trail(row_type anyelement, trail jsonb)
  returns anyelement
  language plpgsql
  stable
  set search_path = pg_catalog, pg_temp
as $$
declare
  type_relid oid := (select typrelid from pg_type where oid = pg_typeof(row_type));
  fields text;
  result alias for $0;
begin
  if type_relid is null or type_relid = 0 then
    raise exception 'audit_private.row_from_trail: % is not a table''s row type', pg_typeof(row_type)
      using errcode = 'wrong_object_type', hint = 'Pass null::schema.table as the first argument.';
  end if;
  -- json and jsonb values need their own decoding; every other value is what jsonb_populate_record reads
  -- (numbers and booleans, JSON arrays, and strings through the type's input function).
  select string_agg(case
           when audit_private.base_type(a.atttypid) = 'json'::regtype then format('($2 ->> %L)::%s', a.attname, format_type(a.atttypid, a.atttypmod))
           when audit_private.base_type(a.atttypid) = 'jsonb'::regtype then format(
             'case jsonb_typeof($2 -> %1$L) when ''string'' then ($2 ->> %1$L)::jsonb when ''null'' then null else $2 -> %1$L end::%2$s',
             a.attname, format_type(a.atttypid, a.atttypmod))
           else format('r.%I', a.attname) end, ', ' order by a.attnum)
    into fields
  from pg_attribute a where a.attrelid = type_relid and a.attnum > 0 and not a.attisdropped;
  execute format('select %s from jsonb_populate_record($1, $2 - %L::text[]) r', fields,
                 (select coalesce(array_agg(a.attname::text), '{}') from pg_attribute a
                  where a.attrelid = type_relid and a.attnum > 0 and not a.attisdropped
                    and audit_private.base_type(a.atttypid) in ('json'::regtype, 'jsonb'::regtype)))
    into result using row_type, trail;
  return result;
end
$$;

comment on function audit_private.row_from_trail(anyelement, jsonb) is 'A row of the trail (old_value, new_value, row_as_of) as a row of its table: audit_private.row_from_trail(null::app.products, new_value)';

grant execute on function audit_private.row_from_trail(anyelement, jsonb) to cartop_user, cartop_auditor;

-- source: reading/04_revert.sql
-- Undo: put rows back the way an audit row, a statement, a transaction or a request found them, and the
-- net change of a table or a row between two instants (the read side of "what would a revert do").
--
-- Built only on the public read contract (audit.log, and of the registry what audit_private.revert_options
-- gives), not on how capture stores rows.
-- Reverts run as the calling role (security invoker): its grants and row-level security decide what it may
-- read in the trail and what it may write, and its writes go through the normal capture, so a revert is
-- itself audited (metadata {"revert_of": …}) and can be reverted in turn.

-- The primary key of a row, as audit.log.entity_id spells it (plain text for one column, a JSON array for
-- a composite key). Null when the row is null.
-- What a revert needs of the registry: each tracked table's key and protected column names (never values).
-- audit.tracked_tables is for auditors; users who revert their own changes need these three, so they read
-- them here (security definer: it reads only the registry, runs nothing a table owner defines).
create or replace function audit_private.revert_options()
  returns table (schema_name text, table_name text, primary_key text[], excluded_columns text[], masked_columns text[])
  language sql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
  -- Encrypted columns count as masked here: a revert never writes a value back from the trail that its
  -- caller may not read, nor "[encrypted]" / "[erased]" into the table.
  select t.schema_name, t.table_name, t.primary_key, t.excluded_columns, t.masked_columns || t.encrypted_columns
  from audit_private.tables t
  where t.enabled
$$;
revoke all on function audit_private.revert_options() from public;
grant execute on function audit_private.revert_options() to cartop_user, cartop_auditor;

create or replace function audit_private.entity_id_of(primary_key text[], row_value jsonb)
  returns text
  language sql
  immutable
  parallel safe
as $$
  select case
    when row_value is null then null
    when cardinality(primary_key) = 1 then row_value ->> primary_key[1]
    else (select jsonb_agg(row_value -> k order by ord) from unnest(primary_key) with ordinality as u(k, ord))::text
  end
$$;

-- A row as the trail would record it now: excluded columns removed, masked ones replaced.
create or replace function audit_private.audited_form(row_value jsonb, excluded_columns text[], masked_columns text[])
  returns jsonb
  language sql
  immutable
  parallel safe
as $$
  select (row_value - excluded_columns) || audit_private.masked_object(array(select c from unnest(masked_columns) c where row_value ? c))
$$;

-- Columns of `expected` whose value in `actual` differs (null when none): how a row moved on since.
create or replace function audit_private.differing_columns(expected jsonb, actual jsonb)
  returns text[]
  language sql
  immutable
  parallel safe
as $$
  select array_agg(e.key order by e.key) from jsonb_each(expected) e where actual -> e.key is distinct from e.value
$$;

-- What one revert step did (or, in a dry run, would do).
do $$
begin
  if not exists (select from pg_type where typname = 'revert_step' and typnamespace = 'audit'::regnamespace) then
    create type audit.revert_step as (
      step          integer,
      log_id        bigint,
      tx_id         bigint,
      statement_number integer,
      entity_schema text,
      entity_name   text,
      entity_id     text,
      action        text,
      revert_action text,
      statement     text,
      current_value jsonb,
      reverted_value jsonb,
      problem       text,
      problem_code  text,
      applied       boolean
    );
  end if;
end
$$;

comment on type audit.revert_step is 'One row a revert touches (or would): the audit row it undoes, the SQL it runs, the row now and after, and any problem';
comment on column audit.revert_step.step is 'Order of execution (1 first): the reverse of the order the changes were made';
comment on column audit.revert_step.log_id is 'audit.log id of the change undone';
comment on column audit.revert_step.action is 'What the change did: INSERT, UPDATE, DELETE or TRUNCATE';
comment on column audit.revert_step.revert_action is 'What undoing it does: DELETE, UPDATE or INSERT';
comment on column audit.revert_step.statement is 'The exact SQL run for this step (values as literals)';
comment on column audit.revert_step.current_value is 'The row as it is before this step (audited form; null if absent)';
comment on column audit.revert_step.reverted_value is 'The row as this step leaves it (audited form; null when deleted)';
comment on column audit.revert_step.problem is 'Why this step cannot be applied (a conflict or an unrevertable change); null when it can';
comment on column audit.revert_step.problem_code is 'SQLSTATE of the problem: 55000 for a conflict (on_conflict => ''skip'' skips it); any other code refuses the revert';
comment on column audit.revert_step.applied is 'Whether the step ran and was kept (false in a dry run and for skipped steps)';

-- How many foreign keys deep a table is: 0 when it references no other table, else one more than the
-- deepest table it references (self-references and cycles ignored). Referenced tables sort first.
create or replace function audit_private.foreign_key_depth(rel regclass)
  returns integer
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  with recursive chain (relid, depth, path) as (
    select rel::oid, 0, array[rel::oid]
    union all
    select c.confrelid, chain.depth + 1, chain.path || c.confrelid
    from chain join pg_constraint c on c.conrelid = chain.relid and c.contype = 'f' and c.confrelid <> all (chain.path)
  )
  select max(depth) from chain
$$;

-- SQL matching the row whose key is in `key_value`: "(k1, k2) = (select r.k1, r.k2 from
-- audit_private.row_from_trail(null::t, '{…}') r)" (typed by the table, so any key type compares as itself).
create or replace function audit_private.key_match_sql(rel regclass, key_columns text, key_fields text, key_value jsonb)
  returns text
  language sql
  immutable
as $$
  select format('(%s) = (select %s from audit_private.row_from_trail(null::%s, %L) r)', key_columns, key_fields, rel, key_value)
$$;

-- One step of a revert: undoes the change of one audit row if it can, else says why not (problem_code
-- 55000 for a conflict, another SQLSTATE for a change that cannot be undone exactly). `undone` holds the
-- ids of the later changes this revert has undone already, and `mark` the revert_of its own audit rows
-- carry (neither is a conflict). Runs as the caller.
create or replace function audit_private.revert_one(target audit.log, step integer, undone bigint[], mark jsonb)
  returns audit.revert_step
  language plpgsql
  volatile
  security invoker
  set search_path = pg_catalog, pg_temp
as $$
declare
  s audit.revert_step := row(step, target.id, target.tx_id, target.statement_number, target.entity_schema,
    target.entity_name, target.entity_id, target.action, null, null, null, null, null, null, false)::audit.revert_step;
  tracked record;
  rel regclass := audit_private.table_by_name(target.entity_schema, target.entity_name);
  key_columns text;      -- "k1, k2", quoted
  key_fields text;       -- "r.k1, r.k2", quoted
  key_now jsonb;         -- the key the change left the row under
  old_key jsonb;         -- the key it found the row under
  cur jsonb;
  later bigint;
  cols text[];
  bad text[];
  differing text[];
begin
  if target.action = 'TRUNCATE' then
    s.problem := format('a TRUNCATE of %I.%I cannot be reverted: the trail holds no rows for it', target.entity_schema, target.entity_name);
    s.problem_code := '0A000';
    return s;
  elsif rel is null then
    s.problem := format('table %I.%I no longer exists', target.entity_schema, target.entity_name);
    s.problem_code := '42P01';
    return s;
  end if;
  select t.* into tracked from audit_private.revert_options() t
   where t.schema_name = target.entity_schema and t.table_name = target.entity_name;
  -- Built in one format() pass each time (never a format string made of names: a column named "a%L"
  -- would turn into SQL).
  key_columns := (select string_agg(format('%I', k), ', ') from unnest(tracked.primary_key) k);
  key_fields := (select string_agg(format('r.%I', k), ', ') from unnest(tracked.primary_key) k);
  -- Only the key columns: other values (a masked "[masked]") need not fit the column types.
  key_now := (select jsonb_object_agg(k, coalesce(target.new_value, target.old_value) -> k) from unnest(tracked.primary_key) k);
  old_key := (select jsonb_object_agg(k, target.old_value -> k) from unnest(tracked.primary_key) k);

  -- The row as it is now under that key, locked so nothing moves it before the step runs.
  execute format('select to_jsonb(t) from %s t where ', rel) || audit_private.key_match_sql(rel, key_columns, key_fields, key_now) || ' for update' into cur;
  s.current_value := audit_private.audited_form(cur, tracked.excluded_columns, tracked.masked_columns);

  if target.action = 'INSERT' then
    s.revert_action := 'DELETE';
    s.statement := format('delete from %s where ', rel) || audit_private.key_match_sql(rel, key_columns, key_fields, key_now);
  elsif target.action = 'DELETE' then
    s.revert_action := 'INSERT';
    s.reverted_value := target.old_value;
    -- Generated columns are computed again; identity columns get their old value back.
    select array_agg(a.attname::text order by a.attnum) into cols
      from pg_attribute a
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' and target.old_value ? a.attname;
    s.statement := format('insert into %s (%s) overriding system value select %s from audit_private.row_from_trail(null::%s, %L) r',
      rel, (select string_agg(format('%I', c), ', ') from unnest(cols) c),
      (select string_agg(format('r.%I', c), ', ') from unnest(cols) c), rel, target.old_value);
    bad := array(select c from unnest(tracked.excluded_columns || tracked.masked_columns) c
                  where exists (select from pg_attribute a where a.attrelid = rel and a.attname = c and a.attnum > 0 and not a.attisdropped));
    if cardinality(bad) > 0 then
      s.problem := format('the deleted row cannot be restored exactly: the trail does not hold its column(s) %s (excluded, masked or encrypted)', array_to_string(bad, ', '));
      s.problem_code := '0A000';
      return s;
    end if;
  else
    s.revert_action := 'UPDATE';
    s.reverted_value := coalesce(s.current_value, target.new_value)
      || (select jsonb_object_agg(c.key, c.value -> 'old') from jsonb_each(target.changes) c);
    bad := array(select c.key from jsonb_each(target.changes) c where c.key = any (tracked.masked_columns));
    if cardinality(bad) > 0 then
      s.problem := format('masked or encrypted column(s) %s changed: a revert does not write their old value back', array_to_string(bad, ', '));
      s.problem_code := '0A000';
      return s;
    end if;
    bad := array(select a.attname::text from pg_attribute a
                  where a.attrelid = rel and a.attnum > 0 and a.attidentity = 'a' and target.changes ? a.attname);
    if cardinality(bad) > 0 then
      s.problem := format('GENERATED ALWAYS identity column(s) %s changed; an UPDATE cannot set them back', array_to_string(bad, ', '));
      s.problem_code := '428C9';
      return s;
    end if;
    -- Generated columns follow their inputs.
    select array_agg(a.attname::text order by a.attnum) into cols
      from pg_attribute a
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped and a.attgenerated = '' and target.changes ? a.attname;
    s.statement := format('update %s set (%s) = (select %s from audit_private.row_from_trail(null::%s, %L) r) where ',
      rel, (select string_agg(format('%I', c), ', ') from unnest(cols) c),
      (select string_agg(format('r.%I', c), ', ') from unnest(cols) c), rel,
      (select jsonb_object_agg(c.key, c.value -> 'old') from jsonb_each(target.changes) c)) || audit_private.key_match_sql(rel, key_columns, key_fields, key_now);
  end if;

  select l.id into later from audit.log l
   where l.entity_schema = target.entity_schema and l.entity_name = target.entity_name
     -- Later in the row's history: ids increase only within a session, statement times across them.
     and (l.created_at > target.created_at or (l.created_at = target.created_at and l.id > target.id))
     and (l.entity_id = target.entity_id or l.action = 'TRUNCATE') and l.id <> all (undone)
     and not (l.tx_id = txid_current() and l.metadata -> 'revert_of' = mark)
   order by l.created_at, l.id
   limit 1;
  -- Conflicts: the row must be as the change left it. Later changes that cancelled out (a change and its
  -- revert) are not conflicts; when the row did move on, the trail names the change that moved it.
  differing := audit_private.differing_columns(target.new_value, s.current_value);
  if target.action = 'DELETE' and cur is not null then
    s.problem := format('key %s is taken since', target.entity_id);
  elsif target.action <> 'DELETE' and cur is null then
    s.problem := format('the row no longer exists under key %s', target.entity_id);
  elsif target.action <> 'DELETE' and differing is not null then
    s.problem := format('the row differs since in column(s) %s', array_to_string(differing, ', '));
  elsif target.action = 'UPDATE' and key_now <> old_key then
    -- The change gave the row a new key: moving it back needs the old key free.
    execute format('select to_jsonb(t) from %s t where ', rel) || audit_private.key_match_sql(rel, key_columns, key_fields, old_key) into cur;
    if cur is not null then
      s.problem := format('key %s is taken since', audit_private.entity_id_of(tracked.primary_key, target.old_value));
    end if;
  end if;
  if s.problem is not null and later is not null then
    s.problem := format('changed since by audit row %s', later);
  end if;
  if s.problem is not null then
    s.problem_code := '55000';
    return s;
  end if;

  execute s.statement;
  if target.action = 'INSERT' then
    s.reverted_value := null;
  end if;
  s.applied := true;
  return s;
end
$$;

-- Undo changes recorded in the trail. Give exactly one of log_id, tx_id (optionally with statement_number)
-- or request_id. Steps run newest change first (so foreign keys hold as they held for the changes). A dry
-- run (the default) runs every step inside a subtransaction that is rolled back, so the preview is exactly
-- what applying would do; apply with the same arguments and dry_run => false. A conflict (a later change
-- to the row, a row gone, a key taken since) refuses the whole revert (errcode 55000) unless on_conflict =>
-- 'skip', which leaves those rows as they are and reverts the rest. A change that cannot be undone exactly
-- (a TRUNCATE, a deleted row with excluded or masked columns, a changed masked column, a GENERATED ALWAYS
-- identity changed by an UPDATE) always refuses, with its own errcode. The revert's audit rows carry
-- metadata {"revert_of": {…the arguments…}} merged into the caller's.
create or replace function audit.revert(
  log_id bigint default null,
  tx_id bigint default null,
  statement_number integer default null,
  request_id text default null,
  dry_run boolean default true,
  on_conflict text default 'refuse'
)
  returns setof audit.revert_step
  language plpgsql
  volatile
  security invoker
  set search_path = pg_catalog, pg_temp
as $$
declare
  selector jsonb;
  target audit.log;
  s audit.revert_step;
  steps audit.revert_step[] := '{}';
  undone bigint[] := '{}';
  previous_metadata text := audit_private.setting('audit.metadata');
  conflicts text[] := '{}';
  refusals text[] := '{}';
  refusal_code text;
begin
  if num_nonnulls(log_id, tx_id, request_id) <> 1 or (statement_number is not null and tx_id is null) then
    raise exception 'audit.revert: give exactly one of log_id, tx_id or request_id (statement_number only with tx_id)'
      using errcode = '22023',
            hint = 'e.g. select * from audit.revert(tx_id => 123456, statement_number => 2)';
  end if;
  if dry_run is null or on_conflict is null or on_conflict not in ('refuse', 'skip') then
    raise exception 'audit.revert: on_conflict must be ''refuse'' or ''skip'' and dry_run true or false'
      using errcode = '22023';
  end if;
  selector := jsonb_strip_nulls(jsonb_build_object('log_id', log_id, 'tx_id', tx_id,
    'statement_number', statement_number, 'request_id', request_id));

  begin
    perform set_config('audit.metadata', (coalesce((audit_private.current_context()).metadata, '{}')
      || jsonb_build_object('revert_of', selector))::text, true);
    for target in
      with chosen as (
        select l.*, case l.action when 'INSERT' then 'D' when 'DELETE' then 'I' else 'U' end as kind
        from audit.log l
        where (revert.log_id is null or l.id = revert.log_id)
          and (revert.tx_id is null or l.tx_id = revert.tx_id)
          and (revert.statement_number is null or l.statement_number = revert.statement_number)
          and (revert.request_id is null or l.request_id = revert.request_id)
      ),
      depths as (
        select c.entity_schema, c.entity_name,
               audit_private.foreign_key_depth(audit_private.table_by_name(c.entity_schema, c.entity_name)) as depth
        from (select distinct entity_schema, entity_name from chosen) c
      ),
      runs as (
        select c.*, count(*) filter (where c.kind is distinct from c.previous_kind) over (order by c.created_at desc, c.id desc) as run
        from (select c.*, lag(c.kind) over (order by c.created_at desc, c.id desc) as previous_kind from chosen c) c
      )
      -- Newest first; among consecutive re-inserts the referenced tables first, among consecutive deletes
      -- the referencing ones first (a cascade is captured after the DELETE that caused it).
      select r.id, r.created_at, r.tx_id, r.entity_schema, r.entity_name, r.entity_id, r.action, r.old_value, r.new_value,
             r.changes, r.user_id, r.user_email, r.ip_address, r.user_agent, r.request_id, r.metadata, r.db_user,
             r.application_name, r.statement_number
      from runs r
      left join depths d on d.entity_schema = r.entity_schema and d.entity_name = r.entity_name
      order by r.run, case r.kind when 'I' then coalesce(d.depth, 0) when 'D' then -coalesce(d.depth, 0) else 0 end,
               r.created_at desc, r.id desc
    loop
      if dry_run then
        -- A step that fails (permission denied, a constraint) is reported, and the preview goes on.
        begin
          s := audit_private.revert_one(target, cardinality(steps) + 1, undone, selector);
        exception when others then
          s := row(cardinality(steps) + 1, target.id, target.tx_id, target.statement_number, target.entity_schema,
            target.entity_name, target.entity_id, target.action, null, null, null, null, sqlerrm, sqlstate, false)::audit.revert_step;
          refusals := refusals || format('audit row %s: %s', target.id, sqlerrm);
        end;
      else
        s := audit_private.revert_one(target, cardinality(steps) + 1, undone, selector);
      end if;
      if s.problem_code = '55000' then
        conflicts := conflicts || format('audit row %s (%I.%I %s): %s', target.id, target.entity_schema, target.entity_name, target.entity_id, s.problem);
      elsif s.problem_code is not null then
        refusals := refusals || format('audit row %s (%I.%I %s): %s', target.id, target.entity_schema, target.entity_name, target.entity_id, s.problem);
        refusal_code := coalesce(refusal_code, s.problem_code);
      end if;
      if s.applied then
        undone := undone || target.id;
      end if;
      s.applied := s.applied and not dry_run;
      steps := steps || s;
    end loop;

    if cardinality(steps) = 0 then
      raise exception 'audit.revert: no audit rows match %', selector
        using errcode = 'P0002',
              hint = 'Check the ids in audit.log; a user sees (and may revert) only their own audit rows.';
    end if;
    perform set_config('audit.metadata', coalesce(previous_metadata, ''), true);
    if not dry_run and cardinality(refusals) > 0 then
      raise exception 'audit.revert: % change(s) cannot be reverted: %', cardinality(refusals), array_to_string(refusals, '; ')
        using errcode = refusal_code,
              hint = 'Nothing was changed. Revert a narrower set (statement_number, log_id), or restore those rows by hand.';
    end if;
    if not dry_run and cardinality(conflicts) > 0 and on_conflict = 'refuse' then
      raise exception 'audit.revert: % conflict(s): %', cardinality(conflicts), array_to_string(conflicts, '; ')
        using errcode = '55000',
              hint = 'Nothing was changed. Run it as a dry run to see each row, or pass on_conflict => ''skip'' to revert the rest.';
    end if;
    if dry_run then
      raise exception using errcode = 'CAR01'; -- our own SQLSTATE: roll the dry run back
    end if;
  exception when sqlstate 'CAR01' then
    null; -- everything the dry run did is undone with this block
  end;
  return query select * from unnest(steps);
end
$$;

comment on function audit.revert(bigint, bigint, integer, text, boolean, text) is
  'Undoes the changes of one audit row, one statement (tx_id + statement_number), one transaction or one request; dry run by default (returns the steps); runs as the caller, audited with metadata revert_of';

-- The consolidated change of a table (or one row) between two instants: for each row changed in
-- (since, until], its state at since and at until, and what turns one into the other. Edits that cancel
-- out (inserted then deleted, changed then changed back) do not appear. A key change is the old key
-- deleted and the new key inserted. TRUNCATEs in the interval are listed as their own rows (entity_id
-- null): the trail holds no row data for them.
create or replace function audit.net_change(entity_name text, since timestamptz, until timestamptz default now(), entity_id text default null)
  returns table (
    entity_schema text,
    entity_name   text,
    entity_id     text,
    action        text,
    old_value     jsonb,
    new_value     jsonb,
    changes       jsonb,
    first_log_id  bigint,
    last_log_id   bigint,
    change_count  integer
  )
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  with tracked as (
    select t.schema_name, t.table_name, t.primary_key from audit_private.revert_options() t
    where t.table_name = net_change.entity_name or t.schema_name || '.' || t.table_name = net_change.entity_name
  ),
  events as (
    -- Each change seen from the key it left the row under (after) and the key it found it under (before).
    select l.id, l.created_at, l.entity_schema, l.entity_name, k.key_text, k.before, k.after
    from audit.log l
    join tracked t on t.schema_name = l.entity_schema and t.table_name = l.entity_name
    cross join lateral (
      select audit_private.entity_id_of(t.primary_key, l.old_value) as old_key,
             audit_private.entity_id_of(t.primary_key, l.new_value) as new_key
    ) keys
    cross join lateral (
      select keys.new_key as key_text, case when keys.old_key = keys.new_key then l.old_value end as before, l.new_value as after
      where keys.new_key is not null
      union all
      select keys.old_key, l.old_value, case when keys.old_key = keys.new_key then l.new_value end
      where keys.old_key is not null and keys.old_key is distinct from keys.new_key
    ) k
    where l.created_at > net_change.since and l.created_at <= net_change.until and l.action <> 'TRUNCATE'
      and (net_change.entity_id is null or k.key_text = net_change.entity_id)
  ),
  per_row as (
    select e.entity_schema, e.entity_name, e.key_text,
           (array_agg(e.before order by e.created_at, e.id))[1] as before,
           (array_agg(e.after order by e.created_at desc, e.id desc))[1] as after,
           min(e.id) as first_id, max(e.id) as last_id, count(*)::integer as n
    from events e
    group by 1, 2, 3
  )
  select p.entity_schema, p.entity_name, p.key_text,
         case when p.before is null then 'INSERT' when p.after is null then 'DELETE' else 'UPDATE' end,
         p.before, p.after,
         case when p.before is not null and p.after is not null then
           (select jsonb_object_agg(a.key, jsonb_build_object('old', p.before -> a.key, 'new', a.value))
              from jsonb_each(p.after) a where p.before -> a.key is distinct from a.value) end,
         p.first_id, p.last_id, p.n
  from per_row p
  where p.before is distinct from p.after
  union all
  select l.entity_schema, l.entity_name, null, 'TRUNCATE', null, null, null, l.id, l.id, 1
  from audit.log l
  join tracked t on t.schema_name = l.entity_schema and t.table_name = l.entity_name
  where l.action = 'TRUNCATE' and l.created_at > net_change.since and l.created_at <= net_change.until
  order by 8
$$;

comment on function audit.net_change(text, timestamptz, timestamptz, text) is
  'Consolidated change of a table (or one row) between two instants: one row per row that differs (INSERT, UPDATE, DELETE with before/after), transient edits cancelled out';

revoke all on function audit.revert(bigint, bigint, integer, text, boolean, text) from public;
grant execute on function audit.revert(bigint, bigint, integer, text, boolean, text) to cartop_user, cartop_auditor;
grant execute on function audit.net_change(text, timestamptz, timestamptz, text) to cartop_user, cartop_auditor;

-- source: integrity/01_seals.sql
-- Tamper-evident seals: one row per finished UTC day of the trail, holding a digest of that day's rows and
-- a digest chained to the previous day's seal. A changed, deleted, inserted or moved row changes its day's
-- digest; a rewritten seal breaks the chain from that day on; a copy of every seal is also written to the
-- archive directory, out of the database's reach.
--
-- The digests are computed by the application (src/seals/), not by a function stored here: `cartop-audit
-- verify` recomputes them with its own query, so a superuser cannot fool it by replacing a function.
-- Sealing only reads the trail (no lock beyond ACCESS SHARE): writers never wait for it.

create table if not exists audit.seals (
  day             date        primary key,
  rows            bigint      not null,
  rows_digest     text        not null,
  previous_digest text,
  seal_digest     text        not null unique,
  format          integer     not null,
  sealed_at       timestamptz not null default now(),
  constraint seals_rows_not_negative check (rows >= 0),
  constraint seals_digests_are_sha256 check (
    rows_digest ~ '^[0-9a-f]{64}$' and seal_digest ~ '^[0-9a-f]{64}$'
    and (previous_digest is null or previous_digest ~ '^[0-9a-f]{64}$'))
);

comment on table audit.seals is 'One seal per finished UTC day of the audit trail, chained; `cartop-audit verify` recomputes them';
comment on column audit.seals.day is 'The UTC day sealed: audit rows with created_at in [day, day + 1)';
comment on column audit.seals.rows is 'How many audit rows the day held when it was sealed';
comment on column audit.seals.rows_digest is 'SHA-256 over the SHA-256 of every row of the day, in id order (format 2: every stored column; format 1: all but statement_number)';
comment on column audit.seals.previous_digest is 'seal_digest of the previous day; null for the first seal of the chain';
comment on column audit.seals.seal_digest is 'SHA-256 of format, day, rows, rows_digest and previous_digest: the link the next day chains to';
comment on column audit.seals.format is 'How the digests are computed (src/seals/seals.ts): 2 since statement numbers, 1 before';
comment on column audit.seals.sealed_at is 'When the seal was written';

-- Seals form one unbroken chain: each new seal is the day after the last one and links to its digest.
create or replace function audit_private.tg__seal_extends_chain()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  last_seal audit.seals;
begin
  select * into last_seal from audit.seals order by day desc limit 1;
  if last_seal.day is null then
    if new.previous_digest is not null then
      raise exception 'audit.seals: the first seal (%) cannot link to a previous one', new.day
        using errcode = 'check_violation';
    end if;
  elsif new.day <> last_seal.day + 1 or new.previous_digest is distinct from last_seal.seal_digest then
    raise exception 'audit.seals: seal for % does not extend the chain, which ends at % (%)', new.day, last_seal.day, last_seal.seal_digest
      using errcode = 'check_violation', hint = 'Seals are written in day order by cartop-audit (worker task audit__seal_days or `cartop-audit seal`).';
  end if;
  if new.day >= (now() at time zone 'UTC')::date then
    raise exception 'audit.seals: day % is not finished yet (UTC)', new.day
      using errcode = 'object_not_in_prerequisite_state', hint = 'A day is sealed after it ends (UTC).';
  end if;
  return new;
end
$$;

drop trigger if exists _010_extends_chain on audit.seals;
create trigger _010_extends_chain before insert on audit.seals
  for each row execute function audit_private.tg__seal_extends_chain();

-- Seals are as append-only as the trail they protect.
select audit_private.protect_partition('audit.seals'::regclass);
revoke all on audit.seals from public;
grant select on audit.seals to cartop_auditor;

-- The first day of the chain: the last seal's successor, or (nothing sealed yet) the first day of the
-- oldest month still in the database.
create or replace function audit_private.seal_chain_start()
  returns date
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    (select max(day) + 1 from audit.seals),
    (select min(range_start at time zone 'UTC')::date from audit.partitions where not is_default),
    (now() at time zone 'UTC')::date)
$$;

-- When the oldest open transaction of this database (other than the caller's) began: no row stamped
-- before it can still appear (rows carry their statements' start times). Null when none is open. Other
-- roles' transactions are visible only to superusers and members of pg_read_all_stats.
create or replace function audit_private.oldest_open_transaction_start()
  returns timestamptz
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select min(xact_start) from pg_stat_activity
  where datname = current_database() and backend_type = 'client backend'
    and pid <> pg_backend_pid() and xact_start is not null
$$;

-- Days that can be sealed now, oldest first: finished UTC days after the last seal that ended at least
-- `grace` ago, stopping before the day on which the oldest open transaction began (it may still commit rows
-- into that day); where other roles' transactions are not visible, `grace` is the margin. A prepared
-- transaction could hold rows of any day: while one exists, nothing is sealed.
create or replace function audit.sealable_days(grace interval default '1 hour')
  returns setof date
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  select d::date
  from generate_series(
         audit_private.seal_chain_start(),
         least(
           ((now() - grace) at time zone 'UTC')::date - 1,
           (audit_private.oldest_open_transaction_start() at time zone 'UTC')::date - 1),
         interval '1 day') as d
  where not exists (select from pg_prepared_xacts where database = current_database())
$$;

revoke all on function audit.sealable_days(interval) from public;
comment on function audit.sealable_days(interval) is 'Finished UTC days not sealed yet that no open transaction can still write to, oldest first';

-- source: integrity/02_coverage.sql
-- Capture coverage: the silent failures of a trigger-based audit, as rows an operator (or
-- `cartop-audit doctor`) can see. Empty means healthy. months_ahead defaults to the horizon the deployment keeps
-- (audit_private.partition_horizon: what the worker last premade with AUDIT_PREMAKE_MONTHS).
-- capture_outdated regenerates every tracked table's capture to compare it (~7 ms a table): doctor and the worker
-- ask for it (check_capture); the view, which auditors and the explorer read, does not.
drop function if exists audit.coverage_problems(integer) cascade;
create or replace function audit.coverage_problems(months_ahead integer default null, check_capture boolean default false)
  returns table (check_name text, object text, problem text)
  language sql
  stable
  set search_path = pg_catalog, pg_temp
as $$
  -- A tracked table that no longer exists.
  select 'tracked_table_missing', format('%I.%I', t.schema_name, t.table_name),
         format('tracked, but the table does not exist; to end its tracking: select audit.disable_tracking(%L, %L)', t.schema_name, t.table_name)
  from audit_private.tables t
  where t.enabled and audit_private.table_by_name(t.schema_name, t.table_name) is null
  union all
  -- A tracked table whose capture triggers were dropped or disabled.
  select case when tt.triggers_installed < tt.triggers_expected then 'capture_trigger_missing' else 'capture_trigger_disabled' end,
         format('%I.%I', tt.schema_name, tt.table_name),
         format('%s of %s capture triggers installed, %s enabled', tt.triggers_installed, tt.triggers_expected, tt.triggers_active)
  from audit.tracked_tables tt
  where tt.enabled and audit_private.table_by_name(tt.schema_name, tt.table_name) is not null
    and (tt.triggers_installed < tt.triggers_expected or tt.triggers_active < tt.triggers_expected)
  union all
  -- A capture function that is not what this version generates for its table: edited by hand (body,
  -- settings, owner) or left by another version (the stamp in its comment: audit_private.capture_stamp).
  select 'capture_outdated', format('audit_private.%I()', f.function_name),
         format('%s; regenerate with: select audit.enable_tracking(%L)', audit_private.capture_function_problem(f.function_name, f.create_sql),
                format('%I.%I', t.schema_name, t.table_name))
  from audit_private.tables t
  cross join lateral audit_private.capture_functions_sql(t, audit_private.table_by_name(t.schema_name, t.table_name)) f
  where check_capture and t.enabled and audit_private.table_by_name(t.schema_name, t.table_name) is not null
    and audit_private.capture_function_problem(f.function_name, f.create_sql) is not null
  union all
  -- A trigger that looks like ours but is not: a capture trigger's name or a capture function, anywhere,
  -- that is not exactly the capture trigger of the tracked table it is on (wrong function, events,
  -- transition tables or name; or a table that is not tracked).
  select 'foreign_capture_trigger', format('%s on %s', g.tgname, g.tgrelid::regclass),
         format('runs %s', g.tgfoid::regprocedure)
  from pg_trigger g
  join pg_class c on c.oid = g.tgrelid
  join pg_namespace n on n.oid = c.relnamespace
  -- (on a partition, the tracked table it belongs to)
  left join pg_class root on root.oid = coalesce(pg_partition_root(c.oid), c.oid)
  left join pg_namespace rn on rn.oid = root.relnamespace
  left join audit_private.tables t on t.enabled and t.schema_name = rn.nspname and t.table_name = root.relname
  where (g.tgname like '\_900\_audit\_%' or g.tgfoid::regproc::text like 'audit\_private.capture\_%')
    and not exists (select from audit_private.capture_trigger_state(t.id, g.tgrelid) s
                    where s.trigger_name = g.tgname and s.installed)
  union all
  -- Months that should already have a partition: the current one, and `months_ahead` after the month of an
  -- hour ago. The hourly premake needs that hour to move the horizon on when a month begins, so the first
  -- minutes of a month are not reported (the month that just began was premade months before).
  select 'partition_missing', 'audit.' || audit_private.partition_name(m::date),
         format('no partition for %s (keep %s month(s) ahead)', to_char(m, 'YYYY-MM'), h.months_ahead)
  from (select coalesce(coverage_problems.months_ahead, (select p.months_ahead from audit_private.partition_horizon p), 3) as months_ahead) h,
       generate_series(
         audit_private.current_month(),
         greatest(audit_private.current_month(),
                  date_trunc('month', (now() - interval '1 hour') at time zone 'UTC') + make_interval(months => greatest(h.months_ahead, 0))),
         interval '1 month') as m
  where not (audit_private.partition_state(m::date)).present
  union all
  -- Rows waiting in the default partition.
  select 'default_partition_rows', 'audit.log_default', format('%s row(s) of %s', d.rows, to_char(d.month, 'YYYY-MM'))
  from audit.default_partition_months() d
  union all
  -- Finished days left unsealed (the worker seals each day about an hour after it ends).
  select 'seal_overdue', 'audit.seals', format('finished days since %s are not sealed', s.first_unsealed)
  from (select audit_private.seal_chain_start() as first_unsealed) s
  where s.first_unsealed < (now() at time zone 'UTC')::date - 1
$$;

comment on function audit.coverage_problems(integer, boolean) is 'Problems in audit capture coverage (missing/disabled/foreign triggers, outdated capture functions, missing partitions, rows in the default partition, unsealed days); empty when healthy';

create or replace view audit.coverage as select * from audit.coverage_problems();
comment on view audit.coverage is 'Problems in audit capture coverage, against the premake horizon the deployment keeps; empty when healthy';
comment on column audit.coverage.check_name is 'Which check found the problem';
comment on column audit.coverage.object is 'The table, trigger or partition concerned';
comment on column audit.coverage.problem is 'What is wrong';

grant select on audit.coverage to cartop_auditor;
revoke all on function audit.coverage_problems(integer, boolean) from public;
grant execute on function audit.coverage_problems(integer, boolean) to cartop_auditor;
grant select on audit_private.partition_horizon to cartop_auditor;

-- source: operations/01_task_runs.sql
-- What the worker's scheduled tasks did: one row per run, success or failure. /metrics reads it (the worker
-- may run in another process than the API), and so can an operator: "when did the archive last succeed?".
create table if not exists audit.task_runs (
  id          bigint      generated always as identity primary key,
  task        text        not null,
  started_at  timestamptz not null,
  finished_at timestamptz not null default clock_timestamp(),
  succeeded   boolean     not null,
  result      jsonb,
  error       text,
  constraint task_runs_failure_has_error check (succeeded or error is not null)
);

create index if not exists task_runs_task_idx on audit.task_runs (task, finished_at);

comment on table audit.task_runs is 'One row per run of a scheduled worker task (partitions, summary, seals, coverage check, archive)';
comment on column audit.task_runs.task is 'graphile-worker task identifier, e.g. audit__archive_partitions';
comment on column audit.task_runs.result is 'What the run did or found, e.g. the coverage problems of audit__check_coverage';
comment on column audit.task_runs.error is 'Why the run failed (the worker retries it with backoff)';

revoke all on audit.task_runs from public;
grant select on audit.task_runs to cartop_auditor;

-- Lock only: seal and archive runs (worker or CLI, any instance) take it for their whole run, so they never
-- interleave (src/db/locks.ts). A table lock, not an advisory key: only its owner can take it, so no other
-- role can stall sealing or archiving by holding the same key.
create table if not exists audit_private.seal_and_archive_runs ();
revoke all on audit_private.seal_and_archive_runs from public;
comment on table audit_private.seal_and_archive_runs is 'Lock only: serialises seal and archive runs (no rows)';

-- source: operations/02_rate_limits.sql
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

-- source: example/01_app.sql
-- The example application schema: what the GraphQL API serves and what the tests and benchmark write to.
-- Both tables are tracked; users.password_hash is excluded from the audit trail.
--
-- Who may do what, as a real application should (the API selects the role from the token's `role` claim):
--   cartop_user   a signed-in user: reads and edits only their own app.users row (id = the token's sub),
--                 sets only their own password; writes the product catalogue.
--   cartop_admin  the application's administrators: create, edit and delete any user, set any password.
--   cartop_anonymous reads the catalogue. cartop_auditor reads the audit trail, not the application.

create schema if not exists app;

do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_admin') then
    create role cartop_admin nologin;
  end if;
end
$$;
grant cartop_admin to cartop_authenticator;
grant usage on schema app to cartop_anonymous, cartop_user, cartop_auditor, cartop_admin;

create table if not exists app.users (
  id            uuid        primary key default gen_random_uuid(),
  email         text        not null,
  first_name    text        not null default '',
  last_name     text        not null default '',
  password_hash text,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint users_email_valid check (email ~ '^[^@\s]+@[^@\s]+$')
);
create unique index if not exists users_email_unique on app.users (lower(email));
comment on table app.users is 'Example application users';
comment on column app.users.password_hash is 'bcrypt hash (pgcrypto crypt/gen_salt); never audited';

create table if not exists app.products (
  id         bigint        generated always as identity primary key,
  name       text          not null,
  price      numeric(12,2) not null check (price >= 0),
  stock      integer       not null default 0 check (stock >= 0),
  attributes jsonb         not null default '{}',
  created_at timestamptz   not null default now(),
  updated_at timestamptz   not null default now()
);
comment on table app.products is 'Example product catalogue';

-- Hashes a password the way app.users stores it (bcrypt via pgcrypto).
create or replace function app.hash_password(password text)
  returns text
  language sql
  volatile
  set search_path = pg_catalog, public, pg_temp
as $$
  select crypt(password, gen_salt('bf', 8))
$$;

create or replace function app.tg__touch_updated_at()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists _100_touch_updated_at on app.users;
create trigger _100_touch_updated_at before update on app.users
  for each row execute function app.tg__touch_updated_at();
drop trigger if exists _100_touch_updated_at on app.products;
create trigger _100_touch_updated_at before update on app.products
  for each row execute function app.tg__touch_updated_at();

-- The signed-in user's id: the token's sub, which the API sets as audit.user_id for the transaction. Any
-- session can set that setting, so it is believed only from a login that may change every user anyway (the
-- API's login cartop_authenticator, a member of cartop_admin; a superuser; the table's owner). Any other SQL
-- login is the user named like its login.
create or replace function app.current_user_id()
  returns text
  language sql
  stable
  parallel safe
  set search_path = pg_catalog, pg_temp
as $$
  select case when exists (select from pg_catalog.pg_roles r where r.rolname = session_user and (r.rolsuper or r.rolbypassrls))
                or pg_catalog.pg_has_role(session_user, 'cartop_admin', 'MEMBER')
                or pg_catalog.pg_has_role(session_user, (select c.relowner from pg_catalog.pg_class c where c.oid = 'app.users'::pg_catalog.regclass), 'MEMBER')
              then nullif(pg_catalog.current_setting('audit.user_id', true), '')
              else session_user::text end
$$;
comment on function app.current_user_id() is 'The acting user''s id (audit.user_id, set by the API from the token''s sub)';

alter table app.users enable row level security;
drop policy if exists users_self on app.users;
create policy users_self on app.users for all to cartop_user
  using (id::text = app.current_user_id()) with check (id::text = app.current_user_id());
drop policy if exists users_admin on app.users;
create policy users_admin on app.users for all to cartop_admin using (true) with check (true);

revoke all on app.users from cartop_user;
grant select, update (email, first_name, last_name, password_hash) on app.users to cartop_user;
grant select, insert, update, delete on app.users to cartop_admin;
grant select, insert, update, delete on app.products to cartop_user, cartop_admin;
grant select on app.products to cartop_anonymous;

select audit.enable_tracking('app.users', excluded_columns => '{password_hash}');
select audit.enable_tracking('app.products');

-- The API's user mutations: the password arrives in clear over TLS, is hashed here, and neither it nor
-- the hash is ever returned or audited (password_hash is excluded from tracking and hidden from GraphQL).
create or replace function app.create_user(email text, first_name text default '', last_name text default '', password text default null)
  returns app.users
  language sql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
  insert into app.users (email, first_name, last_name, password_hash)
  values (email, coalesce(first_name, ''), coalesce(last_name, ''), case when password is not null then app.hash_password(password) end)
  returning *
$$;

comment on function app.create_user(text, text, text, text) is 'Creates a user (admins only); the password is stored only as a bcrypt hash';

create or replace function app.set_user_password(user_id uuid, password text)
  returns app.users
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  result app.users;
begin
  -- Row-level security limits the update to rows the caller may change: their own, or any for an admin.
  update app.users set password_hash = app.hash_password(password) where id = user_id returning * into result;
  if not found then
    raise exception 'app.set_user_password: no user % that you may change', user_id
      using errcode = '42501', hint = 'a user may set only their own password; an admin token may set anyone''s';
  end if;
  return result;
end
$$;

comment on function app.set_user_password(uuid, text) is 'Replaces a user''s password (stored only as a bcrypt hash): one''s own, or anyone''s for an admin';

revoke all on function app.create_user(text, text, text, text), app.set_user_password(uuid, text), app.hash_password(text), app.current_user_id() from public;
-- Earlier versions let every user create users.
revoke all on function app.create_user(text, text, text, text) from cartop_user;
grant execute on function app.set_user_password(uuid, text), app.hash_password(text), app.current_user_id() to cartop_user, cartop_admin;
grant execute on function app.create_user(text, text, text, text) to cartop_admin;
grant usage on all sequences in schema app to cartop_user, cartop_admin;
