-- Appends got a fast path for the commonest call (one message, due now), the general
-- query is planned once per connection instead of on every call, and only shards that
-- got messages are notified. Semantics unchanged.
CREATE OR REPLACE FUNCTION append_entries(
    p_now            BIGINT,
    p_channel        TEXT,
    p_fence_shard    INTEGER,
    p_fence_epoch    BIGINT,
    p_shard          INTEGER[],
    p_kind           SMALLINT[],
    p_entity_type    TEXT[],
    p_entity_id      TEXT[],
    p_seq            BIGINT[],
    p_message_id     UUID[],
    p_type_tag       TEXT[],
    p_schema_version INTEGER[],
    p_payload        BYTEA[],
    p_crc            BIGINT[],
    p_deliver_at     BIGINT[],
    p_created_at     BIGINT[]
) RETURNS TABLE (out_idx INTEGER, out_offset BIGINT, out_duplicate BOOLEAN, out_scheduled BOOLEAN)
LANGUAGE plpgsql
-- The general query is costly to plan and gains nothing from per-call plans (its inputs
-- are arrays): plan it once per connection.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_offset BIGINT;
    v_dup    BIGINT;
BEGIN
    -- Fast path: one unfenced message due now, the commonest append. Same rules, fewer
    -- statements: taking the offset locks the head row, and the rare duplicate gives it
    -- back under that lock.
    IF cardinality(p_shard) = 1 AND p_kind[1] = 1 AND p_fence_shard IS NULL
       AND (p_deliver_at[1] IS NULL OR p_deliver_at[1] <= p_now) THEN
        UPDATE shards h SET head = h.head + 1 WHERE h.shard = p_shard[1]
        RETURNING h.head INTO v_offset;
        SELECT j."offset" INTO v_dup FROM journal j
         WHERE j.kind = 1 AND j.entity_type = p_entity_type[1]
           AND j.entity_id = p_entity_id[1] AND j.message_id = p_message_id[1];
        IF FOUND OR EXISTS (
            SELECT 1 FROM scheduled s
             WHERE s.entity_type = p_entity_type[1] AND s.entity_id = p_entity_id[1]
               AND s.message_id = p_message_id[1]) THEN
            UPDATE shards h SET head = h.head - 1 WHERE h.shard = p_shard[1];
            RETURN QUERY SELECT 1, v_dup, TRUE, FALSE;
            RETURN;
        END IF;
        INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
                             type_tag, schema_version, payload, crc, deliver_at, created_at)
        VALUES (p_shard[1], v_offset, 1, p_entity_type[1], p_entity_id[1], NULL,
                p_message_id[1], p_type_tag[1], p_schema_version[1], p_payload[1], p_crc[1],
                p_deliver_at[1], p_created_at[1]);
        IF p_channel IS NOT NULL THEN
            PERFORM pg_notify(p_channel, p_shard[1]::TEXT);
        END IF;
        RETURN QUERY SELECT 1, v_offset, FALSE, FALSE;
        RETURN;
    END IF;

    PERFORM 1 FROM shards s
     WHERE s.shard = ANY (p_shard) OR s.shard = p_fence_shard
     ORDER BY s.shard FOR UPDATE;

    IF p_fence_shard IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM shards s WHERE s.shard = p_fence_shard AND s.epoch = p_fence_epoch
    ) THEN
        RAISE EXCEPTION 'shard % is no longer held at epoch %', p_fence_shard, p_fence_epoch
            USING ERRCODE = 'EL001';
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT t.*
          FROM unnest(p_shard, p_kind, p_entity_type, p_entity_id, p_seq, p_message_id,
                      p_type_tag, p_schema_version, p_payload, p_crc, p_deliver_at, p_created_at)
               WITH ORDINALITY AS t(shard, kind, entity_type, entity_id, seq, message_id,
                                    type_tag, schema_version, payload, crc, deliver_at,
                                    created_at, idx)
    ),
    classified AS (
        SELECT i.*,
               (SELECT j."offset" FROM journal j
                 WHERE i.kind = 1 AND j.kind = 1 AND j.entity_type = i.entity_type
                   AND j.entity_id = i.entity_id AND j.message_id = i.message_id) AS dup_offset,
               (i.kind = 1 AND EXISTS (
                   SELECT 1 FROM scheduled s
                    WHERE s.entity_type = i.entity_type AND s.entity_id = i.entity_id
                      AND s.message_id = i.message_id)) AS dup_scheduled,
               (i.kind = 1 AND i.deliver_at IS NOT NULL AND i.deliver_at > p_now) AS later
          FROM input i
    ),
    fresh AS (
        SELECT c.*, h.head + row_number() OVER (PARTITION BY c.shard ORDER BY c.idx) AS new_offset
          FROM classified c JOIN shards h ON h.shard = c.shard
         WHERE c.dup_offset IS NULL AND NOT c.dup_scheduled AND NOT c.later
    ),
    ins AS (
        INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
                             type_tag, schema_version, payload, crc, deliver_at, created_at)
        SELECT f.shard, f.new_offset, f.kind, f.entity_type, f.entity_id, f.seq, f.message_id,
               f.type_tag, f.schema_version, f.payload, f.crc, f.deliver_at, f.created_at
          FROM fresh f
    ),
    parked AS (
        INSERT INTO scheduled (shard, entity_type, entity_id, message_id, type_tag,
                               schema_version, payload, crc, deliver_at, created_at)
        SELECT c.shard, c.entity_type, c.entity_id, c.message_id, c.type_tag,
               c.schema_version, c.payload, c.crc, c.deliver_at, c.created_at
          FROM classified c
         WHERE c.later AND c.dup_offset IS NULL AND NOT c.dup_scheduled
    ),
    heads AS (
        UPDATE shards h SET head = h.head + n.cnt
          FROM (SELECT f.shard, count(*) AS cnt FROM fresh f GROUP BY f.shard) n
         WHERE h.shard = n.shard
    )
    SELECT c.idx::INTEGER,
           COALESCE(f.new_offset, c.dup_offset),
           (c.dup_offset IS NOT NULL OR c.dup_scheduled),
           (c.later AND c.dup_offset IS NULL AND NOT c.dup_scheduled)
      FROM classified c LEFT JOIN fresh f ON f.idx = c.idx
     ORDER BY c.idx;

    -- Wake the owners of shards that got messages. Events need no wake-up (their
    -- projectors run beside the shard's owner, which wakes them in-process), and every
    -- NOTIFY takes a database-wide lock at commit: a batch of only events sends none.
    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, d.shard::TEXT)
           FROM (SELECT DISTINCT t.s AS shard FROM unnest(p_shard, p_kind) AS t(s, k)
                  WHERE t.k = 1) d;
    END IF;
END;
$$;

ALTER FUNCTION commit_batch(BIGINT, TEXT, INTEGER, BIGINT, INTEGER[], SMALLINT[], TEXT[], TEXT[],
    BIGINT[], UUID[], TEXT[], INTEGER[], BYTEA[], BIGINT[], BIGINT[], BIGINT[], INTEGER, TEXT[],
    TEXT[], UUID[], BIGINT[], TEXT[], INTEGER[], BYTEA[], BIGINT[], TEXT, BIGINT)
    SET plan_cache_mode = force_generic_plan;
