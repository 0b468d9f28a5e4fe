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
  e.row_data -> d.key                    as old_value,
  d.value                                as new_value,
  e.user_id,
  e.user_email,
  e.db_user,
  e.request_id
from audit_private.log_entries e
join audit_private.tables t on t.id = e.table_id
cross join lateral jsonb_each(e.delta) as d
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

-- Counts per UTC day × table × action × user. A plain view, not a materialized one: it is always current,
-- costs nothing to maintain, and a filter on day prunes to the partitions of those days (a quarter reads
-- three partitions). See the README for its cost at 10M rows.
create or replace view audit.activity_daily with (security_invoker = true) as
select
  (date_trunc('day', e.created_at at time zone 'UTC'))::date as day,
  t.schema_name                                             as entity_schema,
  t.table_name                                              as entity_name,
  audit_private.action_name(e.action)                       as action,
  e.user_id,
  count(*)                                                  as changes
from audit_private.log_entries e
join audit_private.tables t on t.id = e.table_id
group by 1, 2, 3, 4, 5;

comment on view audit.activity_daily is 'Audit rows per UTC day, table, action and user (always current; filter on day to read only those partitions)';
comment on column audit.activity_daily.day is 'UTC day of created_at';
comment on column audit.activity_daily.entity_schema is 'Schema of the audited table';
comment on column audit.activity_daily.entity_name is 'Name of the audited table';
comment on column audit.activity_daily.action is 'INSERT, UPDATE, DELETE or TRUNCATE';
comment on column audit.activity_daily.user_id is 'audit.user_id (null: no user in context, e.g. a DBA in psql)';
comment on column audit.activity_daily.changes is 'Number of audit rows';

-- The row as it was at `at` (inclusive), or null if it did not exist then: not yet inserted, deleted,
-- truncated, or its primary key had been changed to another value. entity_name as in entity_history.
create or replace function audit.row_as_of(entity_name text, entity_id text, at timestamptz)
  returns jsonb
  language sql
  stable
as $$
  with target as (
    select t.id from audit_private.tables t
    where t.table_name = row_as_of.entity_name or t.schema_name || '.' || t.table_name = row_as_of.entity_name
  ), events as (
    -- Changes to this entity (an UPDATE that gave another row this key included).
    select e.created_at, e.id, case when e.action in ('I', 'U') then audit_private.new_row(e.action, e.row_data, e.delta) end as state
    from audit_private.log_entries e
    where e.table_id in (select id from target) and e.entity_id = row_as_of.entity_id and e.created_at <= at
    union all
    -- An UPDATE that moved this key to another value: the row no longer exists under it.
    select e.created_at, e.id, null
    from audit_private.log_entries e
    where e.table_id in (select id from target) and e.old_entity_id = row_as_of.entity_id and e.created_at <= at
    union all
    select e.created_at, e.id, null
    from audit_private.log_entries e
    where e.table_id in (select id from target) and e.action = 'T' and e.created_at <= at
  )
  select state from events order by created_at desc, id desc limit 1
$$;

comment on function audit.row_as_of(text, text, timestamptz) is 'The audited row (as JSON) at a point in time, or null if it did not exist then';

grant select on audit.changes, audit.activity_daily to cartop_user, cartop_auditor;
grant execute on function audit.row_as_of(text, text, timestamptz) to cartop_user, cartop_auditor;
