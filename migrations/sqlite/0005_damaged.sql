-- Damaged entries (invariant 10): journal entries whose checksum failed or whose row did
-- not decode when a shard's owner read its mailbox. Their identity fields cannot be
-- trusted, so they are known only by their place; the owner records them here and moves
-- past them. The first record of an entry is kept.
CREATE TABLE damaged_entries (
    shard       INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (shard, "offset")
) WITHOUT ROWID;
