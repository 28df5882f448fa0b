-- Deleting an org or a team only marks it (its name is freed by a rename), so service accounts,
-- keys and usage history that refer to it keep a valid reference.
ALTER TABLE orgs ADD COLUMN deleted_at BIGINT;
ALTER TABLE teams ADD COLUMN deleted_at BIGINT;
