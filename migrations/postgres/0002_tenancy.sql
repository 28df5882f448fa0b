-- Tenancy: orgs, teams, memberships, service accounts, and the policy fields every level carries.
-- Policy fields (same on orgs, teams, users, service accounts, tokens):
--   excluded_models / excluded_mcp_servers: JSON arrays of names;
--   merge_*: when false, this level does not inherit the exclusions of the levels above it;
--   *_per_minute: aggregate caps on all traffic of the entity (NULL = none);
--   key_*_per_minute: per-key caps inherited by every key below (NULL = inherit / none).

CREATE TABLE orgs (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT   NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    excluded_models             TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_models       BOOLEAN NOT NULL DEFAULT TRUE,
    excluded_mcp_servers        TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_mcp_servers  BOOLEAN NOT NULL DEFAULT TRUE,
    requests_per_minute         BIGINT,
    input_tokens_per_minute     BIGINT,
    output_tokens_per_minute    BIGINT,
    key_requests_per_minute     BIGINT,
    key_input_tokens_per_minute BIGINT,
    key_output_tokens_per_minute BIGINT
);

CREATE TABLE teams (
    id           BIGSERIAL PRIMARY KEY,
    org_id       BIGINT NOT NULL REFERENCES orgs (id),
    name         TEXT   NOT NULL,
    description  TEXT   NOT NULL DEFAULT '',
    oidc_group   TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    excluded_models             TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_models       BOOLEAN NOT NULL DEFAULT TRUE,
    excluded_mcp_servers        TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_mcp_servers  BOOLEAN NOT NULL DEFAULT TRUE,
    requests_per_minute         BIGINT,
    input_tokens_per_minute     BIGINT,
    output_tokens_per_minute    BIGINT,
    key_requests_per_minute     BIGINT,
    key_input_tokens_per_minute BIGINT,
    key_output_tokens_per_minute BIGINT,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id     BIGINT  NOT NULL REFERENCES teams (id),
    user_id     BIGINT  NOT NULL REFERENCES users (id),
    team_admin  BOOLEAN NOT NULL DEFAULT FALSE,
    added_at    BIGINT  NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE service_accounts (
    id             BIGSERIAL PRIMARY KEY,
    team_id        BIGINT NOT NULL REFERENCES teams (id),
    owner_user_id  BIGINT NOT NULL REFERENCES users (id),
    name           TEXT   NOT NULL,
    description    TEXT   NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    deleted_at     BIGINT,
    excluded_models             TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_models       BOOLEAN NOT NULL DEFAULT TRUE,
    excluded_mcp_servers        TEXT    NOT NULL DEFAULT '[]',
    merge_excluded_mcp_servers  BOOLEAN NOT NULL DEFAULT TRUE,
    requests_per_minute         BIGINT,
    input_tokens_per_minute     BIGINT,
    output_tokens_per_minute    BIGINT,
    key_requests_per_minute     BIGINT,
    key_input_tokens_per_minute BIGINT,
    key_output_tokens_per_minute BIGINT
);
-- Names are unique among a team's live service accounts.
CREATE UNIQUE INDEX service_accounts_team_name ON service_accounts (team_id, name) WHERE deleted_at IS NULL;

-- Users belong to one org (NULL only for the bootstrap admin before an org exists). Deleting a user
-- or a key only marks it, so usage history keeps its owner.
ALTER TABLE users ADD COLUMN org_id BIGINT REFERENCES orgs (id);
ALTER TABLE users ADD COLUMN deleted_at BIGINT;
ALTER TABLE tokens ADD COLUMN service_account_id BIGINT REFERENCES service_accounts (id);
ALTER TABLE tokens ADD COLUMN deleted_at BIGINT;
ALTER TABLE users ADD COLUMN excluded_models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tokens ADD COLUMN excluded_models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN merge_excluded_models BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE tokens ADD COLUMN merge_excluded_models BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN excluded_mcp_servers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tokens ADD COLUMN excluded_mcp_servers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE users ADD COLUMN merge_excluded_mcp_servers BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE tokens ADD COLUMN merge_excluded_mcp_servers BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN requests_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN requests_per_minute BIGINT;
ALTER TABLE users ADD COLUMN input_tokens_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN input_tokens_per_minute BIGINT;
ALTER TABLE users ADD COLUMN output_tokens_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN output_tokens_per_minute BIGINT;
ALTER TABLE users ADD COLUMN key_requests_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN key_requests_per_minute BIGINT;
ALTER TABLE users ADD COLUMN key_input_tokens_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN key_input_tokens_per_minute BIGINT;
ALTER TABLE users ADD COLUMN key_output_tokens_per_minute BIGINT;
ALTER TABLE tokens ADD COLUMN key_output_tokens_per_minute BIGINT;

CREATE INDEX teams_org ON teams (org_id);
CREATE INDEX users_org ON users (org_id);
CREATE INDEX tokens_service_account ON tokens (service_account_id);
CREATE INDEX team_members_user ON team_members (user_id);
