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

-- TRUNCATE: one audit row for the statement, no entity. The table id is the trigger argument.
create or replace function audit_private.tg__capture_truncate()
  returns trigger
  language plpgsql
  security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  _ctx audit_private.context := audit_private.current_context();
begin
  insert into audit_private.log_entries (created_at, tx_id, table_id, action, statement_number,
    user_id, user_email, ip_address, user_agent, request_id, metadata, db_user, application_name)
  values (statement_timestamp(), txid_current(), tg_argv[0]::integer, 'T', audit_private.statement_number(tg_relid),
    _ctx.user_id, _ctx.user_email, _ctx.ip_address, _ctx.user_agent, _ctx.request_id, _ctx.metadata,
    _ctx.db_user, _ctx.application_name);
  return null;
end
$$;

-- Whether values of a type can be compared with IS DISTINCT FROM (json, xml, point... cannot).
create or replace function audit_private.type_has_equality(type_name text)
  returns boolean
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  execute format('select null::%s is distinct from null::%1$s', type_name);
  return true;
exception when undefined_function then
  return false;
end
$$;

-- SQL for "this row as audited JSON": excluded columns removed, masked ones replaced. `row_alias` is a
-- row of the table (or of a subquery whose extra columns are listed in `extra_columns`).
create or replace function audit_private.row_json_sql(tracked audit_private.tables, row_alias text, extra_columns text[] default '{}')
  returns text
  language sql
  immutable
as $$
  select format('to_jsonb(%s)', row_alias)
    || case when cardinality(extra_columns || tracked.excluded_columns) > 0
         then format(' - %L::text[]', extra_columns || tracked.excluded_columns) else '' end
    || case when cardinality(tracked.masked_columns) > 0
         then format(' || %L::jsonb', audit_private.masked_object(tracked.masked_columns)) else '' end
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

-- SQL for the UPDATE delta: the new values of the columns that changed, each compared with its own
-- type's equality (as text where the type has none); masked columns get the mask instead of a value.
create or replace function audit_private.delta_sql(tracked audit_private.tables, target regclass)
  returns text
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  terms text[] := '{}';
  col record;
  cast_suffix text;
begin
  for col in
    select a.attname::text as name, format_type(a.atttypid, a.atttypmod) as type_name
    from pg_attribute a
    where a.attrelid = target and a.attnum > 0 and not a.attisdropped
      and a.attname <> all (tracked.excluded_columns)
    order by a.attnum
  loop
    cast_suffix := case when audit_private.type_has_equality(col.type_name) then '' else '::text' end;
    terms := terms || format(
      'case when o.%1$I%2$s is distinct from n.%1$I%2$s then %3$s else ''{}''::jsonb end',
      col.name, cast_suffix,
      case when col.name = any (tracked.masked_columns)
        then format('jsonb_build_object(%L, audit_private.masked_value())', col.name)
        else format('jsonb_build_object(%L, n.%I)', col.name, col.name)
      end);
  end loop;
  return array_to_string(terms, E'\n          || ');
end
$$;

-- Writes one generated capture function: the shared prologue (context read once per statement) around
-- the statement-specific INSERT ... SELECT.
create or replace function audit_private.write_capture_function(function_name text, target regclass, capture_sql text)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  execute format($template$
    create or replace function audit_private.%1$I()
      returns trigger
      language plpgsql
      security definer
      set search_path = pg_catalog, pg_temp
      -- A plan cached for small statements is reused for large ones: JIT would compile on every call,
      -- and the UPDATE pairing would sort on disk with the default work_mem.
      set jit = off
      set work_mem = '64MB'
    as $function$
    -- Generated by audit.enable_tracking for %2$s; rewritten on every enable_tracking, do not edit.
    declare
      _ctx audit_private.context := audit_private.current_context();
      _at timestamptz := statement_timestamp();
      _tx bigint := txid_current();
      _stmt integer := audit_private.statement_number(tg_relid);
    begin
      %3$s;
      return null;
    end
    $function$
  $template$, function_name, target, capture_sql);
end
$$;

