-- Queue maintenance: batch expiry (as the OpenAI Batch API: items not finished within the window end "expired"),
-- and retention of finished jobs so the table stays small, while cost rows are kept for finance.

-- Cost history outlives the jobs it meters: retention deletes jobs and results, never cost rows.
ALTER TABLE bitfleet.job_costs DROP CONSTRAINT job_costs_job_id_fkey;

CREATE INDEX jobs_finished ON bitfleet.jobs (finished_at) WHERE state IN ('succeeded', 'dead', 'cancelled');
CREATE INDEX batches_expiry ON bitfleet.batches (expires_at) WHERE cancelled_at IS NULL;

-- Items of batches past their window that have not started are cancelled with the reason "batch expired";
-- running items finish. Returns how many items expired. Workers call it with their heartbeat.
CREATE FUNCTION bitfleet.expire_batches() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    WITH expired AS (
        SELECT j.id FROM bitfleet.jobs j JOIN bitfleet.batches b ON b.id = j.batch_id
        WHERE b.expires_at < now() AND b.cancelled_at IS NULL AND j.state IN ('queued', 'failed')
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE bitfleet.jobs j SET state = 'cancelled', finished_at = now(), last_error = 'batch expired'
    FROM expired WHERE j.id = expired.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Deletes up to max_rows finished jobs (succeeded, dead, cancelled) older than keep, with their results.
-- Returns how many were deleted; call it again while it returns max_rows.
CREATE FUNCTION bitfleet.prune_finished(keep interval DEFAULT interval '7 days', max_rows integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM bitfleet.jobs WHERE id IN (
        SELECT id FROM bitfleet.jobs
        WHERE state IN ('succeeded', 'dead', 'cancelled') AND finished_at < now() - keep
        ORDER BY finished_at LIMIT max_rows
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- Batch status gains "expired": past the window with items that were cancelled for it.
CREATE OR REPLACE VIEW bitfleet.batch_progress AS
SELECT b.id AS batch_id, b.model, b.tenant, b.created_at, b.expires_at, b.cancelled_at,
       count(j.id)                                          AS total,
       count(j.id) FILTER (WHERE j.state = 'queued')        AS queued,
       count(j.id) FILTER (WHERE j.state = 'running')       AS running,
       count(j.id) FILTER (WHERE j.state = 'failed')        AS retrying,
       count(j.id) FILTER (WHERE j.state = 'succeeded')     AS succeeded,
       count(j.id) FILTER (WHERE j.state = 'dead')          AS failed,
       count(j.id) FILTER (WHERE j.state = 'cancelled')     AS cancelled,
       CASE WHEN b.cancelled_at IS NOT NULL AND count(j.id) FILTER (WHERE j.state IN ('queued', 'running', 'failed')) = 0 THEN 'cancelled'
            WHEN b.cancelled_at IS NOT NULL THEN 'cancelling'
            WHEN count(j.id) FILTER (WHERE j.state IN ('queued', 'running', 'failed')) > 0 THEN 'in_progress'
            WHEN count(j.id) FILTER (WHERE j.last_error = 'batch expired') > 0 THEN 'expired'
            ELSE 'completed' END                            AS status
FROM bitfleet.batches b
LEFT JOIN bitfleet.jobs j ON j.batch_id = b.id
GROUP BY b.id;

REVOKE EXECUTE ON FUNCTION bitfleet.expire_batches(), bitfleet.prune_finished(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bitfleet.expire_batches(), bitfleet.prune_finished(interval, integer) TO bitfleet_worker;
