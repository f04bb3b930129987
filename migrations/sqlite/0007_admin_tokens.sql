-- Admin API tokens: only a hash of each secret is kept.
CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- A deadline may be extended once (Art. 12(3)), with the reason told to the subject.
ALTER TABLE dsr_requests ADD COLUMN extended_at TEXT;
ALTER TABLE dsr_requests ADD COLUMN reason TEXT;
