-- Verification that cannot be guessed or raced: each code e-mail also carries a link with
-- a 192-bit secret (kept only as a hash) that confirms the request by itself; code checks
-- are counted per person, across all their requests, under a keyed hash of the folded
-- identity (never the identity in clear).
ALTER TABLE dsr_requests ADD COLUMN link_hash TEXT;
ALTER TABLE dsr_requests ADD COLUMN link_expires_at TEXT;

CREATE TABLE code_checks (
    identity_key TEXT PRIMARY KEY,
    window_start TEXT NOT NULL,
    checks BIGINT NOT NULL
);
