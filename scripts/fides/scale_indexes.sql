-- Secondary indexes on the identity and foreign-key columns (the shipped sample schema has
-- only primary keys), so that neither engine reads a 1-million-row table to find one person.
CREATE INDEX IF NOT EXISTS customer_email_idx ON customer(email);
CREATE INDEX IF NOT EXISTS employee_email_idx ON employee(email);
CREATE INDEX IF NOT EXISTS orders_customer_idx ON orders(customer_id);
CREATE INDEX IF NOT EXISTS order_item_order_idx ON order_item(order_id);
CREATE INDEX IF NOT EXISTS login_customer_idx ON login(customer_id);
CREATE INDEX IF NOT EXISTS payment_card_customer_idx ON payment_card(customer_id);
CREATE INDEX IF NOT EXISTS service_request_email_idx ON service_request(email);
CREATE INDEX IF NOT EXISTS service_request_alt_email_idx ON service_request(alt_email);
CREATE INDEX IF NOT EXISTS service_request_employee_idx ON service_request(employee_id);
CREATE INDEX IF NOT EXISTS report_email_idx ON report(email);
-- lethe compares identities case-blind (`lower(column) IN (...)`, see README "Identity
-- matching"), so its lookups use an index on lower(column); Fides compares as given and
-- uses the plain indexes above (and visit's primary key, which starts with the e-mail).
CREATE INDEX IF NOT EXISTS customer_lower_email_idx ON customer(lower(email));
CREATE INDEX IF NOT EXISTS employee_lower_email_idx ON employee(lower(email));
CREATE INDEX IF NOT EXISTS visit_lower_email_idx ON visit(lower(email));
CREATE INDEX IF NOT EXISTS service_request_lower_email_idx ON service_request(lower(email));
CREATE INDEX IF NOT EXISTS service_request_lower_alt_email_idx ON service_request(lower(alt_email));
CREATE INDEX IF NOT EXISTS report_lower_email_idx ON report(lower(email));
ANALYZE;
