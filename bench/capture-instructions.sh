#!/usr/bin/env bash
# Instructions per transaction (valgrind's callgrind) of a single-row UPDATE and of 1000-row UPDATE, INSERT and
# DELETE statements (the last two rolled back, so every run sees the same table), for a table audited by
# cartop-audit, by a row-level hstore trigger (the reference technique of bench/write-path.ts), by the
# typed-history prototype (bench/typed-history.sql) and by nothing. Instruction counts repeat exactly, unlike
# timings on a busy machine: use this for design decisions, bench/write-path.ts for the ratios. Each figure is
# (cost of 2N transactions - cost of N) / N in a single-user backend, so start-up cost drops out.
#   bash bench/capture-instructions.sh [N=200]        (needs valgrind and PostgreSQL 15's server binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
work=$(mktemp -d /tmp/cartop-cg-XXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
chmod 0777 "$work"
as_pg "$bin/initdb" -D "$work/data" -U postgres -A trust >/dev/null
port=$(node -e 'const s=require("net").createServer().listen(0,()=>{console.log(s.address().port);s.close()})')
as_pg "$bin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c fsync=off -c synchronous_commit=off" -l "$work/log" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$work/data" stop -m fast >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
url="postgres://postgres@127.0.0.1:$port/postgres"
DATABASE_URL="$url" npm run -s cli -- migrate >/dev/null 2>&1
psql -q "$url" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
create schema bench;
create extension hstore with schema bench;
create table bench.plain (id bigint primary key, sku text not null, name text not null, category text not null,
  price numeric(10,2) not null, stock integer not null, active boolean not null, weight real,
  created_at timestamptz not null, updated_at timestamptz not null);
insert into bench.plain select g, 'SKU-' || lpad(g::text, 8, '0'), 'Product number ' || g, 'category-' || (g % 17),
  (g % 1000) / 10.0 + 1, g % 500, g % 3 <> 0, (g % 97) / 3.0, now(), now() from generate_series(1, 20000) g;
create table bench.audited (like bench.plain including all);
insert into bench.audited select * from bench.plain;
select audit.enable_tracking('bench.audited');
create table bench.reference (like bench.plain including all);
insert into bench.reference select * from bench.plain;
create table bench.reference_log (event_id bigserial primary key, schema_name text not null, table_name text not null,
  relid oid not null, session_user_name text, action_tstamp_tx timestamptz not null, action_tstamp_stm timestamptz not null,
  action_tstamp_clk timestamptz not null, transaction_id bigint, application_name text, client_addr inet, client_port integer,
  client_query text, action char(1) not null, row_data bench.hstore, changed_fields bench.hstore, statement_only boolean not null);
create index on bench.reference_log (relid); create index on bench.reference_log (action_tstamp_stm); create index on bench.reference_log (action);
create function bench.tg__reference() returns trigger language plpgsql set search_path = pg_catalog, bench as $$
declare entry bench.reference_log;
begin
  entry := row(nextval('bench.reference_log_event_id_seq'), tg_table_schema, tg_table_name, tg_relid, session_user,
    transaction_timestamp(), statement_timestamp(), clock_timestamp(), txid_current(), current_setting('application_name'),
    inet_client_addr(), inet_client_port(), null, substring(tg_op, 1, 1), null, null, false);
  if tg_op = 'UPDATE' then
    entry.row_data := hstore(old.*); entry.changed_fields := hstore(new.*) - entry.row_data;
    if entry.changed_fields = ''::hstore then return null; end if;
  elsif tg_op = 'DELETE' then entry.row_data := hstore(old.*);
  else entry.row_data := hstore(new.*); end if;
  insert into bench.reference_log values (entry.*);
  return null;
end $$;
create trigger reference after insert or update or delete on bench.reference for each row execute function bench.tg__reference();
create table bench.history (like bench.plain including all);
insert into bench.history select * from bench.plain;
\i bench/typed-history.sql
select bench.create_typed_history('bench.history');
vacuum analyze;
SQL
as_pg "$bin/pg_ctl" -D "$work/data" stop -m fast >/dev/null
# The API's context (src/graphql/preset.ts pgSettingsFor), plus metadata as set_context checks it.
ctx="select set_config('audit.user_id', 'u-42', true), set_config('audit.user_email', 'ada@example.com', true), set_config('audit.ip_address', '203.0.113.7', true), set_config('audit.user_agent', 'Mozilla/5.0 (X11; Linux x86_64) bench', true), set_config('audit.request_id', 'b1946ac9-2f5d-4b2e-9bd1-6ee0f7a5a7d3', true), set_config('audit.metadata', '{\"operation\": \"updateProduct\"}', true), set_config('audit_private.context_checked', '11:203.0.113.7|{\"operation\": \"updateProduct\"}', true)"
set_clause="price = price + 1, stock = stock + 1, updated_at = updated_at + interval '1 second'"
script() { # table, transactions, statement: update1 | update | insert | delete (1000 rows; these two roll back)
  for i in $(seq "$2"); do
    lo=$(( (i * 1000) % 19000 + 1 )); hi=$(( (i * 1000) % 19000 + 1000 ))
    echo "begin"; echo "$ctx"
    case $3 in
      update1) echo "update bench.$1 set $set_clause where id = $(( (i * 7919) % 20000 + 1 ))"; echo "commit" ;;
      update) echo "update bench.$1 set $set_clause where id between $lo and $hi"; echo "commit" ;;
      insert) echo "insert into bench.$1 select id + 100000, sku, name, category, price, stock, active, weight, created_at, updated_at from bench.plain where id between $lo and $hi"; echo "rollback" ;;
      delete) echo "delete from bench.$1 where id between $lo and $hi"; echo "rollback" ;;
    esac
  done
}
count() { # table, transactions, statement -> instructions
  script "$1" "$2" "$3" > "$work/script.sql"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin/postgres" --single -D "$work/data" \
    -c fsync=off -c synchronous_commit=off postgres < "$work/script.sql" >/dev/null 2>"$work/vg.log"
  sed -n 's/^summary: //p' "$work/cg.out"
}
[ -n "${KEEP:-}" ] && echo "kept $work"
printf '%-10s %12s %16s %16s %16s\n' table "1-row UPDATE" "1000-row UPDATE" "1000-row INSERT" "1000-row DELETE"
per_tx() { echo $(( ($(count "$1" $((2 * $2)) "$3") - $(count "$1" "$2" "$3")) / $2 )); }
for table in plain audited reference history; do
  printf '%-10s %12s %16s %16s %16s\n' "$table" "$(per_tx "$table" "$n" update1)" "$(per_tx "$table" 10 update)" \
    "$(per_tx "$table" 10 insert)" "$(per_tx "$table" 10 delete)"
done
