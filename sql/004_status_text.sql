-- The text the job's progress message shows now, so that a worker run after a restart (a new
-- cron process) does not edit the message to the same text: Telegram answers such an edit with
-- 400 "message is not modified", a wasted call.
ALTER TABLE jobs ADD COLUMN status_text TEXT;
