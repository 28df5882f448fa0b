-- PostgreSQL's 0012, so both backends have the same schema (control-plane/tests/e2e/schema.rs
-- checks it). PostgreSQL stages rollup increments here and folds them into usage_rollups in
-- bulk; SQLite, with one writer, updates its rollups as it stores and never stages, so on SQLite
-- this table stays empty. Numbered after the newest migration, not 0012, so that it runs after
-- every migration an existing SQLite database has applied, as it does on a new one.
CREATE TABLE usage_rollups_pending (
    bucket              TEXT    NOT NULL,
    start_ms            BIGINT  NOT NULL,
    org_id              BIGINT  NOT NULL,
    team_id             BIGINT  NOT NULL,
    user_id             BIGINT  NOT NULL,
    service_account_id  BIGINT  NOT NULL,
    token_id            BIGINT  NOT NULL,
    model               TEXT    NOT NULL,
    end_user            TEXT    NOT NULL,
    status              INTEGER NOT NULL,
    requests            BIGINT  NOT NULL,
    input_tokens        BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    cached_tokens       BIGINT  NOT NULL,
    reasoning_tokens    BIGINT  NOT NULL,
    latency_ms_sum      BIGINT  NOT NULL
);
