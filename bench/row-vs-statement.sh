#!/usr/bin/env bash
# Single-row UPDATE throughput: cartop-audit's statement-level capture against a row-level trigger that
# writes the same audit row, and against no trigger. Needs pgbench and a server (DATABASE_URL, which must
# point at a database whose server we may create a scratch database on).
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres bash bench/row-vs-statement.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
seconds=${2:-3}
: "${DATABASE_URL:?set DATABASE_URL}"
db="cartop_rowstmt_$$"
server="${DATABASE_URL%/*}"
psql -q "$DATABASE_URL" -c "create database $db"
trap 'psql -q "$DATABASE_URL" -c "drop database if exists $db with (force)"' EXIT
url="$server/$db"
DATABASE_URL="$url" npm run -s cli -- migrate 2>/dev/null
psql -q "$url" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
create schema bench;
create table bench.plain (id bigint primary key, sku text, name text, category text, price numeric(10,2),
  stock integer, active boolean, weight real, created_at timestamptz, updated_at timestamptz);
insert into bench.plain select g, 'SKU-' || g, 'Product ' || g, 'c' || g % 17, g % 100, g % 500, true, 1, now(), now()
  from generate_series(1, 200000) g;
create table bench.statement_level (like bench.plain including all);
insert into bench.statement_level select * from bench.plain;
select audit.enable_tracking('bench.statement_level');
create table bench.row_level (like bench.plain including all);
insert into bench.row_level select * from bench.plain;
select audit.enable_tracking('bench.row_level');
-- Replace the statement-level UPDATE capture by a row-level trigger that writes the same audit row.
drop trigger _900_audit_update on bench.row_level;
create function bench.capture_row() returns trigger language plpgsql security definer
  set search_path = pg_catalog, pg_temp set jit = off as $$
declare _ctx audit_private.context := audit_private.current_context();
begin
  insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta,
    user_id, user_email, ip_address, user_agent, request_id, metadata, db_user, application_name)
  select statement_timestamp(), txid_current(), 999, 'U', new.id::text, to_jsonb(old), d,
    _ctx.user_id, _ctx.user_email, _ctx.ip_address, _ctx.user_agent, _ctx.request_id, _ctx.metadata, _ctx.db_user, _ctx.application_name
  from (select case when old.price is distinct from new.price then jsonb_build_object('price', new.price) else '{}' end
            || case when old.stock is distinct from new.stock then jsonb_build_object('stock', new.stock) else '{}' end
            || case when old.updated_at is distinct from new.updated_at then jsonb_build_object('updated_at', new.updated_at) else '{}' end as d) x
  where d <> '{}';
  return null;
end $$;
create trigger _900_audit_update after update on bench.row_level for each row execute function bench.capture_row();
vacuum analyze;
SQL
tmp=$(mktemp -d)
for table in plain statement_level row_level; do
  printf '\\set u random(1, 200000)\nupdate bench.%s set price = price + 1, stock = stock + 1, updated_at = updated_at + interval %s where id = :u;\n' "$table" "'1 second'" > "$tmp/$table.sql"
  printf 'begin;\n\\set u random(1, 200000)\nupdate bench.%s set price = price + 1, stock = stock + 1, updated_at = updated_at + interval %s where id = :u;\ncommit;\n' "$table" "'1 second'" > "$tmp/$table-block.sql"
done
for r in $(seq "$rounds"); do
  for script in plain statement_level row_level plain-block statement_level-block row_level-block; do
    tps=$(pgbench -n -c 2 -j 2 -T "$seconds" -M prepared -f "$tmp/$script.sql" "$url" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    echo "$r $script $tps"
  done
done | awk '{ t[$2] = t[$2] " " $3 } END { for (k in t) print k ":" t[k] }' | sort
rm -rf "$tmp"
