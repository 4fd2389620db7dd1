-- Runs and jobs (inline projection "runs"): what the runner re-attaches to after a restart, and
-- what /runs and /tables/{id}/jobs show.
CREATE TABLE runs (
    run_id       text        PRIMARY KEY,
    frequency_id text,
    slot         timestamptz,
    trigger      text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    workers      integer,
    planned_at   timestamptz NOT NULL,
    planned_by   text        NOT NULL,
    finished_at  timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    skipped      jsonb       NOT NULL DEFAULT '{}',
    counts       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_status ON runs (status) WHERE status = 'running';
CREATE INDEX runs_planned_at ON runs (planned_at DESC);
CREATE INDEX runs_frequency_slot ON runs (frequency_id, slot DESC);

CREATE TABLE run_tables (
    run_id     text        NOT NULL REFERENCES runs (run_id),
    table_id   text        NOT NULL,
    name       text        NOT NULL,
    priority   integer     NOT NULL,
    parents    text[]      NOT NULL,
    config     jsonb       NOT NULL,
    extract    jsonb,
    owner_id   text,
    group_id   text,
    state      text        NOT NULL,
    job_id     text,
    attempt    integer     NOT NULL DEFAULT 0,
    error      text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (run_id, table_id)
);

CREATE TABLE jobs (
    job_id      text        PRIMARY KEY,
    run_id      text,
    table_id    text        NOT NULL,
    attempt     integer     NOT NULL,
    kind        text        NOT NULL,
    state       text        NOT NULL,
    config      jsonb       NOT NULL,
    owner_id    text,
    group_id    text,
    adopted     boolean     NOT NULL DEFAULT false,
    planned_at  timestamptz NOT NULL,
    submitted_at timestamptz,
    finished_at timestamptz,
    statistics  jsonb,
    destination_uris jsonb  NOT NULL DEFAULT '[]',
    error       text,
    reason      text,
    retryable   boolean
);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('planned', 'submitted');
CREATE INDEX jobs_table ON jobs (table_id, planned_at DESC);
CREATE INDEX jobs_run ON jobs (run_id);
