-- The processes serving from this store. Their claims on requests, mail, webhooks and job
-- runs are leases: held while the process sends a heartbeat, taken over at once when it is
-- known to be gone (same host, its process no longer runs) and after the lease otherwise.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at TEXT
);
ALTER TABLE mail_outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE webhook_outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE dsr_requests ADD COLUMN taken_over_from TEXT;
