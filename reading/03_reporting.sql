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
