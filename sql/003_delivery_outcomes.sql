-- A delivery tells apart the three outcomes of an upload, because only one of them forbids
-- sending the video again:
--   sending  an upload has begun and its answer is not recorded yet
--   sent     Telegram answered with the message (telegram_message_id)
--   failed   Telegram answered with an error, or the request never left: NOT sent, a retry sends
--   unknown  no answer came back (the connection broke mid-upload, or a later run found the
--            record still `sending`): never sent again automatically; the user decides
--   resend   the user (or an operator) asked for an `unknown` video again: the worker sends it
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('sending', 'sent', 'failed', 'unknown', 'resend'));
ALTER TABLE deliveries
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1,    -- uploads begun
    ADD COLUMN resends INTEGER NOT NULL DEFAULT 0,     -- resends asked for after `unknown`
    ADD COLUMN last_error TEXT,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- A resend asked for re-queues the job with an UPDATE: wake listening workers for it too.
CREATE TRIGGER deliveries_resend_wake AFTER UPDATE OF state ON deliveries
    FOR EACH ROW WHEN (NEW.state = 'resend') EXECUTE FUNCTION notify_wake('job_id');
