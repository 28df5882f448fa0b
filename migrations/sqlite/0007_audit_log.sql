-- Every management action, through the API or the admin UI: who, what, when, and the entity
-- before and after (JSON as the API shows it; secrets never stored).
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    actor_id     BIGINT,
    actor_email  TEXT   NOT NULL,
    via          TEXT   NOT NULL,
    method       TEXT   NOT NULL,
    path         TEXT   NOT NULL,
    status       BIGINT NOT NULL,
    before_json  TEXT,
    after_json   TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
