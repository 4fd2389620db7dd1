-- Git revision control of the catalog (issue 13; inline projection "git", docs/git.md).

-- One row per repository (remote + branch + path prefix, hashed into repo_key): what the last
-- commit, apply, refusal and error were. GET /api/v1/config/git shows it.
CREATE TABLE git_status (
    repo_key text PRIMARY KEY,
    branch text NOT NULL DEFAULT '',
    last_commit_sha text,
    last_commit_title text,
    last_commit_position bigint,  -- the last log position the commits on the remote cover
    last_commit_at timestamptz,
    last_applied_sha text,
    last_applied_summary text,
    last_applied_at timestamptz,
    refused_sha text,  -- the branch head last refused; NULL once a later head applied
    refused_reason text,
    refused_at timestamptz,
    error_stage text,  -- NULL: the last attempt worked
    error_kind text,
    error text,
    error_at timestamptz,
    last_sync_at timestamptz,
    updated_at timestamptz NOT NULL
);

-- Which commit holds which version of a table: GET /api/v1/tables/{id}/history shows it.
CREATE TABLE git_table_versions (
    repo_key text NOT NULL,
    table_id text NOT NULL,
    version integer NOT NULL,
    sha text NOT NULL,
    position bigint NOT NULL,  -- the GitCommitted event's
    PRIMARY KEY (table_id, version, repo_key)
);
