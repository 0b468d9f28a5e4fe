-- A prototype, not part of the product: what capture would cost if the trail stored typed per-table history
-- and the context once per statement, instead of JSON and the context on every row (docs/design/capture.md,
-- "The typed-history prototype"). The benchmarks load it to put that line beside cartop-audit's in the same
-- run (bench/write-path.ts, bench/capture-instructions.sh).
--
-- bench.create_typed_history(t) gives table t
--   - <t>_history, partitioned by month like the trail: per changed row the statement (time, transaction,
--     statement number), the action, the key, and for each column c old_c and new_c of c's own type (INSERT
--     fills new_*, DELETE old_*, UPDATE the whole old row and the new values of the columns that changed, with
--     the bitmask `changed` saying which); indexes on (key, time) and BRIN on time;
--   - <t>_history_statements: the context once per statement (user, e-mail, IP, user agent, request id,
--     metadata, role, application), indexed by user and by (transaction, statement number);
--   - three capture functions made by the product's own generator (audit_private.capture_function_sql: the same
--     guard, context, statement number, security definer and search path, the product's change test
--     audit_private.changed_sql), without the settings that pin text forms, which typed values do not need.
-- The functions belong to whoever loads this (a superuser in the benchmarks), not to cartop_capture.
-- Left out, as a prototype may: one statement that fires several capture triggers (MERGE, upsert) writes its
-- context once per trigger; partitioned tables, masks, moves. One-column primary key, at most 31 columns.
create or replace function bench.create_typed_history(source regclass)
  returns void
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $body$
declare
  schema_name text := (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = source);
  table_name text := (select relname from pg_class where oid = source);
  history text := table_name || '_history';
  statements text := table_name || '_history_statements';
  key_name text := (select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                    where i.indrelid = source and i.indisprimary);
  columns text[] := array(select attname from pg_attribute where attrelid = source and attnum > 0 and not attisdropped order by attnum);
  conditions text[] := array(select audit_private.changed_sql(attname, atttypid, attcollation) from pg_attribute
                             where attrelid = source and attnum > 0 and not attisdropped order by attnum);
  month date := date_trunc('month', now());
  tracked audit_private.tables := jsonb_populate_record(null::audit_private.tables,
    jsonb_build_object('id', 0, 'schema_name', schema_name, 'table_name', table_name));
  relation text;
  record_statement text;
  head text;
  bits text;
  op text;
begin
  execute format('create table %I.%I (created_at timestamptz not null, tx_id bigint not null, statement_number integer not null,
      action "char" not null, entity_id %s, changed integer, %s) partition by range (created_at)',
    schema_name, history, (select format_type(atttypid, atttypmod) from pg_attribute where attrelid = source and attname = key_name),
    (select string_agg(format('%I %s, %I %2$s', 'old_' || attname, format_type(atttypid, atttypmod), 'new_' || attname), ', ' order by attnum)
     from pg_attribute where attrelid = source and attnum > 0 and not attisdropped));
  execute format('create table %I.%I (created_at timestamptz not null, tx_id bigint not null, statement_number integer not null,
      user_id text, user_email text, ip_address inet, user_agent text, request_id text, metadata jsonb, db_user text not null,
      application_name text) partition by range (created_at)', schema_name, statements);
  foreach relation in array array[history, statements] loop
    execute format('create table %I.%I partition of %I.%I for values from (%L) to (%L)',
      schema_name, relation || '_current', schema_name, relation, month, month + interval '2 months');
    execute format('create table %I.%I partition of %I.%I default', schema_name, relation || '_default', schema_name, relation);
  end loop;
  execute format('create index on %I.%I (entity_id, created_at)', schema_name, history);
  execute format('create index on %I.%I using brin (created_at)', schema_name, history);
  execute format('create index on %I.%I (user_id, created_at) where user_id is not null', schema_name, statements);
  execute format('create index on %I.%I (tx_id, statement_number)', schema_name, statements);

  -- Built by concatenation: a name is never part of a format string.
  record_statement := format('insert into %I.%I values (_at, _tx, _stmt, ', schema_name, statements)
    || audit_private.capture_context_values_sql() || ');
      ';
  head := format('insert into %I.%I (created_at, tx_id, statement_number, action, entity_id, changed, ', schema_name, history);
  bits := (select string_agg(format('(case when %s then %s else 0 end)', c, 1 << (i - 1)::integer), ' | ')
           from unnest(conditions) with ordinality u(c, i));
  foreach op in array array['insert', 'update', 'delete'] loop
    execute audit_private.capture_function_sql('bench_history_' || op, tracked, array[op], record_statement || case op
      when 'insert' then head || (select string_agg(format('%I', 'new_' || c), ', ') from unnest(columns) c)
        || ') select _at, _tx, _stmt, ''I'', ' || format('n.%I', key_name) || ', null, '
        || (select string_agg(format('n.%I', c), ', ') from unnest(columns) c) || ' from new_rows n'
      when 'delete' then head || (select string_agg(format('%I', 'old_' || c), ', ') from unnest(columns) c)
        || ') select _at, _tx, _stmt, ''D'', ' || format('o.%I', key_name) || ', null, '
        || (select string_agg(format('o.%I', c), ', ') from unnest(columns) c) || ' from old_rows o'
      -- UPDATE pairs old and new rows like the product's capture: directly for one row, by position otherwise.
      else format('perform from old_rows offset 1;
      if not found then
        %1$s from old_rows o, new_rows n where %2$s <> 0;
      else
        %1$s from (select row_number() over () as audit_ordinal__, t.* from old_rows t) o
          join (select row_number() over () as audit_ordinal__, t.* from new_rows t) n using (audit_ordinal__) where %2$s <> 0;
      end if', head || (select string_agg(format('%I, %I', 'old_' || c, 'new_' || c), ', ') from unnest(columns) c)
        || ') select _at, _tx, _stmt, ''U'', ' || format('n.%I', key_name) || ', ' || bits || ', '
        || (select string_agg(format('o.%I, case when %s then n.%I end', c, conditions[i], c), ', ')
            from unnest(columns) with ordinality u(c, i)), bits) end);
    -- Typed values are stored, not printed: the settings that pin text forms are not needed.
    execute format('alter function audit_private.%I() reset datestyle reset intervalstyle reset extra_float_digits reset bytea_output reset lc_monetary',
      'bench_history_' || op);
    execute format('create trigger %I after %s on %s referencing %s for each statement execute function audit_private.%I()',
      '_900_history_' || op, op, source,
      case op when 'delete' then 'old table as old_rows' when 'insert' then 'new table as new_rows'
              else 'old table as old_rows new table as new_rows' end,
      'bench_history_' || op);
  end loop;
end
$body$;
