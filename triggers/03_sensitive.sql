-- Sensitive values: a third protection beside excluded and masked columns. An encrypted column's values are
-- kept in the trail encrypted (AES-256-CBC, a random IV per value, pgcrypto) under a key per data subject (the
-- value of the column enable_tracking names as subject_column, e.g. the user id of the row). Members of
-- cartop_sensitive_reader (auditors, by default) read the plaintext in audit.log, audit.changes and row_as_of;
-- everyone else reads "[encrypted]", and, once audit.erase_subject destroyed the subject's key, everyone reads
-- "[erased]". The trail holds ciphertext only, so seals and archives cover it unchanged before and after an
-- erasure. In the trail a value reads "[encrypted:<key id>:<base64 of IV and ciphertext>]", the key id being
-- audit_private.subject_keys.id. Erasure reaches what the trail held until then; the subject's data in the
-- tracked tables is the application's to erase (a later write records the row as it is then, under a new key).

-- One key per data subject. Only its owner and cartop_capture (which makes keys on first use) touch it;
-- readers reach plaintext only through audit_private.revealed.
create table if not exists audit_private.subject_keys (
  id         bigint      generated always as identity primary key,
  subject    text        not null unique,
  key        bytea       not null,
  created_at timestamptz not null default now()
);
comment on table audit_private.subject_keys is
  'Encryption keys of encrypted columns, one per data subject; a deleted row is an erased subject (audit.erase_subject)';
revoke all on audit_private.subject_keys from public;
grant select, insert on audit_private.subject_keys to cartop_capture;
-- Readers decrypt with their own privilege on the keys: who may read plaintext is decided by the privileges of
-- the code running (current_user), never by settings, which say nothing when an owner's function runs inside
-- another role's session (an index expression during ANALYZE, a security definer function).
grant select on audit_private.subject_keys to cartop_sensitive_reader;
-- No statistics: a sample of keys in pg_statistic would outlive their erasure.
alter table audit_private.subject_keys alter column key set statistics 0;
alter table audit_private.subject_keys alter column subject set statistics 0;
do $$
begin
  if (select rolsuper from pg_roles where rolname = current_user) then
    delete from pg_statistic where starelid = 'audit_private.subject_keys'::regclass;
  end if;
end
$$;

-- Who erased which subject, when: the record of every erasure, append-only like the trail.
create table if not exists audit.erasures (
  id             bigint      generated always as identity primary key,
  subject        text        not null,
  erased_at      timestamptz not null default now(),
  erased_by      text        not null,
  keys_destroyed integer     not null
);
comment on table audit.erasures is 'Every audit.erase_subject: whose key was destroyed, by whom, when (append-only)';
revoke all on audit.erasures from public;
grant select on audit.erasures to cartop_auditor;
do $$
begin
  if not exists (select from pg_trigger where tgrelid = 'audit.erasures'::regclass and tgname = '_100_append_only') then
    create trigger _100_append_only before update or delete or truncate on audit.erasures
      for each statement execute function audit_private.tg__append_only();
  end if;
end
$$;

-- Whether a key id was erased (its key is gone): what everyone may know, to read "[erased]" rather than
-- "[encrypted]". Security definer: it reads only whether the row exists.
create or replace function audit_private.key_erased(key_id bigint)
  returns boolean
  language sql
  stable
  security definer
  set search_path = pg_catalog, pg_temp
as $$
  select not exists (select from audit_private.subject_keys k where k.id = key_id)
$$;
revoke all on function audit_private.key_erased(bigint) from public;
grant execute on function audit_private.key_erased(bigint) to cartop_user, cartop_auditor, cartop_sensitive_reader;

-- The encryption and reading functions call pgcrypto wherever it is installed, schema-qualified (%I), with
-- exact argument types: no function a lower role could add is ever picked.
do $do$
declare
  crypto text := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'pgcrypto');
