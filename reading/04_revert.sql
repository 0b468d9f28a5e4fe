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
