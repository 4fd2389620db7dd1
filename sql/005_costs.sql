-- Cost attribution (async projection "costs"): one row per BigQuery job with what it billed, and
-- who and what it is billed to.
CREATE TABLE cost_jobs (
    job_id          text        PRIMARY KEY,
    table_id        text        NOT NULL,
    run_id          text,
    owner_id        text,
    group_id        text,
    day             date,
    bytes_processed bigint      NOT NULL DEFAULT 0,
    bytes_billed    bigint      NOT NULL DEFAULT 0,
    slot_ms         bigint      NOT NULL DEFAULT 0,
    cache_hit       boolean     NOT NULL DEFAULT false,
    finished_at     timestamptz
);
CREATE INDEX cost_jobs_day ON cost_jobs (day);
