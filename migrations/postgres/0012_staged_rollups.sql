-- Rollup increments are staged, then folded into usage_rollups in bulk.
--
-- Each ingested batch used to upsert its groups straight into usage_rollups: a batch of 1,000
-- events from 800 keys made some 2,400 row updates, and the next batch updated the same rows
-- again. bench/ledger.py measured that at 80 % of ingestion (16,500 events/s with it, 87,000
-- without). A batch now appends its increments here (no index, no conflict check); a fold,
-- a few times a second and before every usage read, moves them all into usage_rollups in one
-- statement, summed per group first, so each rollup row is updated once per fold however
-- many batches touched it.
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
