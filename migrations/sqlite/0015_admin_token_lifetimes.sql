-- Admin tokens that end: a label to tell them apart, an expiry (none for the tokens made
-- before, which stay valid until revoked), and when each was last used.
ALTER TABLE admin_tokens ADD COLUMN label TEXT;
ALTER TABLE admin_tokens ADD COLUMN expires_at TEXT;
ALTER TABLE admin_tokens ADD COLUMN last_used_at TEXT;
