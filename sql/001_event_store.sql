-- The event log: Maestro's only source of truth.
--
-- Ordering without skips. `position` comes from a sequence, so it is allocated at INSERT time but
-- becomes visible at COMMIT time: a reader tailing `position` could see 11 commit before 10 and
-- skip 10 forever. We close that hole without serializing writers' commits:
--   * an appending transaction allocates its block of positions and takes a transaction-level
--     advisory lock keyed by its first position, both under a short allocation mutex (a
--     session-level advisory lock released at once, long before the expensive commit);
--   * PostgreSQL releases transaction locks only after the commit is visible to new snapshots, so
--     a reader that, under the same mutex, reads the highest allocated position and the set of
--     positions still locked knows a safe bound: every position up to it that will ever commit
--     already has. `events_safe_position()` computes it; readers read `position <= bound` in the
--     next statement (a later snapshot).
-- Unlike a snapshot-xmin horizon, only in-flight appends hold readers back, not every open
-- transaction in the cluster (projection batches, rebuilds, imports).
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
BEGIN
    SELECT max(e.version) INTO v_current FROM events e WHERE e.stream_id = p_stream_id;
    v_current := coalesce(v_current, 0);
    IF p_expected_version <> -2 AND greatest(p_expected_version, 0) <> v_current THEN
        RAISE EXCEPTION 'concurrency conflict on stream %', p_stream_id
            USING ERRCODE = 'MA409', DETAIL = v_current::text;
    END IF;

    PERFORM pg_advisory_lock(7283001);
    v_first := nextval('events_position_seq');
    IF v_count > 1 THEN
        -- setval is not transactional either; the block [v_first, v_first + v_count) is ours.
        PERFORM setval('events_position_seq', v_first + v_count - 1);
    END IF;
    -- Held until this transaction has committed or rolled back: "position v_first in flight".
    PERFORM pg_advisory_xact_lock_shared(1867, (v_first & 4294967295)::bit(32)::integer);
    PERFORM pg_advisory_unlock(7283001);

    INSERT INTO events (position, stream_id, version, type, schema_version, data, metadata,
                        occurred_at)
    SELECT v_first + i - 1, p_stream_id, v_current + i, p_types[i], p_schema_versions[i],
           p_data[i], p_metadata[i], p_occurred_at
    FROM generate_subscripts(p_types, 1) AS i;

    first_position := v_first;
    last_version := v_current + v_count;
    RETURN NEXT;
END;
$$;

-- The highest position a reader may read up to: below it, nothing is still in flight.
CREATE FUNCTION events_safe_position() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_high bigint;
    v_called boolean;
    v_inflight bigint[];
    v_low bigint;
BEGIN
    PERFORM pg_advisory_lock(7283001);
    SELECT last_value, is_called INTO v_high, v_called FROM events_position_seq;
    SELECT array_agg(l.objid::bigint) INTO v_inflight
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.classid = 1867 AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());
    PERFORM pg_advisory_unlock(7283001);

    IF NOT v_called THEN
        RETURN 0;
    END IF;
    IF v_inflight IS NULL THEN
        RETURN v_high;
    END IF;
    -- Locks carry the low 32 bits of a position; in-flight positions lie just below v_high.
    SELECT min(v_high - (((v_high & 4294967295) - k) & 4294967295)) INTO v_low
    FROM unnest(v_inflight) AS k;
    RETURN v_low - 1;
END;
$$;
