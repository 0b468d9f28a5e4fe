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
