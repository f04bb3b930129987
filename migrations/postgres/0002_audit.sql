-- The audit log: append-only entries, their keys, the HMAC index of subjects and
-- signed checkpoints. `audit_head` hands out sequence numbers: appenders serialise on
-- its one row, so `seq` has no gaps and no forks across processes.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    next_seq BIGINT NOT NULL
);
INSERT INTO audit_head (id, next_seq) VALUES (1, 0);

CREATE TABLE audit_entries (
    seq BIGINT PRIMARY KEY,
    recorded_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT,
    subject_id TEXT,
    summary TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_version BIGINT NOT NULL,
    ciphertext BYTEA NOT NULL,
    mac BYTEA NOT NULL
);
CREATE INDEX audit_entries_subject ON audit_entries (subject_id);
CREATE INDEX audit_entries_request ON audit_entries (request_id);

-- Data keys wrapped under the master key. A shredded subject keeps its row with
-- `wrapped` NULL: the tombstone that stops the id from ever getting a key again.
CREATE TABLE audit_keys (
    key_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    version BIGINT NOT NULL,
    wrapped BYTEA,
    master_key_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    shredded_at TEXT
);

-- HMAC(index key, identity) -> subject id; rows go with the subject's key.
CREATE TABLE audit_subjects (
    lookup BYTEA PRIMARY KEY,
    subject_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_subjects_subject ON audit_subjects (subject_id);

CREATE TABLE audit_checkpoints (
    id BIGSERIAL PRIMARY KEY,
    tree_size BIGINT NOT NULL,
    root_hash TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL
);
