-- Execution of verified requests: which instance claimed a request, what came of it, and
-- the access packages, sealed, until they expire.
ALTER TABLE dsr_requests ADD COLUMN claimed_by TEXT;
ALTER TABLE dsr_requests ADD COLUMN claimed_at TEXT;
ALTER TABLE dsr_requests ADD COLUMN result TEXT;

CREATE TABLE request_packages (
    request_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
