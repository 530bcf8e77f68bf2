-- A shard's trouble (invariant 10: errors that may pass are retried, and visible while
-- they last): the owner records why its reads or commits of the shard fail and since
-- when, and clears it with the next success. Any process reads it (`entlog status`).
ALTER TABLE shards ADD COLUMN trouble TEXT;
ALTER TABLE shards ADD COLUMN trouble_since BIGINT;
