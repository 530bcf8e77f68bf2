-- PostgreSQL's 0010 coalesces its NOTIFYs per transaction; SQLite wakes its shards in
-- process and needs nothing new. Kept so that both backends number their migrations alike.
SELECT 1;
