-- Change stamps on keys, so a policy rebuild rereads only the keys changed since the last one
-- (reading all 100,000 keys was most of a full snapshot's time). `tokens_changes.seq` counts
-- every change a snapshot could see and stamps the changed row with it (`change_seq`): inserts
-- and updates, except the ledger's `last_used_at` bookkeeping (which changes only that column,
-- under traffic). Deletes leave no row to stamp, so they are counted apart and make the next
-- rebuild read every key. Triggers, so changes made straight in the database count too.
-- Writers take the counter row's lock until they commit, so stamps become visible in order: a
-- reader that reads the counter, then the rows stamped after its last read, misses nothing.
ALTER TABLE tokens ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tokens_change_seq ON tokens (change_seq);

CREATE TABLE tokens_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    seq     BIGINT  NOT NULL,
    deletes BIGINT  NOT NULL
);
INSERT INTO tokens_changes (id, seq, deletes) VALUES (1, 0, 0);

CREATE FUNCTION tokens_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tokens_changes SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO NEW.change_seq;
    RETURN NEW;
END
$$;

CREATE FUNCTION tokens_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tokens_changes SET seq = seq + 1, deletes = deletes + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER tokens_stamp_insert BEFORE INSERT ON tokens
FOR EACH ROW EXECUTE FUNCTION tokens_stamp();

-- Any update that leaves `last_used_at` alone (so columns added later count too).
CREATE TRIGGER tokens_stamp_update BEFORE UPDATE ON tokens
FOR EACH ROW WHEN (OLD.last_used_at IS NOT DISTINCT FROM NEW.last_used_at)
EXECUTE FUNCTION tokens_stamp();

CREATE TRIGGER tokens_count_delete AFTER DELETE ON tokens
FOR EACH STATEMENT EXECUTE FUNCTION tokens_count_delete();
