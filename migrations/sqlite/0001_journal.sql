-- entlog journal, format version 1 (SQLite). Same tables as PostgreSQL; offsets are
-- allocated by the single writer connection, so commit order is offset order.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE shards (
    shard INTEGER PRIMARY KEY,
    head  INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    owner TEXT
);

CREATE TABLE journal (
    shard          INTEGER NOT NULL,
    "offset"       INTEGER NOT NULL,
    kind           INTEGER NOT NULL,
    entity_type    TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    seq            INTEGER,
    message_id     BLOB    NOT NULL,
    type_tag       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    crc            INTEGER NOT NULL,
    deliver_at     INTEGER,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (shard, "offset")
) WITHOUT ROWID;
CREATE UNIQUE INDEX journal_event_seq ON journal (entity_type, entity_id, seq) WHERE kind = 2;
CREATE UNIQUE INDEX journal_message_id ON journal (entity_type, entity_id, message_id) WHERE kind = 1;

CREATE TABLE scheduled (
    shard          INTEGER NOT NULL,
    entity_type    TEXT    NOT NULL,
    entity_id      TEXT    NOT NULL,
    message_id     BLOB    NOT NULL,
    type_tag       TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    crc            INTEGER NOT NULL,
    deliver_at     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id, message_id)
);
CREATE INDEX scheduled_due ON scheduled (shard, deliver_at);

CREATE TABLE replies (
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
    PRIMARY KEY (entity_type, entity_id, message_id)
);

CREATE TABLE snapshots (
    entity_type   TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    type_tag      TEXT    NOT NULL,
    state_version INTEGER NOT NULL,
    payload       BLOB    NOT NULL,
    crc           INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);

CREATE TABLE cursors (
    consumer TEXT    NOT NULL,
    shard    INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    PRIMARY KEY (consumer, shard)
) WITHOUT ROWID;
