-- Projections: the built-in state projection's rows, and each projector's last failure.

CREATE TABLE entity_state (
    entity_type TEXT    NOT NULL,
    entity_id   TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);

CREATE TABLE projection_errors (
    projection TEXT    NOT NULL,
    shard      INTEGER NOT NULL,
    "offset"   INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    PRIMARY KEY (projection, shard)
);
