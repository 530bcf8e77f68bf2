-- Singletons and cron schedules (engine/src/singleton.rs, engine/src/cron.rs).

-- Each singleton's latest run: which runner started it, and whether it stopped cleanly.
CREATE TABLE singletons (
    name       TEXT    PRIMARY KEY,
    runner     TEXT    NOT NULL,
    running    INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    stopped_at INTEGER
);

-- Each cron schedule's last tick handled (microseconds since the Unix epoch), fired or
-- skipped as too late: a driver never goes back to it or to anything before it.
CREATE TABLE cron_schedules (
    name       TEXT    PRIMARY KEY,
    last_tick  INTEGER NOT NULL,
    fired      INTEGER NOT NULL,
    runner     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
