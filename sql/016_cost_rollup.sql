-- Per-day cost sums (issue 11, read performance): GET /api/v1/costs summed every cost_jobs row of
-- its range per request (1,000,000 rows for "all time" in bench/bench_ui.py). The costs
-- projection keeps these sums in the same transaction as cost_jobs (maestro/projections/cost_rollup.py).
-- One row per UTC day and key of a dimension, with the group the jobs were billed to (the API's
-- group filter applies to every dimension):
--   'user'  key = owner_id  (also answers by=group and by=day: few owners x groups a day)
--   'table' key = table_id
--   'run'   key = run_id
-- A single day x table x owner x group grain would not shrink where tables run less than daily (the
-- bench: each table once in ~3.5 days), so each dimension has its own rows.
CREATE TABLE cost_daily (
    dimension       text   NOT NULL CHECK (dimension IN ('user', 'table', 'run')),
    day             date   NOT NULL,
    key             text,
    group_id        text,
    bytes_processed bigint NOT NULL,
    bytes_billed    bigint NOT NULL,
    slot_ms         bigint NOT NULL,
    jobs            bigint NOT NULL  -- no CHECK (jobs >= 0): an upsert checks the delta row it proposes, and deltas can be negative
);
-- Keys and groups may be null (a job outside a run, without an owner or group); a null is its own
-- key, distinct from any text (also ''), and PostgreSQL 13 has no NULLS NOT DISTINCT: hence the
-- null flags beside the coalesced values. The projection's upsert names these same expressions.
CREATE UNIQUE INDEX cost_daily_key ON cost_daily
    (dimension, day, coalesce(key, ''), (key IS NULL), coalesce(group_id, ''), (group_id IS NULL));

-- The sums of the rows already there (a database migrated with cost history): what a rebuild of
-- the projection gives.
INSERT INTO cost_daily (dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs)
SELECT d.dimension, c.day, CASE d.dimension WHEN 'user' THEN c.owner_id WHEN 'table' THEN c.table_id ELSE c.run_id END,
       c.group_id, sum(c.bytes_processed), sum(c.bytes_billed), sum(c.slot_ms), count(*)
FROM cost_jobs c CROSS JOIN (VALUES ('user'), ('table'), ('run')) AS d (dimension)
WHERE c.day IS NOT NULL
GROUP BY 1, 2, 3, 4;
