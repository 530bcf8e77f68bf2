-- Runners registered by the process that owns the file (for display).
CREATE TABLE runners (
    runner       TEXT    PRIMARY KEY,
    lock_key     INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
