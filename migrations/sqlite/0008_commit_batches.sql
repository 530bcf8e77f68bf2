-- PostgreSQL's 0008 adds commit_batches, a function; SQLite commits several shards in one
-- transaction on its single writer connection and needs nothing new. Kept so that both
-- backends number their migrations alike.
SELECT 1;
