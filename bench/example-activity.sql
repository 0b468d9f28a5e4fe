-- Example activity for the README's reporting cookbook: API-style writes with context, a DBA's bulk
-- fix without context, a key change and deletions. Run on a migrated database:
--   npx cartop-audit demo    (or: psql "$DATABASE_URL" -f bench/example-activity.sql)
begin;
select audit.set_context(user_id => 'u-ada', user_email => 'ada@example.com', ip_address => '203.0.113.10',
                         user_agent => 'shop-web/2.1', request_id => 'req-1001');
insert into app.products (name, price, stock, attributes) values
  ('Espresso cup', 4.50, 120, '{"color": "white"}'), ('Milk jug', 12.00, 40, '{"material": "steel"}'),
  ('Grinder', 89.00, 8, '{"burr": "conical"}'), ('Kettle', 45.00, 15, '{}');
select app.create_user('grace@example.com', 'Grace', 'Hopper', 'pw-grace');
commit;

begin;
select audit.set_context(user_id => 'u-grace', user_email => 'grace@example.com', ip_address => '198.51.100.7',
                         user_agent => 'shop-admin/1.4', request_id => 'req-1002', metadata => '{"reason": "supplier price change"}');
update app.products set price = 95.00 where name = 'Grinder';
update app.products set price = 4.90, stock = stock - 20 where name = 'Espresso cup';
commit;

begin;
select audit.set_context(user_id => 'u-ada', user_email => 'ada@example.com', request_id => 'req-1003');
update app.products set price = 92.50 where name = 'Grinder';
update app.users set last_name = 'Hopper (Admiral)' where email = 'grace@example.com';
commit;

-- A DBA's bulk fix in psql: no user in context, only the database role and application.
update app.products set stock = stock + 10 where stock < 20;

begin;
select audit.set_context(user_id => 'u-grace', user_email => 'grace@example.com', request_id => 'req-1004');
delete from app.products where name = 'Kettle';
commit;
