-- Projection bookkeeping: one row per projection, updated in the same transaction as its tables.
CREATE TABLE projection_checkpoints (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0,
    mode        text        NOT NULL CHECK (mode IN ('inline', 'async')),
    rebuilt_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Streams at a glance (an asynchronous projection; the history API lists streams from it).
CREATE TABLE proj_streams (
    stream_id       text        PRIMARY KEY,
    category        text        NOT NULL,
    version         integer     NOT NULL,
    first_position  bigint      NOT NULL,
    last_position   bigint      NOT NULL,
    last_type       text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX proj_streams_category_idx ON proj_streams (category, stream_id);
