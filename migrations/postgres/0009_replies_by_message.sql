-- Replies are keyed by message id first. Message ids are UUIDv7 (time-ordered), so the
-- replies a commit stores go to the right edge of the key's index instead of one random
-- page per entity, and the key compares a UUID before any text. Lookups give the whole
-- key, so they are served as before; an entity's replies are found through its messages
-- (`journal_message_id`).
ALTER TABLE replies DROP CONSTRAINT replies_pkey;
ALTER TABLE replies ADD CONSTRAINT replies_pkey PRIMARY KEY (message_id, entity_type, entity_id);
