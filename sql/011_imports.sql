-- Imports (issue 9): what an import or external wait is doing while it runs (phase, rows read,
-- bytes written), shown in GET /api/v1/runs/{id}; kept from ImportStarted / ImportProgress /
-- ImportUploaded and the import's load job.
ALTER TABLE jobs ADD COLUMN progress jsonb;
ALTER TABLE run_tables ADD COLUMN progress jsonb;
-- An import finds its table's last successful import load (the watermark) by table.
CREATE INDEX jobs_table_kind ON jobs (table_id, kind, finished_at DESC) WHERE state = 'succeeded';
