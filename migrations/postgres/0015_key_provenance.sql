-- Who made a key, and the latest expiry its holder may choose.
--   created_by: the user who created the key (the owner, or a manager acting for them); NULL for
--     keys made before this migration and by the CLI bootstrap.
--   max_expires_at: set when a manager (admin, org-admin, team-admin of a service account's team)
--     gives a key an expiry; the key's holder may then shorten it but not remove or extend it.
ALTER TABLE tokens ADD COLUMN created_by BIGINT;
ALTER TABLE tokens ADD COLUMN max_expires_at BIGINT;
-- The audit log names the key an action was made with and who created that key, so an action made
-- with a key minted for someone else is traced to its maker.
ALTER TABLE audit_log ADD COLUMN token_id BIGINT;
ALTER TABLE audit_log ADD COLUMN key_created_by BIGINT;
