-- Where audit rows are stored: one range-partitioned table, one partition per calendar month (UTC).
--
-- Compact by design: an INSERT keeps the new row, a DELETE the old row, and an UPDATE the old row plus
-- only the new values of the columns that changed (`delta`). The view audit.log rebuilds old_value,
-- new_value and changes from these, so readers see the full contract while each UPDATE stores about
-- half of what "old + new + diff" would.

-- Ids come from a sequence with a session cache: increasing within a transaction, cheap for bulk writes.
create sequence if not exists audit_private.log_id_seq as bigint cache 64;

create table if not exists audit_private.log_entries (
  id               bigint      not null default nextval('audit_private.log_id_seq'),
  created_at       timestamptz not null,
  tx_id            bigint      not null,
  table_id         integer     not null,
  action           "char"      not null,
  entity_id        text,
  old_entity_id    text,
  row_data         jsonb,
  delta            jsonb,
  user_id          text,
  user_email       text,
  ip_address       inet,
  user_agent       text,
  request_id       text,
  metadata         jsonb,
  db_user          text        not null,
  application_name text
) partition by range (created_at);

-- No CHECK constraints: only the generated capture writes here (cartop_capture), and PostgreSQL re-reads and
-- re-plans every check of a partition each time an INSERT runs: the three that checked the row's shape
-- (action known, row present, delta only on UPDATE) cost ~107k instructions of a ~1,170k single-row UPDATE
-- (docs/design/capture.md). The shape is asserted by the capture tests instead (test/oracle.test.ts).
alter table audit_private.log_entries drop constraint if exists log_entries_action_known;
alter table audit_private.log_entries drop constraint if exists log_entries_row_present;
alter table audit_private.log_entries drop constraint if exists log_entries_delta_only_on_update;

-- Added after the first release, so fresh and upgraded databases have the same column order.
alter table audit_private.log_entries add column if not exists statement_number integer;

alter sequence audit_private.log_id_seq owned by audit_private.log_entries.id;

comment on table audit_private.log_entries is
  'Audit rows as stored (compact). Read them through the audit.log view.';
comment on column audit_private.log_entries.table_id is 'audit_private.tables.id of the audited table (not an OID: survives dump/restore)';
comment on column audit_private.log_entries.action is 'I = INSERT, U = UPDATE, D = DELETE, T = TRUNCATE';
comment on column audit_private.log_entries.row_data is 'INSERT: the new row; UPDATE and DELETE: the old row (excluded columns removed, masked columns replaced)';
comment on column audit_private.log_entries.delta is 'UPDATE only: the new values of the columns that changed';
comment on column audit_private.log_entries.statement_number is 'Which statement of its transaction wrote the row (1, 2, …; see audit_private.statement_number_statements); null for rows written before it existed';
comment on column audit_private.log_entries.old_entity_id is 'UPDATE that changed the primary key only: the entity id before the change';

-- Entity history: all rows of one entity, in order. entity_id leads: it is what every entity query knows
-- (the table id may arrive through a join the planner cannot turn into an index condition).
create index if not exists log_entries_entity_idx on audit_private.log_entries (entity_id, table_id, created_at);
-- Primary-key changes, for point-in-time reads of the old key (rare: costs nothing for other rows).
create index if not exists log_entries_old_entity_idx on audit_private.log_entries (old_entity_id, table_id, created_at) where old_entity_id is not null;
-- TRUNCATEs of a table, for point-in-time reads, are found through the entity index: they are the only rows
-- without an entity id (row_as_of asks for entity_id is null). A partial index of their own cost every INSERT
-- ~7k instructions to evaluate its predicate.
drop index if exists audit_private.log_entries_truncate_idx;
-- User activity: only rows written with a user in context (bulk SQL without context costs nothing here).
create index if not exists log_entries_user_idx on audit_private.log_entries (user_id, created_at) where user_id is not null;
-- Time ranges inside a month: BRIN is a few pages per month and costs almost nothing on writes.
create index if not exists log_entries_created_at_brin on audit_private.log_entries using brin (created_at);

-- Rows outside the premade months land here instead of failing the business write.
-- audit.create_partition moves them into their month once it exists.
create table if not exists audit.log_default partition of audit_private.log_entries default;
comment on table audit.log_default is
  'Audit rows whose month had no partition yet. Should stay empty: audit.ensure_partitions moves rows out.';
