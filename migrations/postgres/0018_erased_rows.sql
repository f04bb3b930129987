-- Rows an erasure (Art. 17) left in place because a legal obligation or a hold kept part
-- of them. Retention counts only the obligations for these rows from then on, so they go
-- (or their fields are masked) on the date the erasure named. The key is the row's
-- primary key as text; nothing else of the person is stored.
CREATE TABLE erased_rows (
    system TEXT NOT NULL,
    collection TEXT NOT NULL,
    row_key TEXT NOT NULL,
    request_id TEXT,
    erased_at TEXT NOT NULL,
    PRIMARY KEY (system, collection, row_key)
);
