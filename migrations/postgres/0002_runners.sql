-- Runners: registration for display and the key of each runner's liveness lock.
-- A runner is live exactly while its lock connection holds the advisory lock
-- (namespace, lock_key); `heartbeat_at` is refreshed by that connection's ping.
CREATE TABLE runners (
    runner       TEXT    PRIMARY KEY,
    lock_key     INTEGER NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);
