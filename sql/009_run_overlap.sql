-- Overlapping runs (a frequency's `overlap` policy). A scheduled slot whose frequency still has a
-- run going is recorded as a run too, so the scheduler's "latest slot decided" moves past it and
-- the API shows why it did not start: 'skipped' (RunSkipped) or 'queued' until it is released
-- (RunQueued, then RunPlanned). `blocked_by` names the run it waited for or was skipped behind.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped'));
ALTER TABLE runs ADD COLUMN blocked_by text;
ALTER TABLE runs ADD COLUMN reason text;
CREATE INDEX runs_queued ON runs (frequency_id, slot) WHERE status = 'queued';
