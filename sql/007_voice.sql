-- A description the user spoke: the webhook records only the Telegram file of the voice
-- message (no outbound call); the job's first step, `transcribe`, downloads and transcribes it.
ALTER TABLE jobs ADD COLUMN voice_file_id TEXT;
