-- Mail that always flows: a failed message waits until retry_at while later ones go out,
-- and one the transport refuses for good is retired (dead_at) after a few tries, for the
-- DPO to see, instead of being tried first forever.
ALTER TABLE mail_outbox ADD COLUMN retry_at TEXT;
ALTER TABLE mail_outbox ADD COLUMN dead_at TEXT;
