-- Projections: the built-in state projection's rows, and each projector's last failure.

-- Latest state of every entity of the projected types, as JSON for ad-hoc SQL.
CREATE TABLE entity_state (
    entity_type TEXT   NOT NULL,
    entity_id   TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    state       JSONB  NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);

-- A projector stuck on an event: where, and why. Cleared when it gets past it.
CREATE TABLE projection_errors (
    projection TEXT    NOT NULL,
    shard      INTEGER NOT NULL,
    "offset"   BIGINT  NOT NULL,
    error      TEXT    NOT NULL,
    failed_at  BIGINT  NOT NULL,
    attempts   BIGINT  NOT NULL,
    PRIMARY KEY (projection, shard)
);