-- Writes the INSERT, UPDATE and DELETE capture functions of one tracked table. Everything known about the
-- table is baked in: its id, key, columns, exclusions and masks, so a statement does no lookups.
--
-- INSERT and DELETE store the audited JSON of each new or old row. UPDATE stores the old row plus the
-- new values of the changed columns. Old and new rows are paired by their position in the transition
-- tables (PostgreSQL fills both in the same order), so an UPDATE that changes the primary key still
-- yields one audit row per row. A FULL JOIN cannot be planned as a nested loop, which keeps a cached plan
-- made for one row fast for a million. OFFSET 0 stops the planner from pulling the subquery up and
-- evaluating to_jsonb once per reference instead of once per row.
create or replace function audit_private.write_capture_functions(tracked audit_private.tables, target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  insert_columns constant text := 'insert into audit_private.log_entries (created_at, tx_id, statement_number, table_id, action, entity_id, old_entity_id, row_data, delta,
        user_id, user_email, ip_address, user_agent, request_id, metadata, db_user, application_name)';
  context_values constant text := '_ctx.user_id, _ctx.user_email, _ctx.ip_address, _ctx.user_agent, _ctx.request_id,
        _ctx.metadata, _ctx.db_user, _ctx.application_name';
  op record;
  update_select text;
begin
  for op in select * from (values ('insert', 'I', 'new_rows'), ('delete', 'D', 'old_rows')) as v(name, action, transition) loop
    perform audit_private.write_capture_function(format('capture_%s_%s', op.name, tracked.id), target, format(
      '%s
      select _at, _tx, _stmt, %s, %L, %s, null, r.row_data, null, %s
      from (select %s as row_data from %s t offset 0) r',
      insert_columns, tracked.id, op.action, audit_private.entity_id_sql(tracked, 'r.row_data'), context_values,
      audit_private.row_json_sql(tracked, 't'), op.transition));
  end loop;

  -- UPDATE: the columns inserted are the same in both branches; only how old and new rows are paired differs.
  update_select := format(
    'select _at, _tx, _stmt, %s, %L, %s, case when c.delta ?| %L::text[] then %s end, c.row_data, c.delta, %s',
    tracked.id, 'U', audit_private.entity_id_sql(tracked, 'c.row_data', 'c.delta'),
    -- The key changed exactly when the delta holds a key column: then record the old entity id too.
    tracked.primary_key, audit_private.entity_id_sql(tracked, 'c.row_data'), context_values);
  perform audit_private.write_capture_function(format('capture_update_%s', tracked.id), target, format(
    -- One row (what an API sends): pair the two rows directly. Setting up the general pairing (two window
    -- functions and a join) on every statement made single-row UPDATEs ~25% slower.
    'if (select count(*) from (select from old_rows limit 2) s) = 1 then
      %1$s
      %2$s
      from (select %3$s as row_data, %5$s as delta from old_rows o, new_rows n offset 0) c
      where c.delta <> ''{}''::jsonb;
    else
      %1$s
      %2$s
      from (
        select %4$s as row_data,
          %5$s as delta
        from (select row_number() over () as audit_ordinal__, t.* from old_rows t) o
        full join (select row_number() over () as audit_ordinal__, t.* from new_rows t) n using (audit_ordinal__)
        offset 0
      ) c
      where c.delta <> ''{}''::jsonb;
    end if',
    insert_columns, update_select, audit_private.row_json_sql(tracked, 'o'),
    audit_private.row_json_sql(tracked, 'o', '{audit_ordinal__}'), audit_private.delta_sql(tracked, target)));
end
$$;

