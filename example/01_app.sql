-- The example application schema: what the GraphQL API serves and what the tests and benchmark write to.
-- Both tables are tracked; users.password_hash is excluded from the audit trail.
--
-- Who may do what, as a real application should (the API selects the role from the token's `role` claim):
--   cartop_user   a signed-in user: reads and edits only their own app.users row (id = the token's sub),
--                 sets only their own password; writes the product catalogue.
--   cartop_admin  the application's administrators: create, edit and delete any user, set any password.
--   cartop_anonymous reads the catalogue. cartop_auditor reads the audit trail, not the application.

create schema if not exists app;

do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'cartop_admin') then
    create role cartop_admin nologin;
  end if;
end
$$;
grant cartop_admin to cartop_authenticator;
grant usage on schema app to cartop_anonymous, cartop_user, cartop_auditor, cartop_admin;

create table if not exists app.users (
  id            uuid        primary key default gen_random_uuid(),
  email         text        not null,
  first_name    text        not null default '',
  last_name     text        not null default '',
  password_hash text,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint users_email_valid check (email ~ '^[^@\s]+@[^@\s]+$')
);
create unique index if not exists users_email_unique on app.users (lower(email));
comment on table app.users is 'Example application users';
comment on column app.users.password_hash is 'bcrypt hash (pgcrypto crypt/gen_salt); never audited';

create table if not exists app.products (
  id         bigint        generated always as identity primary key,
  name       text          not null,
  price      numeric(12,2) not null check (price >= 0),
  stock      integer       not null default 0 check (stock >= 0),
  attributes jsonb         not null default '{}',
  created_at timestamptz   not null default now(),
  updated_at timestamptz   not null default now()
);
comment on table app.products is 'Example product catalogue';

-- Hashes a password the way app.users stores it (bcrypt via pgcrypto).
create or replace function app.hash_password(password text)
  returns text
  language sql
  volatile
  set search_path = pg_catalog, public, pg_temp
as $$
  select crypt(password, gen_salt('bf', 8))
$$;

create or replace function app.tg__touch_updated_at()
  returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists _100_touch_updated_at on app.users;
create trigger _100_touch_updated_at before update on app.users
  for each row execute function app.tg__touch_updated_at();
drop trigger if exists _100_touch_updated_at on app.products;
create trigger _100_touch_updated_at before update on app.products
  for each row execute function app.tg__touch_updated_at();

-- The signed-in user's id: the token's sub, which the API sets as audit.user_id for the transaction. Any
-- session can set that setting, so it is believed only from a login that may change every user anyway (the
-- API's login cartop_authenticator, a member of cartop_admin; a superuser; the table's owner). Any other SQL
-- login is the user named like its login.
create or replace function app.current_user_id()
  returns text
  language sql
  stable
  parallel safe
  set search_path = pg_catalog, pg_temp
as $$
  select case when exists (select from pg_catalog.pg_roles r where r.rolname = session_user and (r.rolsuper or r.rolbypassrls))
                or pg_catalog.pg_has_role(session_user, 'cartop_admin', 'MEMBER')
                or pg_catalog.pg_has_role(session_user, (select c.relowner from pg_catalog.pg_class c where c.oid = 'app.users'::pg_catalog.regclass), 'MEMBER')
              then nullif(pg_catalog.current_setting('audit.user_id', true), '')
              else session_user::text end
$$;
comment on function app.current_user_id() is 'The acting user''s id (audit.user_id, set by the API from the token''s sub)';

alter table app.users enable row level security;
drop policy if exists users_self on app.users;
create policy users_self on app.users for all to cartop_user
  using (id::text = app.current_user_id()) with check (id::text = app.current_user_id());
drop policy if exists users_admin on app.users;
create policy users_admin on app.users for all to cartop_admin using (true) with check (true);

revoke all on app.users from cartop_user;
grant select, update (email, first_name, last_name, password_hash) on app.users to cartop_user;
grant select, insert, update, delete on app.users to cartop_admin;
grant select, insert, update, delete on app.products to cartop_user, cartop_admin;
grant select on app.products to cartop_anonymous;

select audit.enable_tracking('app.users', excluded_columns => '{password_hash}');
select audit.enable_tracking('app.products');

-- The API's user mutations: the password arrives in clear over TLS, is hashed here, and neither it nor
-- the hash is ever returned or audited (password_hash is excluded from tracking and hidden from GraphQL).
create or replace function app.create_user(email text, first_name text default '', last_name text default '', password text default null)
  returns app.users
  language sql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
  insert into app.users (email, first_name, last_name, password_hash)
  values (email, coalesce(first_name, ''), coalesce(last_name, ''), case when password is not null then app.hash_password(password) end)
  returning *
$$;

comment on function app.create_user(text, text, text, text) is 'Creates a user (admins only); the password is stored only as a bcrypt hash';

create or replace function app.set_user_password(user_id uuid, password text)
  returns app.users
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  result app.users;
begin
  -- Row-level security limits the update to rows the caller may change: their own, or any for an admin.
  update app.users set password_hash = app.hash_password(password) where id = user_id returning * into result;
  if not found then
    raise exception 'app.set_user_password: no user % that you may change', user_id
      using errcode = '42501', hint = 'a user may set only their own password; an admin token may set anyone''s';
  end if;
  return result;
end
$$;

comment on function app.set_user_password(uuid, text) is 'Replaces a user''s password (stored only as a bcrypt hash): one''s own, or anyone''s for an admin';

revoke all on function app.create_user(text, text, text, text), app.set_user_password(uuid, text), app.hash_password(text), app.current_user_id() from public;
-- Earlier versions let every user create users.
revoke all on function app.create_user(text, text, text, text) from cartop_user;
grant execute on function app.set_user_password(uuid, text), app.hash_password(text), app.current_user_id() to cartop_user, cartop_admin;
grant execute on function app.create_user(text, text, text, text) to cartop_admin;
grant usage on all sequences in schema app to cartop_user, cartop_admin;
