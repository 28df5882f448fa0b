-- Admin UI: browser sessions, the local admin's password, and OIDC logins in flight.
-- A session is stored only as the SHA-256 (hex) of its cookie value, like keys: a copy of the
-- database does not let anyone sign in. `csrf` is compared with the token every form carries.
CREATE TABLE ui_sessions (
    id_hash     TEXT   PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    csrf        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- One message for the next page shown (after a form's redirect); cleared when shown.
    flash       TEXT
);
CREATE INDEX ui_sessions_user ON ui_sessions (user_id);

-- PHC string (argon2id) of the local login's password; NULL: no local login for this user.
ALTER TABLE users ADD COLUMN password_hash TEXT;

-- An OIDC authorization request between the redirect to the provider and its callback, keyed
-- by the `state` parameter; kept in the store so any replica can finish the login.
CREATE TABLE oidc_logins (
    state          TEXT   PRIMARY KEY,
    pkce_verifier  TEXT   NOT NULL,
    nonce          TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);
