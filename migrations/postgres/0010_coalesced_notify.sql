-- NOTIFY coalesced per transaction: an append or a commit that touches many shards sends
-- one notification per kind listing them ('3,7,12', 's5', 'r3,7'), not one per shard.
-- Each pg_notify is queued and de-duplicated one by one and written to the notification
-- queue at commit; a runner's commit covers tens of shards every round.
--
-- `notify_shards` sends `<kind><shard>,<shard>,…` for the distinct shards given, in
-- groups of at most 500 shards, so a payload stays under PostgreSQL's 8,000 bytes.
-- Listeners read a single shard ('3') as before.
CREATE FUNCTION notify_shards(p_channel TEXT, p_kind TEXT, p_shards INTEGER[])
RETURNS VOID
LANGUAGE plpgsql
AS $$
BEGIN
    IF p_channel IS NULL OR cardinality(p_shards) = 0 THEN
        RETURN;
    END IF;
    PERFORM pg_notify(p_channel, p_kind || string_agg(g.s::TEXT, ',' ORDER BY g.s))
       FROM (SELECT u.s, (row_number() OVER (ORDER BY u.s) - 1) / 500 AS grp
               FROM (SELECT DISTINCT t.s FROM unnest(p_shards) AS t(s)) u) g
      GROUP BY g.grp;
END;
$$;

-- append_entries of 0001, with its per-shard notifications coalesced.
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
    v_offset   BIGINT;
    v_dup      BIGINT;
    v_inserted BIGINT;
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

    -- Optimistic path: nothing due later and nothing scheduled in these shards, so the
    -- journal's unique index is the only place a duplicate can be. Insert assuming there
    -- is none; if the index skipped a row, undo the attempt (its block is a
    -- subtransaction) and take the general path, which looks every id up first.
    IF NOT EXISTS (SELECT 1 FROM unnest(p_kind, p_deliver_at) AS t(k, d)
                    WHERE t.k = 1 AND t.d IS NOT NULL AND t.d > p_now)
       AND NOT EXISTS (SELECT 1 FROM scheduled s WHERE s.shard = ANY (p_shard)) THEN
        BEGIN
            WITH numbered AS (
                SELECT t.*, h.head + row_number() OVER (PARTITION BY t.shard ORDER BY t.idx) AS new_offset
                  FROM unnest(p_shard, p_kind, p_entity_type, p_entity_id, p_seq, p_message_id,
                              p_type_tag, p_schema_version, p_payload, p_crc, p_deliver_at,
                              p_created_at)
                       WITH ORDINALITY AS t(shard, kind, entity_type, entity_id, seq, message_id,
                                            type_tag, schema_version, payload, crc, deliver_at,
                                            created_at, idx)
                  JOIN shards h ON h.shard = t.shard
            ),
            ins AS (
                INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq,
                                     message_id, type_tag, schema_version, payload, crc,
                                     deliver_at, created_at)
                SELECT n.shard, n.new_offset, n.kind, n.entity_type, n.entity_id, n.seq,
                       n.message_id, n.type_tag, n.schema_version, n.payload, n.crc,
                       n.deliver_at, n.created_at
                  FROM numbered n
                ON CONFLICT (entity_type, entity_id, message_id) WHERE kind = 1 DO NOTHING
                RETURNING 1
            )
            SELECT count(*) INTO v_inserted FROM ins;
            IF v_inserted < cardinality(p_shard) THEN
                RAISE EXCEPTION 'a message id is already journaled' USING ERRCODE = 'EL002';
            END IF;
        EXCEPTION WHEN SQLSTATE 'EL002' THEN
            v_inserted := -1;
        END;
        IF v_inserted >= 0 THEN
            RETURN QUERY
            SELECT t.idx::INTEGER,
                   h.head + row_number() OVER (PARTITION BY t.s ORDER BY t.idx),
                   FALSE, FALSE
              FROM unnest(p_shard) WITH ORDINALITY AS t(s, idx)
              JOIN shards h ON h.shard = t.s
             ORDER BY t.idx;
            UPDATE shards h SET head = h.head + n.cnt
              FROM (SELECT t.s AS shard, count(*) AS cnt FROM unnest(p_shard) AS t(s) GROUP BY t.s) n
             WHERE h.shard = n.shard;
            IF p_channel IS NOT NULL THEN
                PERFORM notify_shards(p_channel, '', ARRAY(
                    SELECT t.s FROM unnest(p_shard, p_kind) AS t(s, k) WHERE t.k = 1));
            END IF;
            RETURN;
        END IF;
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
    -- 's<shard>' tells the owner of a shard that got a scheduled message to read its next
    -- due time again (it may be earlier than the one its timer waits for).
    IF p_channel IS NOT NULL THEN
        PERFORM notify_shards(p_channel, '', ARRAY(
            SELECT t.s FROM unnest(p_shard, p_kind) AS t(s, k) WHERE t.k = 1));
        PERFORM notify_shards(p_channel, 's', ARRAY(
            SELECT t.s FROM unnest(p_shard, p_kind, p_deliver_at) AS t(s, k, d)
             WHERE t.k = 1 AND t.d > p_now));
    END IF;
END;
$$;

-- commit_batches of 0008, with its per-shard reply notifications coalesced.
CREATE OR REPLACE FUNCTION commit_batches(
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
        PERFORM notify_shards(p_channel, 'r', r_shard);
    END IF;
END;
$$;
