-- Fides' postgres sample scaled up (schema unchanged; run after postgres_sample.sql):
-- psql -v n=100000 -f scale_data.sql   -> n generated customers "gen-<i>@example.com" (ids 1000+i)
-- per customer: 1 address, 1 payment_card, 5 orders, 10 order_items, 10 logins, 2 visits; 1 service_request per 10 customers
INSERT INTO address (id, house, street, city, state, zip)
  SELECT 1000+i, i % 9999, 'Street ' || i, 'City ' || (i % 500), 'NY', lpad((i % 99999)::text, 5, '0') FROM generate_series(1, :n) i;
INSERT INTO customer (id, email, name, created, address_id)
  SELECT 1000+i, 'gen-' || i || '@example.com', 'Customer ' || i, '2020-01-01'::timestamp + (i || ' minutes')::interval, 1000+i FROM generate_series(1, :n) i;
INSERT INTO payment_card (id, name, ccn, code, preferred, customer_id, billing_address_id)
  SELECT 'pay_gen_' || i, 'Card ' || i, 4000000000 + i, (i % 999)::smallint, true, 1000+i, 1000+i FROM generate_series(1, :n) i;
INSERT INTO orders (id, customer_id, shipping_address_id, payment_card_id)
  SELECT 'ord_gen_' || i || '_' || j, 1000+i, 1000+i, 'pay_gen_' || i FROM generate_series(1, :n) i, generate_series(1, 5) j;
INSERT INTO order_item (order_id, item_no, product_id, quantity)
  SELECT 'ord_gen_' || i || '_' || j, k::smallint, 1 + ((i + j + k) % 6), 1 FROM generate_series(1, :n) i, generate_series(1, 5) j, generate_series(1, 2) k;
INSERT INTO login (id, customer_id, time)
  SELECT 1000 + (i-1)*10 + j, 1000+i, '2021-01-01'::timestamp + (j || ' days')::interval FROM generate_series(1, :n) i, generate_series(1, 10) j;
INSERT INTO visit (email, last_visit)
  SELECT 'gen-' || i || '@example.com', '2021-01-06'::timestamp + (j || ' hours')::interval FROM generate_series(1, :n) i, generate_series(1, 2) j;
INSERT INTO service_request (id, email, alt_email, opened, closed, employee_id)
  SELECT 'ser_gen_' || i, 'gen-' || i || '@example.com', NULL, '2021-01-01', NULL, 1 FROM generate_series(1, :n) i WHERE i % 10 = 0;
ANALYZE;
