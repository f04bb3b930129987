-- Webhook bodies (an erasure notice names the person) rest sealed under the outbox key,
-- like queued mail, bound to their delivery id, and are opened only to send; `body`
-- stays NULL for them, and both go once the webhook is delivered. `lethe serve` seals
-- the bodies an earlier version left in clear once, when it starts, and moves the DPO's
-- reasons (extension, rejection) from `dsr_requests.reason` into the request's sealed part.
ALTER TABLE webhook_outbox ADD COLUMN sealed BYTEA;
