-- Responses API ownership: who made each stored response, so that only its maker can read,
-- continue (`previous_response_id`), cancel or delete it through the gateway. The gateway holds
-- one provider key per model, so the provider cannot tell callers apart: this table does.
--
-- A row is written when the usage event of a successful create (POST /v1/responses) is ingested.
-- The owner is the key's service account when it has one (the account, not whoever owns it at
-- the time, keeps its responses), else the key's user. Times are unix seconds; rows past
-- expires_at no longer count and are deleted periodically.
CREATE TABLE response_owners (
    response_id               TEXT    NOT NULL PRIMARY KEY,
    owner_user_id             BIGINT  NOT NULL,
    owner_service_account_id  BIGINT,
    -- The key the create was made with (for the record; ownership does not depend on it).
    token_id                  BIGINT  NOT NULL,
    -- The public model name (aliases resolved): id-based calls go to its provider.
    model                     TEXT    NOT NULL,
    created_at                BIGINT  NOT NULL,
    expires_at                BIGINT  NOT NULL
);
CREATE INDEX response_owners_expires ON response_owners (expires_at);

-- The id of the response a Responses API create made, in the ledger.
ALTER TABLE usage_events ADD COLUMN response_id TEXT;
