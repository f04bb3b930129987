-- Lifting a restriction (Art. 18(3)): the person is told first. The lift is announced with
-- a message, and takes effect once that message has been sent.
ALTER TABLE subject_restrictions ADD COLUMN lift_announced_at TEXT;
ALTER TABLE subject_restrictions ADD COLUMN lift_mail_id BIGINT;
