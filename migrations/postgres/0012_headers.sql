-- Message headers: string key/values sent with a command (a tenant, a trace id), stored
-- as the postcard encoding of the pairs in key order and covered by the message's
-- checksum; NULL for a message without headers and for every event, so rows written
-- before this migration read and verify as they did.
--
-- The write functions take the headers as one more array after p_created_at; their
-- bodies are those of 0010 (append_entries, commit_batches), 0006 (commit_batch) and 0001
-- (promote_due) with the column added to every journal and schedule insert.

ALTER TABLE journal ADD COLUMN headers BYTEA;
ALTER TABLE scheduled ADD COLUMN headers BYTEA;

DROP FUNCTION commit_batches(BIGINT, TEXT, INTEGER[], BIGINT[], INTEGER[], SMALLINT[], TEXT[],
    TEXT[], BIGINT[], UUID[], TEXT[], INTEGER[], BYTEA[], BIGINT[], BIGINT[], BIGINT[],
    INTEGER[], TEXT[], TEXT[], UUID[], BIGINT[], TEXT[], INTEGER[], BYTEA[], BIGINT[], TEXT,
    INTEGER[], BIGINT[]);
DROP FUNCTION commit_batch(BIGINT, TEXT, INTEGER, BIGINT, INTEGER[], SMALLINT[], TEXT[], TEXT[],
    BIGINT[], UUID[], TEXT[], INTEGER[], BYTEA[], BIGINT[], BIGINT[], BIGINT[], INTEGER, TEXT[],
    TEXT[], UUID[], BIGINT[], TEXT[], INTEGER[], BYTEA[], BIGINT[], TEXT, BIGINT);
DROP FUNCTION append_entries(BIGINT, TEXT, INTEGER, BIGINT, INTEGER[], SMALLINT[], TEXT[],
    TEXT[], BIGINT[], UUID[], TEXT[], INTEGER[], BYTEA[], BIGINT[], BIGINT[], BIGINT[]);

CREATE FUNCTION append_entries(
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
    p_headers        BYTEA[]
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
                             type_tag, schema_version, payload, crc, deliver_at, created_at, headers)
        VALUES (p_shard[1], v_offset, 1, p_entity_type[1], p_entity_id[1], NULL,
                p_message_id[1], p_type_tag[1], p_schema_version[1], p_payload[1], p_crc[1],
                p_deliver_at[1], p_created_at[1], p_headers[1]);
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
                              p_created_at, p_headers)
                       WITH ORDINALITY AS t(shard, kind, entity_type, entity_id, seq, message_id,
                                            type_tag, schema_version, payload, crc, deliver_at,
                                            created_at, headers, idx)
                  JOIN shards h ON h.shard = t.shard
            ),
            ins AS (
                INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq,
                                     message_id, type_tag, schema_version, payload, crc,
                                     deliver_at, created_at, headers)
                SELECT n.shard, n.new_offset, n.kind, n.entity_type, n.entity_id, n.seq,
                       n.message_id, n.type_tag, n.schema_version, n.payload, n.crc,
                       n.deliver_at, n.created_at, n.headers
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
                      p_type_tag, p_schema_version, p_payload, p_crc, p_deliver_at, p_created_at,
                      p_headers)
               WITH ORDINALITY AS t(shard, kind, entity_type, entity_id, seq, message_id,
                                    type_tag, schema_version, payload, crc, deliver_at,
                                    created_at, headers, idx)
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
                             type_tag, schema_version, payload, crc, deliver_at, created_at,
                             headers)
        SELECT f.shard, f.new_offset, f.kind, f.entity_type, f.entity_id, f.seq, f.message_id,
               f.type_tag, f.schema_version, f.payload, f.crc, f.deliver_at, f.created_at,
               f.headers
          FROM fresh f
    ),
    parked AS (
        INSERT INTO scheduled (shard, entity_type, entity_id, message_id, type_tag,
                               schema_version, payload, crc, deliver_at, created_at, headers)
        SELECT c.shard, c.entity_type, c.entity_id, c.message_id, c.type_tag,
               c.schema_version, c.payload, c.crc, c.deliver_at, c.created_at, c.headers
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

CREATE FUNCTION commit_batch(
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
    p_headers        BYTEA[],
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
                             type_tag, schema_version, payload, crc, deliver_at, created_at,
                             headers)
        SELECT r_shard, v_base + t.idx, 2, t.entity_type, t.entity_id, t.seq, t.message_id,
               t.type_tag, t.schema_version, t.payload, t.crc, NULL, t.created_at, NULL
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
            p_deliver_at, p_created_at, p_headers);
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
    p_headers        BYTEA[],
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
                                 deliver_at, created_at, headers)
            SELECT t.shard, t.off, 2, t.entity_type, t.entity_id, t.seq, t.message_id,
                   t.type_tag, t.schema_version, t.payload, t.crc, NULL, t.created_at, NULL
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
            p_created_at, p_headers);
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

CREATE OR REPLACE FUNCTION promote_due(p_shard INTEGER, p_now BIGINT, p_channel TEXT)
RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT;
BEGIN
    PERFORM 1 FROM shards s WHERE s.shard = p_shard FOR UPDATE;

    WITH due AS (
        DELETE FROM scheduled s
         WHERE s.shard = p_shard AND s.deliver_at <= p_now
        RETURNING s.*
    ),
    numbered AS (
        SELECT d.*, h.head + row_number() OVER (ORDER BY d.deliver_at, d.created_at, d.message_id) AS new_offset
          FROM due d JOIN shards h ON h.shard = d.shard
    ),
    ins AS (
        INSERT INTO journal (shard, "offset", kind, entity_type, entity_id, seq, message_id,
                             type_tag, schema_version, payload, crc, deliver_at, created_at,
                             headers)
        SELECT n.shard, n.new_offset, 1, n.entity_type, n.entity_id, NULL, n.message_id,
               n.type_tag, n.schema_version, n.payload, n.crc, n.deliver_at, n.created_at,
               n.headers
          FROM numbered n
        RETURNING 1
    )
    SELECT count(*) INTO moved FROM ins;

    UPDATE shards h SET head = h.head + moved WHERE h.shard = p_shard AND moved > 0;

    IF moved > 0 AND p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, p_shard::TEXT);
    END IF;
    RETURN moved;
END;
$$;
