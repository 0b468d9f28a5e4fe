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
