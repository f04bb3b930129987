-- The statuses of a request and the moves between them, as in `requests::status`: the
-- store refuses any other status, and any move the table there does not allow.
CREATE TRIGGER dsr_requests_status_insert BEFORE INSERT ON dsr_requests
WHEN NEW.status NOT IN (
    'received', 'identity_pending', 'verified', 'awaiting_approval', 'in_progress',
    'completed', 'partially_completed', 'rejected', 'failed', 'cancelled'
)
BEGIN
    SELECT RAISE(ABORT, 'not a request status');
END;
CREATE TRIGGER dsr_requests_status_move BEFORE UPDATE OF status ON dsr_requests
WHEN NEW.status <> OLD.status AND OLD.status || '>' || NEW.status NOT IN (
    'received>identity_pending', 'received>verified', 'received>awaiting_approval',
    'received>in_progress', 'received>rejected', 'received>cancelled',
    'identity_pending>verified', 'identity_pending>awaiting_approval',
    'identity_pending>in_progress', 'identity_pending>rejected',
    'identity_pending>cancelled', 'verified>in_progress', 'verified>failed',
    'verified>rejected', 'verified>cancelled', 'awaiting_approval>verified',
    'awaiting_approval>rejected', 'awaiting_approval>cancelled', 'in_progress>verified', 'in_progress>awaiting_approval',
    'in_progress>completed', 'in_progress>partially_completed', 'in_progress>failed',
    'in_progress>rejected', 'failed>verified', 'failed>completed', 'failed>rejected'
)
BEGIN
    SELECT RAISE(ABORT, 'a request cannot make this move');
END;
