-- Change stamps on keys, so a policy rebuild rereads only the keys changed since the last one
-- (reading all 100,000 keys was most of a full snapshot's time). `tokens_changes.seq` counts
-- every change a snapshot could see and stamps the changed row with it (`change_seq`): inserts
-- and updates, except the ledger's `last_used_at` bookkeeping (which changes only that column,
-- under traffic). Deletes leave no row to stamp, so they are counted apart and make the next
-- rebuild read every key. Triggers, so changes made straight in the database count too.
ALTER TABLE tokens ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tokens_change_seq ON tokens (change_seq);

CREATE TABLE tokens_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     BIGINT  NOT NULL,
    deletes BIGINT  NOT NULL
);
INSERT INTO tokens_changes (id, seq, deletes) VALUES (1, 0, 0);

CREATE TRIGGER tokens_stamp_insert AFTER INSERT ON tokens
BEGIN
    UPDATE tokens_changes SET seq = seq + 1 WHERE id = 1;
    UPDATE tokens SET change_seq = (SELECT seq FROM tokens_changes WHERE id = 1) WHERE id = NEW.id;
END;

-- Any update that leaves `last_used_at` alone (so columns added later count too), except the
-- stamping itself (it changes `change_seq`).
CREATE TRIGGER tokens_stamp_update AFTER UPDATE ON tokens
WHEN OLD.last_used_at IS NEW.last_used_at AND OLD.change_seq IS NEW.change_seq
BEGIN
    UPDATE tokens_changes SET seq = seq + 1 WHERE id = 1;
    UPDATE tokens SET change_seq = (SELECT seq FROM tokens_changes WHERE id = 1) WHERE id = NEW.id;
END;

CREATE TRIGGER tokens_count_delete AFTER DELETE ON tokens
BEGIN
    UPDATE tokens_changes SET seq = seq + 1, deletes = deletes + 1 WHERE id = 1;
END;
