-- Failure replies (poison messages; their payload starts with byte 2, FAILED_REPLY_BYTE)
-- get an index of their own, so that `entlog status` lists the newest without reading
-- every reply ever stored. Only failures are in it: a normal reply writes nothing more.
-- Queries must repeat the predicate as written here for the planner to use it.
CREATE INDEX replies_failed ON replies (created_at) WHERE substr(payload, 1, 1) = X'02';
