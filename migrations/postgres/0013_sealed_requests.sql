-- Identity and details of a request sealed (AES-256-GCM): under the data subject's key
-- once the identity is verified (`sealed_by` names the subject), so crypto-shredding the
-- subject makes them unreadable; before that under a key of the request's own
-- (`own_key`, wrapped under the master key), deleted with the unverified request.
-- `identity_value` and `details` stay empty for such rows. Restrictions keep the
-- restricted identity sealed likewise, and queued e-mails are sealed whole (`sealed`),
-- their content dropped once sent.
ALTER TABLE dsr_requests ADD COLUMN sealed BYTEA;
ALTER TABLE dsr_requests ADD COLUMN sealed_by TEXT;
ALTER TABLE dsr_requests ADD COLUMN own_key BYTEA;
ALTER TABLE subject_restrictions ADD COLUMN sealed BYTEA;
ALTER TABLE subject_restrictions ADD COLUMN sealed_by TEXT;
ALTER TABLE mail_outbox ADD COLUMN sealed BYTEA;
