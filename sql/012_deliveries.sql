-- Reactors with side effects (issue 10): each reactor's own checkpoint, the deliveries they make
-- (completion callbacks, Slack, Sheets and database exports) and the callback endpoints.

-- How far each reactor has followed the log. Like projection_checkpoints, but a reactor's work is
-- outside PostgreSQL, so the checkpoint only says "handled up to here"; handling is idempotent
-- (deterministic stream ids), so a crash between the work and the checkpoint repeats nothing.
CREATE TABLE reactor_checkpoints (
    name text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per delivery stream (delivery-<id>), projected inline from its events.
CREATE TABLE deliveries (
    delivery_id text PRIMARY KEY,
    kind text NOT NULL,
    table_id text,
    run_id text,
    job_id text,
    target text NOT NULL,
    -- pending (no attempt yet), retrying (an attempt failed, another is due), succeeded, failed
    state text NOT NULL,
    chain integer NOT NULL DEFAULT 1,
    attempts integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error text,
    reason text,
    next_attempt_at timestamptz,
    deadline timestamptz,
    planned_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    version integer NOT NULL
);
CREATE INDEX deliveries_run ON deliveries (run_id, table_id);
CREATE INDEX deliveries_table ON deliveries (table_id, planned_at DESC);
CREATE INDEX deliveries_open ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');

-- A table's completion-callback endpoint (stream webhook-<table id>): its signing secret, sealed
-- with the master secret like every stored credential, and whether a 410 disabled it.
CREATE TABLE webhook_endpoints (
    table_id text PRIMARY KEY,
    secret text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    disabled_reason text,
    disabled_url text,  -- the URL that answered 410: saving another URL enables the endpoint again
    rotated_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL
);
