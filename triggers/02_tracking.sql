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
