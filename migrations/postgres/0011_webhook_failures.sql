-- Webhooks are delivered by a task of their own and given up after a bounded time: a
-- given-up webhook is `failed` (the DPO lists and re-queues it), and its time window
-- starts again when re-queued. Each delivery carries an id the receiver can deduplicate on.
ALTER TABLE webhook_outbox ADD COLUMN failed_at TEXT;
ALTER TABLE webhook_outbox ADD COLUMN requeued_at TEXT;
ALTER TABLE webhook_outbox ADD COLUMN delivery_id TEXT;
CREATE INDEX webhook_outbox_failed ON webhook_outbox (failed_at);
