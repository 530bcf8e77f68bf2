-- Shard groups: the groups a runner hosts, as its lock session registered them
-- (comma-separated names); NULL for a runner that hosts every group, as runners did
-- before groups existed. The journal's layout of groups lives in `meta` (shard_groups),
-- each entity type's group in `meta` too (group:<type>).
ALTER TABLE runners ADD COLUMN groups TEXT;
