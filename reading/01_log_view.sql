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
