-- Sessions of the DPO workspace (`/admin`), opened with an admin token: only a hash of each
-- session's secret is kept. A session ends after 30 minutes without use, on sign-out, and
-- with its token.
CREATE TABLE admin_sessions (
    secret_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX admin_sessions_token ON admin_sessions (token_id);
