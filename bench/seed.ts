// Realistic stored audit rows for benchmarks that need a big month or day without running the triggers.
import type pg from "pg";

/**
 * Inserts `rows` audit rows from `start`, one a second, wrapping after `spreadSeconds`: ~300-byte product
 * rows, a delta on a third of them, request context on half.
 */
export async function insertRealisticAuditRows(pool: pg.Pool, start: string, rows: number, spreadSeconds: number): Promise<void> {
  await pool.query(
    `insert into audit_private.log_entries (created_at, tx_id, table_id, action, entity_id, row_data, delta, user_id,
                                            user_email, ip_address, request_id, db_user, application_name)
     select $1::timestamptz + (g % $3::int) * interval '1 second', 100000 + g / 50, 1 + g % 3, (array['I','U','D'])[1 + g % 3]::"char",
            g::text,
            jsonb_build_object('id', g, 'sku', 'SKU-' || lpad(g::text, 8, '0'), 'name', 'Product number ' || g,
                               'price', (g % 1000) / 10.0, 'stock', g % 500, 'active', g % 3 <> 0,
                               'created_at', $1::timestamptz, 'updated_at', $1::timestamptz + interval '1 day'),
            case when g % 3 = 1 then jsonb_build_object('price', (g % 1000) / 10.0 + 1) end,
            case when g % 2 = 0 then 'user-' || (g % 1000) end, case when g % 2 = 0 then 'u' || (g % 1000) || '@example.com' end,
            case when g % 2 = 0 then '203.0.113.7'::inet end, case when g % 2 = 0 then 'req-' || g end, 'cartop_user', 'api'
     from generate_series(1, $2::int) g`,
    [start, rows, spreadSeconds],
  );
}