begin
  -- A value as the trail keeps it: encrypted under the subject's key (made on first use). Runs inside capture,
  -- as cartop_capture. Without a subject (its column is null) there is no key to erase later: the value is
  -- kept as masked, never in the clear.
  execute format($sql$
    create or replace function audit_private.encrypted_value(for_subject text, plain jsonb)
      returns jsonb
      language plpgsql
      volatile
      set search_path = pg_catalog, pg_temp
    as $body$
    declare
      key_id bigint;
      key_bytes bytea;
      iv bytea := %1$I.gen_random_bytes(16);
    begin
      if for_subject is null or for_subject = '' then
        return audit_private.masked_value();
      end if;
      select k.id, k.key into key_id, key_bytes from audit_private.subject_keys k where k.subject = for_subject;
      if key_id is null then
        insert into audit_private.subject_keys (subject, key) values (for_subject, %1$I.gen_random_bytes(32))
        on conflict (subject) do nothing;
        select k.id, k.key into key_id, key_bytes from audit_private.subject_keys k where k.subject = for_subject;
      end if;
      return to_jsonb(format('[encrypted:%%s:%%s]', key_id, translate(encode(iv || %1$I.encrypt_iv(
        convert_to(plain::text, 'UTF8'), key_bytes, iv, 'aes-cbc/pad:pkcs'), 'base64'), E'\n', '')));
    end
    $body$
  $sql$, crypto);

  -- One stored value as the running code may read it: the plaintext (whoever can read the keys:
  -- cartop_sensitive_reader, while the key exists), "[erased]" (the key is gone), "[encrypted]" (everyone
  -- else). Security invoker: decrypting needs the caller's own privilege on the keys. A value that is not one
  -- of ours (text an application wrote into a column before it was encrypted) is returned as it is.
  execute format($sql$
    create or replace function audit_private.revealed_value(value jsonb)
      returns jsonb
      language plpgsql
      stable
      set search_path = pg_catalog, pg_temp
    as $body$
    declare
      parts text[] := regexp_match(value #>> '{}', '^\[encrypted:([0-9]{1,18}):([A-Za-z0-9+/=]+)\]$');
      key_bytes bytea;
    begin
      if jsonb_typeof(value) is distinct from 'string' or parts is null then
        return value;
      elsif audit_private.key_erased(parts[1]::bigint) then
        return to_jsonb('[erased]'::text);
      elsif not has_table_privilege('audit_private.subject_keys', 'select') then
        return to_jsonb('[encrypted]'::text);
      end if;
      select k.key into key_bytes from audit_private.subject_keys k where k.id = parts[1]::bigint;
      begin
        return convert_from(%1$I.decrypt_iv(substr(decode(parts[2], 'base64'), 17), key_bytes,
          substr(decode(parts[2], 'base64'), 1, 16), 'aes-cbc/pad:pkcs'), 'UTF8')::jsonb;
      exception when others then
        return value;
      end;
    end
    $body$
  $sql$, crypto);
end
$do$;
revoke all on function audit_private.revealed_value(jsonb) from public;
grant execute on function audit_private.revealed_value(jsonb) to cartop_user, cartop_auditor, cartop_sensitive_reader;
revoke all on function audit_private.encrypted_value(text, jsonb) from public;
grant execute on function audit_private.encrypted_value(text, jsonb) to cartop_capture;

-- A stored row (row_data or delta) of a table with encrypted columns, as the acting role may read it. Inlined
-- into the reading query (no SET, one expression without a subquery: PostgreSQL inlines no SQL function whose
-- body holds one), so a table without encrypted columns costs a CASE per row; revealed_columns, which does the
-- work, runs only for tables with encrypted columns. (With the subquery inline, every audit.log row paid up to
-- five SQL function calls: ~25 µs a row.)
create or replace function audit_private.revealed_columns(data jsonb, encrypted_columns text[])
  returns jsonb
  language sql
  stable
  parallel safe
as $$
  select data || coalesce((select pg_catalog.jsonb_object_agg(c, audit_private.revealed_value(data -> c))
                          from pg_catalog.unnest(encrypted_columns) c where data ? c), '{}')
$$;

create or replace function audit_private.revealed(data jsonb, encrypted_columns text[])
  returns jsonb
  language sql
  stable
  parallel safe
as $$
  select case when data is null or pg_catalog.cardinality(encrypted_columns) = 0 then data
    else audit_private.revealed_columns(data, encrypted_columns) end
$$;

-- Erasure: destroys the subject's key, so every value encrypted under it reads "[erased]" everywhere (archives
-- restored later included), and records who did it. Cannot be undone: the key was random and only here. The
-- deleted row lingers in the table file until VACUUM and in WAL and backups until they expire (SECURITY.md).
create or replace function audit.erase_subject(subject text)
  returns audit.erasures
  language plpgsql
  volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  destroyed integer;
  erasure audit.erasures;
begin
  if subject is null or subject = '' then
    raise exception 'audit.erase_subject: subject must be given' using errcode = 'null_value_not_allowed';
  end if;
  delete from audit_private.subject_keys k where k.subject = erase_subject.subject;
  get diagnostics destroyed = row_count;
  if destroyed = 0 then
    raise notice 'audit.erase_subject: no key for subject %: nothing of theirs is encrypted in the trail (or it was erased before)', subject;
  end if;
  insert into audit.erasures (subject, erased_by, keys_destroyed)
  values (subject, audit_private.acting_role(), destroyed)
  returning * into erasure;
  return erasure;
end
$$;
comment on function audit.erase_subject(text) is
  'Destroys the key of one data subject: its encrypted values read "[erased]" from now on, everywhere; recorded in audit.erasures';
revoke all on function audit.erase_subject(text) from public;
