-- The usage ledger: one row per API request (never prompts or completions), rollups per
-- minute, hour and day for dashboards, and the deployment's secrets.
-- Times are unix milliseconds. In rollups, 0 and '' stand for "none" so that the primary key
-- (which cannot hold NULLs as equal) identifies each group.

CREATE TABLE usage_events (
    request_id          TEXT    PRIMARY KEY,
    at_ms               BIGINT  NOT NULL,
    token_id            BIGINT,
    user_id             BIGINT,
    service_account_id  BIGINT,
    team_id             BIGINT,
    org_id              BIGINT,
    end_user            TEXT,
    model               TEXT,
    path                TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    status              INTEGER NOT NULL,
    outcome             TEXT    NOT NULL,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    cached_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    estimated           BOOLEAN NOT NULL DEFAULT FALSE,
    latency_ms          BIGINT  NOT NULL DEFAULT 0,
    ttfb_ms             BIGINT,
    streamed            BOOLEAN NOT NULL DEFAULT FALSE,
    client_ip           TEXT,
    user_agent          TEXT,
    received_at_ms      BIGINT  NOT NULL
);

CREATE INDEX usage_events_at ON usage_events (at_ms);
CREATE INDEX usage_events_org_at ON usage_events (org_id, at_ms);
CREATE INDEX usage_events_team_at ON usage_events (team_id, at_ms);
CREATE INDEX usage_events_user_at ON usage_events (user_id, at_ms);
CREATE INDEX usage_events_token_at ON usage_events (token_id, at_ms);

CREATE TABLE usage_rollups (
    bucket              TEXT    NOT NULL CHECK (bucket IN ('minute', 'hour', 'day')),
    start_ms            BIGINT  NOT NULL,
    org_id              BIGINT  NOT NULL DEFAULT 0,
    team_id             BIGINT  NOT NULL DEFAULT 0,
    user_id             BIGINT  NOT NULL DEFAULT 0,
    service_account_id  BIGINT  NOT NULL DEFAULT 0,
    token_id            BIGINT  NOT NULL DEFAULT 0,
    model               TEXT    NOT NULL DEFAULT '',
    end_user            TEXT    NOT NULL DEFAULT '',
    status              INTEGER NOT NULL,
    requests            BIGINT  NOT NULL DEFAULT 0,
    input_tokens        BIGINT  NOT NULL DEFAULT 0,
    output_tokens       BIGINT  NOT NULL DEFAULT 0,
    cached_tokens       BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens    BIGINT  NOT NULL DEFAULT 0,
    latency_ms_sum      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, start_ms, org_id, team_id, user_id, service_account_id, token_id, model, end_user, status)
);

CREATE INDEX usage_rollups_org ON usage_rollups (bucket, org_id, start_ms);
CREATE INDEX usage_rollups_user ON usage_rollups (bucket, user_id, start_ms);
CREATE INDEX usage_rollups_team ON usage_rollups (bucket, team_id, start_ms);

CREATE TABLE gateway_secrets (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
