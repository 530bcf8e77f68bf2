-- Nothing to change on SQLite: one process owns the file, so replies committed reach
-- its askers in-process. Kept so both backends have the same numbered migrations.
SELECT 1;
