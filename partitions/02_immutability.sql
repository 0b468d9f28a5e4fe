-- The audit trail is append-only: no role, the owner included, may UPDATE, DELETE or TRUNCATE it.
-- Old months leave only as whole partitions (detach/drop) through the archive path.
-- Statement-level guards refuse the statement even when it would touch no row. Statement triggers are
-- not inherited by partitions, so every partition gets its own (audit_private.protect_partition).

create or replace function audit_private.tg__append_only()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'audit trail is append-only: % on %.% is not allowed', tg_op, tg_table_schema, tg_table_name
    using errcode = 'insufficient_privilege',
          hint = 'Old months leave the database as whole partitions through the archive path.';
end
$$;

create or replace function audit_private.protect_partition(target regclass)
  returns void
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select from pg_trigger where tgrelid = target and tgname = '_100_append_only') then
    execute format('drop trigger _100_append_only on %s', target);
  end if;
  execute format(
    'create trigger _100_append_only before update or delete or truncate on %s
       for each statement execute function audit_private.tg__append_only()', target);
end
$$;

select audit_private.protect_partition('audit_private.log_entries'::regclass);
select audit_private.protect_partition(inhrelid::regclass)
  from pg_inherits where inhparent = 'audit_private.log_entries'::regclass;

-- Privileges: nobody gets write access to the storage; capture writes through security definer functions.
revoke all on audit_private.log_entries from public;
revoke all on audit.log_default from public;
