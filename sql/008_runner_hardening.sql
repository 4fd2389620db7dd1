-- A retried run counts each table's retry budget from the attempt it had when the retry was
-- requested (job ids keep counting up, so no id is ever reused).
ALTER TABLE run_tables ADD COLUMN retry_base integer NOT NULL DEFAULT 0;
