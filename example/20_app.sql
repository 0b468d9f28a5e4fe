-- The example application schema: what the GraphQL API serves and what the tests and benchmark write to.
-- Both tables are tracked; users.password_hash is excluded from the audit trail.

create extension if not exists pgcrypto;
create schema if not exists app;
grant usage on schema app to cartop_anonymous, cartop_user, cartop_auditor;

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

grant select, insert, update, delete on app.users, app.products to cartop_user;
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

comment on function app.create_user(text, text, text, text) is 'Creates a user; the password is stored only as a bcrypt hash';

create or replace function app.set_user_password(user_id uuid, password text)
  returns app.users
  language sql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
  update app.users set password_hash = app.hash_password(password) where id = user_id returning *
$$;

comment on function app.set_user_password(uuid, text) is 'Replaces a user''s password (stored only as a bcrypt hash)';

revoke all on function app.create_user(text, text, text, text), app.set_user_password(uuid, text), app.hash_password(text) from public;
grant execute on function app.create_user(text, text, text, text), app.set_user_password(uuid, text), app.hash_password(text) to cartop_user;
grant usage on all sequences in schema app to cartop_user;
