-- Data-subject requests. The e-mail address is kept to answer the person; verification
-- codes and access tokens only as hashes.
CREATE TABLE dsr_requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    identity_kind TEXT NOT NULL,
    identity_value TEXT NOT NULL,
    identity_lookup TEXT NOT NULL,
    details TEXT,
    token_hash TEXT NOT NULL,
    code_hash TEXT,
    code_expires_at TEXT,
    code_attempts BIGINT NOT NULL DEFAULT 0,
    codes_sent BIGINT NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    due_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX dsr_requests_open ON dsr_requests (identity_lookup, kind, status);
