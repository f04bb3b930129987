-- The statuses of a request and the moves between them, as in `requests::status`: the
-- store refuses any other status, and any move the table there does not allow.
ALTER TABLE dsr_requests ADD CONSTRAINT dsr_requests_status CHECK (status IN (
    'received', 'identity_pending', 'verified', 'awaiting_approval', 'in_progress',
    'completed', 'partially_completed', 'rejected', 'failed', 'cancelled'
));
CREATE FUNCTION dsr_requests_status_move() RETURNS trigger AS $$
BEGIN
    IF NEW.status <> OLD.status AND OLD.status || '>' || NEW.status NOT IN (
        'received>identity_pending', 'received>verified', 'received>awaiting_approval',
        'received>in_progress', 'received>rejected', 'received>cancelled',
        'identity_pending>verified', 'identity_pending>awaiting_approval',
        'identity_pending>in_progress', 'identity_pending>rejected',
        'identity_pending>cancelled', 'verified>in_progress', 'verified>failed',
        'verified>rejected', 'verified>cancelled', 'awaiting_approval>verified',
        'awaiting_approval>rejected', 'awaiting_approval>cancelled',
        'in_progress>verified', 'in_progress>awaiting_approval', 'in_progress>completed', 'in_progress>partially_completed',
        'in_progress>failed', 'in_progress>rejected', 'failed>verified',
        'failed>completed', 'failed>rejected'
    ) THEN
        RAISE EXCEPTION 'a request cannot make this move';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER dsr_requests_status_move BEFORE UPDATE OF status ON dsr_requests
FOR EACH ROW EXECUTE FUNCTION dsr_requests_status_move();
