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
