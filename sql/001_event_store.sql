-- The event log: Maestro's only source of truth.
--
-- Ordering without skips. `position` comes from a sequence, so it is allocated at INSERT time but
-- becomes visible at COMMIT time: a reader tailing `position` could see 11 commit before 10 and
-- skip 10 forever. We close that hole without serializing writers:
--   * every appending transaction takes its xid and its block of positions while holding a
--     session-level advisory lock that it releases at once (before the expensive commit), so
--     positions are monotonic in xid order across appenders;
--   * readers only return rows whose `tx_id` is below `pg_snapshot_xmin(pg_current_snapshot())`:
--     every transaction below that horizon has finished, and by the monotonicity above any event
--     that is still invisible has a higher position than every event returned.
-- See maestro/events/store.py and docs/event-store.md for the measurements behind this choice.

CREATE SEQUENCE events_position_seq AS bigint CACHE 1;

CREATE TABLE events (
    position       bigint      NOT NULL,
    stream_id      text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    type           text        NOT NULL,
    schema_version smallint    NOT NULL DEFAULT 1,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    occurred_at    timestamptz NOT NULL,
    tx_id          xid8        NOT NULL,
    PRIMARY KEY (stream_id, version)
);

CREATE UNIQUE INDEX events_position_idx ON events (position);
CREATE INDEX events_type_position_idx ON events (type, position);

-- History cannot be rewritten by accident: the log refuses UPDATE, DELETE and TRUNCATE.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'raise_exception', HINT = 'append a compensating event instead';
END;
$$;

CREATE TRIGGER events_append_only_rows
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_append_only_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Append a batch of events to one stream in one round trip.
--
-- expected_version: -1 = the stream must not exist, -2 = any version, n >= 0 = the stream must be
-- at version n (0 is the same as -1). On a mismatch it raises SQLSTATE 'MA409' with the actual
-- version in DETAIL; a concurrent writer that wins the race surfaces as a unique violation on the
-- primary key, which the store translates the same way.
CREATE FUNCTION events_append(
    p_stream_id text,
    p_expected_version integer,
    p_types text[],
    p_schema_versions smallint[],
    p_data jsonb[],
    p_metadata jsonb[],
    p_occurred_at timestamptz
) RETURNS TABLE (first_position bigint, last_version integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_current integer;
    v_count integer := cardinality(p_types);
    v_first bigint;
    v_tx xid8;
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        -- The horizon argument above needs the xid to be taken under the lock below.
        RAISE EXCEPTION 'events_append must be the first write of its transaction'
            USING ERRCODE = 'MA500';
    END IF;

    SELECT max(e.version) INTO v_current FROM events e WHERE e.stream_id = p_stream_id;
    v_current := coalesce(v_current, 0);
    IF p_expected_version <> -2 AND greatest(p_expected_version, 0) <> v_current THEN
        RAISE EXCEPTION 'concurrency conflict on stream %', p_stream_id
            USING ERRCODE = 'MA409', DETAIL = v_current::text;
    END IF;

    PERFORM pg_advisory_lock(7283001);
    v_tx := pg_current_xact_id();
    v_first := nextval('events_position_seq');
    IF v_count > 1 THEN
        -- setval is not transactional either; the block [v_first, v_first + v_count) is ours.
        PERFORM setval('events_position_seq', v_first + v_count - 1);
    END IF;
    PERFORM pg_advisory_unlock(7283001);

    INSERT INTO events (position, stream_id, version, type, schema_version, data, metadata,
                        occurred_at, tx_id)
    SELECT v_first + i - 1, p_stream_id, v_current + i, p_types[i], p_schema_versions[i],
           p_data[i], p_metadata[i], p_occurred_at, v_tx
    FROM generate_subscripts(p_types, 1) AS i;

    first_position := v_first;
    last_version := v_current + v_count;
    RETURN NEXT;
END;
$$;
