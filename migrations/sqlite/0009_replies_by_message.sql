-- Replies are keyed by message id first, and stored in their key's order (WITHOUT ROWID).
-- Message ids are UUIDv7 (time-ordered), so the replies a commit stores go to the right
-- edge of one tree instead of a row at the table's end plus one random key page per
-- entity: fewer pages written per commit. Lookups give the whole key, so they are served
-- as before; an entity's replies are found through its messages (`journal_message_id`).
CREATE TABLE replies_by_message (
    entity_type    TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    message_id     BLOB    NOT NULL,
    shard          INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    type_tag       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    crc            INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (message_id, entity_type, entity_id)
) WITHOUT ROWID;
INSERT INTO replies_by_message
    SELECT entity_type, entity_id, message_id, shard, "offset", type_tag, schema_version,
           payload, crc, created_at
      FROM replies;
DROP TABLE replies;
ALTER TABLE replies_by_message RENAME TO replies;