-- (Re)creates the capture triggers of one tracked table from its registry row.
create or replace function audit_private.attach_capture(tracked audit_private.tables, target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
  -- Tells the DROP TRIGGER event trigger that these drops are ours (restored when the function returns).
  set audit_private.attaching = 'on'
as $$
begin
  perform audit_private.write_capture_functions(tracked, target);
  perform audit_private.detach_capture(target);
  execute format('create trigger _900_audit_insert after insert on %s referencing new table as new_rows
                    for each statement execute function audit_private.%I()', target, format('capture_insert_%s', tracked.id));
  execute format('create trigger _900_audit_update after update on %s referencing old table as old_rows new table as new_rows
                    for each statement execute function audit_private.%I()', target, format('capture_update_%s', tracked.id));
  execute format('create trigger _900_audit_delete after delete on %s referencing old table as old_rows
                    for each statement execute function audit_private.%I()', target, format('capture_delete_%s', tracked.id));
  execute format('create trigger _900_audit_truncate after truncate on %s
                    for each statement execute function audit_private.tg__capture_truncate(%L)', target, tracked.id);
end
$$;

create or replace function audit_private.detach_capture(target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  trigger_name text;
begin
  for trigger_name in
    select tgname from pg_trigger
    where tgrelid = target and tgname in ('_900_audit_insert', '_900_audit_update', '_900_audit_delete', '_900_audit_truncate')
  loop
    execute format('drop trigger %I on %s', trigger_name, target);
  end loop;
end
$$;

-- Starts (or re-configures) auditing of a table. Idempotent: calling it again replaces the options.
create or replace function audit.enable_tracking(
  target regclass,
  excluded_columns text[] default '{}',
  masked_columns text[] default '{}'
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
begin
  if target is null then
    raise exception 'audit.enable_tracking: target table must not be null' using errcode = 'null_value_not_allowed';
  end if;
  excluded_columns := coalesce(excluded_columns, '{}');
  masked_columns := coalesce(masked_columns, '{}');

  select c.relname::text as table_name, n.nspname::text as schema_name, c.relkind, c.relispartition
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
  if rel.schema_name in ('audit', 'audit_private') then
    raise exception 'audit.enable_tracking: % belongs to the audit system and cannot be tracked', target
      using errcode = 'wrong_object_type';
  end if;

  select array_agg(a.attname::text order by k.ord) into key_columns
  from pg_index i
  cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
  join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
  where i.indrelid = target and i.indisprimary;
  if key_columns is null then
    raise exception 'audit.enable_tracking: table % has no primary key', target
      using errcode = 'invalid_table_definition',
            hint = 'Audit rows are keyed by the primary key; add one before tracking the table.';
  end if;

  select array_agg(c) into unknown
  from unnest(excluded_columns || masked_columns) as c
  where not exists (select from pg_attribute a where a.attrelid = target and a.attname = c and a.attnum > 0 and not a.attisdropped);
  if unknown is not null then
    raise exception 'audit.enable_tracking: table % has no column(s) %', target, array_to_string(unknown, ', ')
      using errcode = 'undefined_column';
  end if;
  if key_columns && (excluded_columns || masked_columns) then
    raise exception 'audit.enable_tracking: primary key column(s) of % cannot be excluded or masked', target
      using errcode = 'invalid_parameter_value';
  end if;
  if excluded_columns && masked_columns then
    raise exception 'audit.enable_tracking: a column of % cannot be both excluded and masked', target
      using errcode = 'invalid_parameter_value';
  end if;

  insert into audit_private.tables as t (schema_name, table_name, primary_key, excluded_columns, masked_columns)
  values (rel.schema_name, rel.table_name, key_columns, excluded_columns, masked_columns)
  on conflict (schema_name, table_name) do update
    set primary_key = excluded.primary_key,
        excluded_columns = excluded.excluded_columns,
        masked_columns = excluded.masked_columns,
        enabled = true,
        updated_at = now()
  returning t.* into tracked;

  perform audit_private.attach_capture(tracked, target);
end
$$;

comment on function audit.enable_tracking(regclass, text[], text[]) is
  'Starts auditing a table (idempotent; a second call replaces excluded and masked columns)';

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
  target := to_regclass(format('%I.%I', tracked.schema_name, tracked.table_name));
  if target is not null then
    perform audit_private.detach_capture(target);
  end if;
  execute format('drop function if exists audit_private.%I(), audit_private.%I(), audit_private.%I()',
    format('capture_insert_%s', tracked.id), format('capture_update_%s', tracked.id), format('capture_delete_%s', tracked.id));
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

revoke all on function audit.enable_tracking(regclass, text[], text[]) from public;
revoke all on function audit.disable_tracking(regclass) from public;
revoke all on function audit.disable_tracking(text, text) from public;

-- What is tracked, and whether its four capture triggers are in place and enabled.
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
  t.updated_at
from audit_private.tables t
left join lateral (
  select count(*)::integer as installed, count(*) filter (where g.tgenabled <> 'D')::integer as active
  from pg_trigger g
  where g.tgrelid = to_regclass(format('%I.%I', t.schema_name, t.table_name))
    and g.tgname in ('_900_audit_insert', '_900_audit_update', '_900_audit_delete', '_900_audit_truncate')
) tr on true;

comment on view audit.tracked_tables is
  'Tables under audit (or once audited): options, and how many of the 4 capture triggers exist and are enabled';

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
  select t.* into tracked
  from audit_private.tables t
  join pg_class c on c.relname = t.table_name
  join pg_namespace n on n.oid = c.relnamespace and n.nspname = t.schema_name
  where c.oid = target and t.enabled;
  if tracked.id is null then
    -- Renamed (ALTER TABLE … RENAME TO or SET SCHEMA): its capture triggers still call the functions named
    -- after its registry id. The registry follows the table, and so does its history in audit.log.
    select t.* into tracked
    from audit_private.tables t
    where t.enabled and exists (
      select from pg_trigger g
      where g.tgrelid = target and g.tgname = '_900_audit_insert'
        and g.tgfoid = to_regprocedure(format('audit_private.capture_insert_%s()', t.id)));
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
  from unnest(tracked.excluded_columns || tracked.masked_columns) as c
  where not exists (select from pg_attribute a where a.attrelid = target and a.attname = c and a.attnum > 0 and not a.attisdropped);
  if missing is not null then
    raise exception 'cartop-audit: column(s) % of % are excluded or masked from the audit trail and would no longer be', array_to_string(missing, ', '), target
      using errcode = 'object_in_use',
            hint = format('In one transaction: select audit.disable_tracking(%L); your ALTER TABLE; select audit.enable_tracking(%L, ...) with the new column names.', target, target);
  end if;
  perform audit.enable_tracking(target, tracked.excluded_columns, tracked.masked_columns);
end
$$;

create or replace function audit_private.tg__refresh_after_ddl()
  returns event_trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  cmd record;
begin
  for cmd in
    select distinct objid from pg_event_trigger_ddl_commands()
    where classid = 'pg_class'::regclass and object_type in ('table', 'table column')
  loop
    perform audit_private.refresh_tracking(cmd.objid::regclass);
  end loop;
end
$$;

-- A capture trigger dropped from a table that is still tracked is put back at once, with a warning: the
-- way to stop auditing a table is audit.disable_tracking, which unregisters it first. (A superuser can
-- still get around this with session_replication_role = replica; audit.coverage and the seals see that.)
-- A tracked table that is dropped (DROP TABLE, DROP SCHEMA … CASCADE) stops being tracked, with a notice:
-- its audit history stays.
create or replace function audit_private.tg__capture_after_drop()
  returns event_trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  dropped record;
  target regclass;
  tracked_id integer;
begin
  if current_setting('audit_private.attaching', true) = 'on' then
    return; -- attach_capture replacing its own triggers
  end if;
  for dropped in
    select distinct o.object_type, o.address_names[1] as schema_name, o.address_names[2] as table_name
    from pg_event_trigger_dropped_objects() o
    -- Tables however they went (DROP SCHEMA … CASCADE drops them as dependents); triggers only when dropped
    -- themselves, not along with their table.
    where o.object_type = 'table'
       or (o.object_type = 'trigger' and o.original
           and o.address_names[3] in ('_900_audit_insert', '_900_audit_update', '_900_audit_delete', '_900_audit_truncate'))
  loop
    select t.id into tracked_id from audit_private.tables t
    where t.enabled and t.schema_name = dropped.schema_name and t.table_name = dropped.table_name;
    continue when tracked_id is null;
    if dropped.object_type = 'table' then
      raise notice 'cartop-audit: tracked table %.% was dropped; tracking ended, its audit history is kept',
        dropped.schema_name, dropped.table_name;
      perform audit_private.end_tracking(tracked_id);
    else
      target := to_regclass(format('%I.%I', dropped.schema_name, dropped.table_name));
      raise warning 'cartop-audit: a capture trigger of %, which is tracked, was dropped; capture was re-attached', target
        using hint = format('To stop auditing the table: select audit.disable_tracking(%L)', target);
      perform audit_private.refresh_tracking(target);
    end if;
  end loop;
end
$$;

-- Event triggers need a superuser; on a managed server without one, capture still works but ALTER TABLE
-- on a tracked table must be followed by audit.enable_tracking (audit.tracked_tables and audit.coverage
-- show the state).
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    drop event trigger if exists audit_refresh_after_ddl;
    create event trigger audit_refresh_after_ddl on ddl_command_end
      when tag in ('ALTER TABLE')
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
    select to_regclass(format('%I.%I', schema_name, table_name)) from audit_private.tables
    where enabled and to_regclass(format('%I.%I', schema_name, table_name)) is not null
  loop
    begin
      perform audit_private.refresh_tracking(target);
    exception when object_in_use then
      raise warning 'cartop-audit: capture of % not regenerated: %', target, sqlerrm;
    end;
  end loop;
end
$$;
