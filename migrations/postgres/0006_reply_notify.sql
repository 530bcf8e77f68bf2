-- Replies committed are announced: `commit_batch` also sends `NOTIFY <channel>, 'r<shard>'`
-- when the batch stored replies, so that an asker in another process (whose message's
-- shard is owned elsewhere) learns at once that its reply may be there, instead of
-- polling the replies table. The function keeps its signature; only the notify is new.

CREATE OR REPLACE FUNCTION commit_batch(
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
    p_created_at     BIGINT[],
    r_shard          INTEGER,
    r_entity_type    TEXT[],
    r_entity_id      TEXT[],
    r_message_id     UUID[],
    r_offset         BIGINT[],
    r_type_tag       TEXT[],
    r_schema_version INTEGER[],
    r_payload        BYTEA[],
    r_crc            BIGINT[],
    c_consumer       TEXT,
    c_offset         BIGINT
) RETURNS TABLE (out_idx INTEGER, out_offset BIGINT, out_duplicate BOOLEAN, out_scheduled BOOLEAN)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_base BIGINT;
BEGIN
    IF (p_fence_shard IS NULL OR p_fence_shard = r_shard) AND NOT EXISTS (
        SELECT 1 FROM unnest(p_kind, p_shard) AS t(k, s) WHERE t.k <> 2 OR t.s <> r_shard
    ) THEN
        -- Fast path: only this shard's own events (no outgoing messages), the usual
        -- batch. Raising the head takes the head-row lock and checks the fence at once;
        -- events need no dedup (their seqs are fenced by journal_event_seq).
        UPDATE shards h SET head = h.head + cardinality(p_shard)
         WHERE h.shard = r_shard AND (p_fence_epoch IS NULL OR h.epoch = p_fence_epoch)
        RETURNING h.head - cardinality(p_shard) INTO v_base;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'shard % is no longer held at epoch %', r_shard, p_fence_epoch
                USING ERRCODE = 'EL001';
        END IF;
        INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
                             type_tag, schema_version, payload, crc, deliver_at, created_at)
        SELECT r_shard, v_base + t.idx, 2, t.entity_type, t.entity_id, t.seq, t.message_id,
               t.type_tag, t.schema_version, t.payload, t.crc, NULL, t.created_at
          FROM unnest(p_entity_type, p_entity_id, p_seq, p_message_id, p_type_tag,
                      p_schema_version, p_payload, p_crc, p_created_at)
               WITH ORDINALITY AS t(entity_type, entity_id, seq, message_id, type_tag,
                                    schema_version, payload, crc, created_at, idx);
        RETURN QUERY SELECT g.idx::INTEGER, v_base + g.idx, FALSE, FALSE
                       FROM generate_series(1, cardinality(p_shard)) AS g(idx);
    ELSE
        RETURN QUERY SELECT * FROM append_entries(
            p_now, p_channel, p_fence_shard, p_fence_epoch, p_shard, p_kind, p_entity_type,
            p_entity_id, p_seq, p_message_id, p_type_tag, p_schema_version, p_payload, p_crc,
            p_deliver_at, p_created_at);
    END IF;

    INSERT INTO replies (entity_type, entity_id, message_id, shard, "offset", type_tag,
                         schema_version, payload, crc, created_at)
    SELECT t.entity_type, t.entity_id, t.message_id, r_shard, t.off, t.type_tag,
           t.schema_version, t.payload, t.crc, p_now
      FROM unnest(r_entity_type, r_entity_id, r_message_id, r_offset, r_type_tag,
                  r_schema_version, r_payload, r_crc)
           AS t(entity_type, entity_id, message_id, off, type_tag, schema_version, payload, crc);

    IF c_consumer IS NOT NULL THEN
        INSERT INTO cursors AS c (consumer, shard, "offset") VALUES (c_consumer, r_shard, c_offset)
        ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = GREATEST(c."offset", EXCLUDED."offset");
    END IF;

    -- 'r<shard>': replies of this shard were stored (delivered at commit, like every NOTIFY).
    IF p_channel IS NOT NULL AND cardinality(r_message_id) > 0 THEN
        PERFORM pg_notify(p_channel, 'r' || r_shard::TEXT);
    END IF;
END;
$$;
