-- Terms of Service: numbered versions with their text; the newest is the current one. With
-- AQUEDUCT_TERMS_REQUIRED, keys of users (service-account keys: of their owner) who have not
-- accepted the current version are refused by the filter; admins are exempt.
CREATE TABLE terms_versions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  BIGINT NOT NULL REFERENCES users (id)
);

CREATE TABLE terms_acceptances (
    version_id   BIGINT NOT NULL REFERENCES terms_versions (id),
    user_id      BIGINT NOT NULL REFERENCES users (id),
    accepted_at  BIGINT NOT NULL,
    PRIMARY KEY (version_id, user_id)
);
