-- Every table's integer id (issue 12): the clients of the original Maestro address tables by
-- integers and format them as integers. A table's number is the log position of its
-- TableCreated event: assigned once, by the store, when the table is created; unique (positions
-- are); never reused (positions never are, and a deleted table keeps its number); and a
-- deterministic function of the log, so a projection rebuild gives every table the same number.
-- Tables created before this migration get theirs here by the same rule (docs/client.md).
ALTER TABLE catalog_tables ADD COLUMN number bigint;
UPDATE catalog_tables t SET number = e.position
FROM events e
WHERE e.stream_id = 'table-' || t.table_id AND e.version = 1 AND e.type = 'TableCreated';
ALTER TABLE catalog_tables ALTER COLUMN number SET NOT NULL;
CREATE UNIQUE INDEX catalog_tables_number ON catalog_tables (number);
-- A table's status (maestro/handlers/runs/table_status.py) reads its latest run entry.
CREATE INDEX run_tables_table ON run_tables (table_id, updated_at DESC);
