-- Commits the processed batches of several shards in one call: the runner's pipeline
-- commits what every shard it owns handled in one transaction, and one call instead of
-- one per shard keeps that transaction one round trip.
--
-- Locks the head rows of every shard involved (the parts' shards and those their
-- outgoing messages go to) in shard order, so two such calls never wait on each other in
-- a cycle; checks every part's fence (a stale part raises EL001 naming the shard in its
-- HINT: the caller leaves that part out and calls again); then appends the events and
-- outgoing messages (a fast path when there are only events), stores the replies, moves
-- each part's cursor and announces the replies per shard ('r<shard>').
-- A reply that already exists raises unique_violation: that message was processed.
CREATE FUNCTION commit_batches(
    p_now            BIGINT,
    p_channel        TEXT,
    f_shard          INTEGER[],
    f_epoch          BIGINT[],
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
    r_shard          INTEGER[],
    r_entity_type    TEXT[],
    r_entity_id      TEXT[],
    r_message_id     UUID[],
    r_offset         BIGINT[],
    r_type_tag       TEXT[],
    r_schema_version INTEGER[],
    r_payload        BYTEA[],
    r_crc            BIGINT[],
    c_consumer       TEXT,
    c_shard          INTEGER[],
    c_offset         BIGINT[]
) RETURNS TABLE (out_idx INTEGER, out_offset BIGINT, out_duplicate BOOLEAN, out_scheduled BOOLEAN)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_fenced INTEGER;
BEGIN
    PERFORM 1 FROM shards s
     WHERE s.shard = ANY (f_shard) OR s.shard = ANY (p_shard)
     ORDER BY s.shard FOR UPDATE;

    SELECT f.s INTO v_fenced
      FROM unnest(f_shard, f_epoch) AS f(s, e)
      LEFT JOIN shards h ON h.shard = f.s
     WHERE f.e IS NOT NULL AND h.epoch IS DISTINCT FROM f.e
     ORDER BY f.s LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'shard % is no longer held at the epoch of its lease', v_fenced
            USING ERRCODE = 'EL001', HINT = v_fenced::TEXT;
    END IF;

    IF NOT EXISTS (SELECT 1 FROM unnest(p_kind) AS t(k) WHERE t.k <> 2) THEN
        -- Fast path: only events (no outgoing messages), the usual commit. Events need no
        -- dedup: their seqs are fenced by journal_event_seq.
        RETURN QUERY
        WITH t AS (
            SELECT u.*, h.head + row_number() OVER (PARTITION BY u.shard ORDER BY u.idx) AS off
              FROM unnest(p_shard, p_entity_type, p_entity_id, p_seq, p_message_id, p_type_tag,
                          p_schema_version, p_payload, p_crc, p_created_at)
                   WITH ORDINALITY AS u(shard, entity_type, entity_id, seq, message_id,
                                        type_tag, schema_version, payload, crc, created_at, idx)
              JOIN shards h ON h.shard = u.shard
        ),
        ins AS (
            INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq,
                                 message_id, type_tag, schema_version, payload, crc,
                                 deliver_at, created_at)
            SELECT t.shard, t.off, 2, t.entity_type, t.entity_id, t.seq, t.message_id,
                   t.type_tag, t.schema_version, t.payload, t.crc, NULL, t.created_at
              FROM t
        )
        SELECT t.idx::INTEGER, t.off, FALSE, FALSE FROM t ORDER BY t.idx;
        UPDATE shards h SET head = h.head + n.cnt
          FROM (SELECT t.s AS shard, count(*) AS cnt FROM unnest(p_shard) AS t(s) GROUP BY t.s) n
         WHERE h.shard = n.shard;
    ELSE
        RETURN QUERY SELECT * FROM append_entries(
            p_now, p_channel, NULL, NULL, p_shard, p_kind, p_entity_type, p_entity_id, p_seq,
            p_message_id, p_type_tag, p_schema_version, p_payload, p_crc, p_deliver_at,
            p_created_at);
    END IF;

    INSERT INTO replies (entity_type, entity_id, message_id, shard, "offset", type_tag,
                         schema_version, payload, crc, created_at)
    SELECT t.entity_type, t.entity_id, t.message_id, t.shard, t.off, t.type_tag,
           t.schema_version, t.payload, t.crc, p_now
      FROM unnest(r_shard, r_entity_type, r_entity_id, r_message_id, r_offset, r_type_tag,
                  r_schema_version, r_payload, r_crc)
           AS t(shard, entity_type, entity_id, message_id, off, type_tag, schema_version,
                payload, crc);

    IF c_consumer IS NOT NULL THEN
        INSERT INTO cursors AS c (consumer, shard, "offset")
        SELECT c_consumer, t.s, t.o FROM unnest(c_shard, c_offset) AS t(s, o)
        ON CONFLICT (consumer, shard) DO UPDATE SET "offset" = GREATEST(c."offset", EXCLUDED."offset");
    END IF;

    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, 'r' || d.s::TEXT)
           FROM (SELECT DISTINCT t.s FROM unnest(r_shard) AS t(s)) d;
    END IF;
END;
$$;
