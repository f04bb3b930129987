-- Retries with back-off, requests arriving over OpenDSR, subject restrictions (Art. 18),
-- and signed webhooks (processor erasure notices, OpenDSR status callbacks) delivered
-- from an outbox written in the same transaction as the change they announce.
ALTER TABLE dsr_requests ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE dsr_requests ADD COLUMN next_attempt_at TEXT;
ALTER TABLE dsr_requests ADD COLUMN channel TEXT NOT NULL DEFAULT 'api';
ALTER TABLE dsr_requests ADD COLUMN external_id TEXT;
ALTER TABLE dsr_requests ADD COLUMN callbacks TEXT;
CREATE UNIQUE INDEX dsr_requests_external ON dsr_requests (external_id);

CREATE TABLE subject_restrictions (
    request_id TEXT PRIMARY KEY,
    identity_kind TEXT NOT NULL,
    identity_value TEXT NOT NULL,
    placed_at TEXT NOT NULL,
    lifted_at TEXT
);

CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    request_id TEXT,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT,
    signing TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_at TEXT,
    delivered_at TEXT,
    last_status TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (delivered_at, next_attempt_at);

-- A sender claims a message before sending it, so two senders never send it twice.
ALTER TABLE mail_outbox ADD COLUMN claimed_at TEXT;
