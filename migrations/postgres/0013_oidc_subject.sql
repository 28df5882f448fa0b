-- OIDC accounts are bound to the provider's subject (issuer + `sub`) on their first sign-in.
-- Later sign-ins find the account by subject; one with the same email but another subject is
-- refused, so an email address alone never hands over an account. NULL: never signed in with
-- OIDC (pre-created, the bootstrap admin, or from before this column).
ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
CREATE UNIQUE INDEX users_oidc_subject ON users (oidc_issuer, oidc_subject)
    WHERE oidc_subject IS NOT NULL AND deleted_at IS NULL;
