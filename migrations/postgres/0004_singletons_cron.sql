-- Singletons and cron schedules (engine/src/singleton.rs, engine/src/cron.rs).

-- Each singleton's latest run: which runner started it, and whether it stopped cleanly.
-- A new owner that finds it still `running` on another runner (which died or lost its
-- lock connection) waits out the takeover grace before starting it.
CREATE TABLE singletons (
    name       TEXT    PRIMARY KEY,
    runner     TEXT    NOT NULL,
    running    BOOLEAN NOT NULL,
    started_at BIGINT  NOT NULL,
    stopped_at BIGINT
);

-- Each cron schedule's last tick handled (microseconds since the Unix epoch), fired or
-- skipped as too late: a driver never goes back to it or to anything before it.
CREATE TABLE cron_schedules (
    name       TEXT    PRIMARY KEY,
    last_tick  BIGINT  NOT NULL,
    fired      BOOLEAN NOT NULL,
    runner     TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);
