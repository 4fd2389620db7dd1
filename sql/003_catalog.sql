-- The catalog read model (inline projection "catalog"): live and deleted tables, frequencies,
-- datasets. Uniqueness of live (dataset, name) is enforced here, inside the append's
-- transaction, so two simultaneous creates of one name cannot both commit.
CREATE TABLE catalog_tables (
    table_id      text        PRIMARY KEY,
    project       text,
    dataset       text        NOT NULL,
    name          text        NOT NULL,
    kind          text        NOT NULL,
    spec          jsonb       NOT NULL,
    version       integer     NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    updated_at    timestamptz NOT NULL,
    updated_by    text        NOT NULL,
    last_position bigint      NOT NULL
);
CREATE UNIQUE INDEX catalog_tables_live_name ON catalog_tables (dataset, name) WHERE NOT deleted;
CREATE INDEX catalog_tables_dataset ON catalog_tables (dataset, name);
CREATE INDEX catalog_tables_frequency ON catalog_tables ((spec->>'frequency_id')) WHERE NOT deleted;

CREATE TABLE catalog_frequencies (
    frequency_id text        PRIMARY KEY,
    name         text        NOT NULL,
    spec         jsonb       NOT NULL,
    version      integer     NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX catalog_frequencies_name ON catalog_frequencies (name);

CREATE TABLE catalog_datasets (
    dataset     text        PRIMARY KEY,
    project     text,
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL
);

-- API tokens (inline projection "tokens"): only a hash of the secret is ever stored.
CREATE TABLE auth_tokens (
    token_id    text        PRIMARY KEY,
    user_id     text        NOT NULL,
    name        text        NOT NULL,
    secret_hash text        NOT NULL,
    admin       boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);
