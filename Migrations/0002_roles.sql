-- Least-privilege roles (NOLOGIN groups; grant them to login roles):
--   bitfleet_enqueue   enqueue jobs and batches, cancel batches, read jobs, batches and results
--   bitfleet_worker    claim and finish jobs, write results, cost rows and heartbeats; read models
--   bitfleet_readonly  read everything, for dashboards (Grafana) and finance
-- Example: CREATE ROLE grafana LOGIN PASSWORD '…' IN ROLE bitfleet_readonly;
-- Roles are cluster-wide; creating one that another database's migration just created is not an error.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['bitfleet_enqueue', 'bitfleet_worker', 'bitfleet_readonly'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END;
$$;

-- Enqueue paths run with the schema owner's rights, so callers need EXECUTE only, not INSERT on the tables.
ALTER FUNCTION bitfleet.enqueue(text, text, text, text, integer, integer, timestamptz, integer, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION bitfleet.create_batch(text, text[], text[], text, text, integer, integer, integer, text, interval, jsonb)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Cancel a batch: items not yet running are cancelled, running ones finish; returns how many were cancelled.
CREATE FUNCTION bitfleet.cancel_batch(batch_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n integer;
BEGIN
    UPDATE bitfleet.batches SET cancelled_at = coalesce(cancelled_at, now()) WHERE id = cancel_batch.batch_id;
    UPDATE bitfleet.jobs SET state = 'cancelled', finished_at = now()
    WHERE batch_id = cancel_batch.batch_id AND state IN ('queued', 'failed');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA bitfleet FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA bitfleet FROM PUBLIC;
GRANT USAGE ON SCHEMA bitfleet TO bitfleet_enqueue, bitfleet_worker, bitfleet_readonly;

GRANT EXECUTE ON FUNCTION bitfleet.enqueue(text, text, text, text, integer, integer, timestamptz, integer, text, text),
                          bitfleet.create_batch(text, text[], text[], text, text, integer, integer, integer, text, interval, jsonb),
                          bitfleet.cancel_batch(bigint)
    TO bitfleet_enqueue;
GRANT SELECT ON bitfleet.jobs, bitfleet.batches, bitfleet.results, bitfleet.models, bitfleet.batch_progress,
                bitfleet.queue_depth
    TO bitfleet_enqueue;

GRANT SELECT, UPDATE ON bitfleet.jobs TO bitfleet_worker;
GRANT SELECT ON bitfleet.models, bitfleet.batches, bitfleet.schema_migrations TO bitfleet_worker;
GRANT SELECT, INSERT ON bitfleet.results TO bitfleet_worker;
GRANT SELECT, INSERT, UPDATE (write_seconds) ON bitfleet.job_costs TO bitfleet_worker;
GRANT SELECT, INSERT, UPDATE ON bitfleet.workers TO bitfleet_worker;

GRANT SELECT ON ALL TABLES IN SCHEMA bitfleet TO bitfleet_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA bitfleet GRANT SELECT ON TABLES TO bitfleet_readonly;
