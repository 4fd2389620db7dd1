-- People, groups and sessions (inline projections "users" and "sessions"), and the operational
-- state of authentication that is deliberately NOT event-sourced: when a token was last used
-- (updated at most once a minute; an event per request would swamp the log) and logins in
-- progress (minutes-long, single use, holding the PKCE verifier).
CREATE TABLE users (
    user_id    text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('person', 'service')),
    issuer     text,
    subject    text,
    email      text,
    name       text,
    enabled    boolean     NOT NULL,
    admin      boolean     NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_identity ON users (issuer, subject) WHERE kind = 'person';

CREATE TABLE groups (
    group_id   text        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX groups_name ON groups (lower(name));

CREATE TABLE group_members (
    group_id  text        NOT NULL,
    user_id   text        NOT NULL,
    added_at  timestamptz NOT NULL,
    position  bigint      NOT NULL,  -- the MemberAdded event's: orders "a user's first group"
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id, position);

CREATE TABLE auth_sessions (
    session_id  text        PRIMARY KEY,
    user_id     text        NOT NULL,
    secret_hash text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id);

CREATE TABLE auth_token_usage (
    token_id     text        PRIMARY KEY,
    last_used_at timestamptz NOT NULL,
    last_used_by text
);

CREATE TABLE auth_pending_logins (
    login_hash    text        PRIMARY KEY,  -- SHA-256 of the random value in the browser's cookie
    state         text        NOT NULL,
    nonce         text        NOT NULL,
    code_verifier text        NOT NULL,
    return_to     text        NOT NULL,
    expires_at    timestamptz NOT NULL
);

-- The audit API filters the log by actor.
CREATE INDEX events_actor_idx ON events ((metadata->>'actor'), position);
