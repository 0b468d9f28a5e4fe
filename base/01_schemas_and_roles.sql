-- Schemas and roles. Idempotent: every source file is replayed whole by each source migration.
--
-- audit          the public contract: the audit.log view, tracking API, partition API, context setter
-- audit_private  storage and machinery that users never call directly

create schema if not exists audit;
create schema if not exists audit_private;

comment on schema audit is 'cartop-audit: the audit trail and its API';
comment on schema audit_private is 'cartop-audit internals: storage and capture machinery (not an API)';

-- Roles are cluster-wide, so they may already exist (another database, an earlier install).
do $$
declare
  role_name text;
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_authenticator') then
    create role cartop_authenticator login noinherit;
  end if;
  foreach role_name in array array['cartop_anonymous', 'cartop_user', 'cartop_auditor', 'cartop_capture'] loop
    if not exists (select from pg_catalog.pg_roles where rolname = role_name) then
      execute format('create role %I nologin', role_name);
    end if;
  end loop;
end
$$;

-- cartop_capture owns the generated capture functions (security definer): it may append audit rows, nothing
-- else. Never a superuser, never granted to a login (see SECURITY.md).
alter role cartop_capture nologin nosuperuser nocreatedb nocreaterole noinherit nobypassrls;

-- Reads the plaintext of encrypted columns (triggers/03_sensitive.sql): auditors, granted once when the role is
-- made, so an operator who revokes it is not overruled by the next deploy.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_sensitive_reader') then
    create role cartop_sensitive_reader nologin;
    grant cartop_sensitive_reader to cartop_auditor;
  end if;
end
$$;

-- pgcrypto: the keys and ciphers of encrypted columns (and the example application's password hashes).
create extension if not exists pgcrypto;

-- The API connects as cartop_authenticator and switches (SET ROLE) to the role its JWT selects.
grant cartop_anonymous, cartop_user, cartop_auditor to cartop_authenticator;

-- Nobody but the owner creates objects in these schemas; readers get usage explicitly.
revoke all on schema audit, audit_private from public;
grant usage on schema audit to cartop_anonymous, cartop_user, cartop_auditor;
grant usage on schema audit_private to cartop_user, cartop_auditor, cartop_capture;
