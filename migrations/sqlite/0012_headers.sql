-- Message headers: string key/values sent with a command (a tenant, a trace id), stored
-- as the postcard encoding of the pairs in key order and covered by the message's
-- checksum; NULL for a message without headers and for every event, so rows written
-- before this migration read and verify as they did.
ALTER TABLE journal ADD COLUMN headers BLOB;
ALTER TABLE scheduled ADD COLUMN headers BLOB;
