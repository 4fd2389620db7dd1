-- Configuration read model (inline projection "config"): one row per config stream, i.e. per
-- section (config-slack, ...) and per source database (config-db-<name>). Secret fields are held
-- only as ciphertext in `secrets` ({"field": "v1.<key id>.<data>"}); removed databases keep their
-- row (deleted, secrets emptied) so that the stream's version stays known.
CREATE TABLE config_entries (
    stream_id  text        PRIMARY KEY,
    section    text        NOT NULL,
    name       text,
    settings   jsonb       NOT NULL,
    secrets    jsonb       NOT NULL,
    version    integer     NOT NULL,
    deleted    boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL,
    updated_by text        NOT NULL
);
CREATE INDEX config_entries_section ON config_entries (section, name);
