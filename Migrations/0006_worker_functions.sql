-- Workers write only through fenced functions; retention is the owner's setting; stopped batches stay stopped.
--
-- Every function below is SECURITY DEFINER (runs as the schema owner), SET search_path = pg_catalog, bitfleet,
-- pg_temp, and EXECUTE is granted to bitfleet_worker only. The worker role keeps SELECT on what it reads, and loses
-- INSERT/UPDATE/DELETE on bitfleet.jobs, results, job_costs, workers and worker_usage: a worker credential can no
-- longer forge another worker's lease, rewrite a queued job (input_url, tenant, …), write a result for a job it does
-- not hold, or delete finished work.
--
-- Every write about a job is fenced by (job id, attempt, lease owner, state = 'running'): a call for a job/attempt
-- the caller does not hold changes nothing and says so (empty result / NULL).
--
--   bitfleet.worker_register(worker_id, hostname, pid, concurrency, node_class, price_per_core_hour)   → void
--   bitfleet.worker_stopped(worker_id)                                                               → void
--   bitfleet.worker_usage(worker_id, node_class, period_start, period_end, cores, busy, idle, price)  → void
--   bitfleet.worker_claim(worker_id, max_jobs, lease_seconds)
--       → TABLE(id, attempt, max_attempts, batch_id, custom_id, model, model_version, input_url, input_format,
--               top_k, tenant, queue_wait_seconds)
--       due jobs, highest priority first, FOR UPDATE SKIP LOCKED; never a job of a cancelled or expired batch.
--   bitfleet.worker_heartbeat(worker_id, job_ids[], attempts[], lease_seconds) → TABLE(job_id, attempt)
--       renews the leases of the (job, attempt) pairs the caller still holds and returns them; also the
--       worker's heartbeat_at.
--   bitfleet.worker_complete(worker_id, job_ids[], attempts[], model_versions[], samples[], outputs[] (jsonb text),
--       node_classes[], queue_wait_s[], fetch_s[], decode_s[], infer_s[], cpu_s[], bytes[], binary_ops[],
--       price_per_core_hour[], model_memory_bytes[], memory_gb_s[], price_per_gb_hour[], expert_activations[]
--       ('1,0,3' text)) → SETOF bigint
--       result + cost row + 'succeeded' in one statement for each held (job, attempt); euros are computed here.
--       One value that Postgres refuses (an output that is not valid jsonb, say) fails the whole call: the worker
--       then writes one job per call to find it.
--   bitfleet.worker_write_time(worker_id, job_ids[], seconds) → integer   (job_costs.write_seconds, once)
--   bitfleet.worker_fail(worker_id, job_id, attempt, retry_delay_seconds (NULL = permanent), error, class, phase)
--       → text: the state written ('failed', 'dead' or 'cancelled'), NULL when the caller does not hold it.
--       A job of a cancelled or expired batch is never retried: it ends 'cancelled' (a permanent error: 'dead').
--   bitfleet.worker_release(worker_id, job_ids[], attempts[]) → integer
--       gives back unstarted jobs (the attempt is not counted); those of a stopped batch end 'cancelled'.
--   bitfleet.worker_rescue() → integer
--       expired leases of any worker: 'failed' (runs again), 'dead' (out of attempts) or 'cancelled' (stopped batch).
--   bitfleet.worker_prune(max_rows) → integer
--       deletes finished jobs (and results; cost rows stay) older than bitfleet.settings.finished_job_retention.
--
-- Retention: `UPDATE bitfleet.settings SET finished_job_retention = interval '30 days';` (NULL keeps everything).
-- bitfleet.prune_finished(keep, max_rows) stays for the owner; workers may no longer call it.

-- ---------------------------------------------------------------------------------------------------------------
-- Settings the owner controls: one row.
CREATE TABLE bitfleet.settings (
    singleton               boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    finished_job_retention  interval DEFAULT interval '7 days'
                                     CHECK (finished_job_retention IS NULL OR finished_job_retention >= interval '1 hour')
);
INSERT INTO bitfleet.settings DEFAULT VALUES;
COMMENT ON COLUMN bitfleet.settings.finished_job_retention IS
    'Finished jobs (succeeded, dead, cancelled) and their results are deleted this long after they finished; cost '
    'rows stay. NULL keeps everything. Workers apply it; only the owner can change it.';

-- 'cancelled' or 'expired' when the batch will take no more attempts, else NULL.
CREATE FUNCTION bitfleet.batch_stop_reason(batch bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    SELECT CASE WHEN b.cancelled_at IS NOT NULL THEN 'cancelled'
                WHEN b.expires_at < now() THEN 'expired' END
    FROM bitfleet.batches b WHERE b.id = batch
$$;

-- ---------------------------------------------------------------------------------------------------------------
CREATE FUNCTION bitfleet.worker_register(worker_id text, hostname text, pid integer, concurrency integer,
                                         node_class text, price_per_core_hour double precision) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    INSERT INTO bitfleet.workers (id, hostname, pid, concurrency, node_class, price_per_core_hour)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL
$$;

CREATE FUNCTION bitfleet.worker_stopped(worker_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    UPDATE bitfleet.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1
$$;

CREATE FUNCTION bitfleet.worker_usage(worker_id text, node_class text, period_start double precision,
                                      period_end double precision, cores double precision,
                                      busy_core_seconds double precision, idle_core_seconds double precision,
                                      price_per_core_hour double precision) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                       idle_core_seconds, price_per_core_hour)
    VALUES ($1, $2, to_timestamp($3), to_timestamp($4), $5, $6, $7, $8)
$$;

-- ---------------------------------------------------------------------------------------------------------------
CREATE FUNCTION bitfleet.worker_claim(worker_id text, max_jobs integer, lease_seconds double precision)
RETURNS TABLE (id bigint, attempt integer, max_attempts integer, batch_id bigint, custom_id text, model text,
               model_version text, input_url text, input_format text, top_k integer, tenant text,
               queue_wait_seconds double precision)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH due AS (
        SELECT q.id FROM bitfleet.jobs q
        WHERE q.state IN ('queued', 'failed') AND q.run_after <= now()
          AND (q.batch_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM bitfleet.batches b
                WHERE b.id = q.batch_id AND (b.cancelled_at IS NOT NULL OR b.expires_at < now())))
        ORDER BY q.priority DESC, q.run_after, q.id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    UPDATE bitfleet.jobs j
    SET state = 'running', attempt = j.attempt + 1, lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => $3), started_at = coalesce(j.started_at, now())
    FROM due WHERE j.id = due.id
    RETURNING j.id, j.attempt, j.max_attempts, j.batch_id, j.custom_id, j.model, j.model_version, j.input_url,
              j.input_format, j.top_k, j.tenant, greatest(0, extract(epoch FROM now() - j.run_after))::float8
$$;

CREATE FUNCTION bitfleet.worker_heartbeat(worker_id text, job_ids bigint[], attempts integer[],
                                          lease_seconds double precision)
RETURNS TABLE (job_id bigint, attempt integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    UPDATE bitfleet.workers SET heartbeat_at = now() WHERE id = $1;
    UPDATE bitfleet.jobs j SET lease_expires_at = now() + make_interval(secs => $4)
    FROM unnest($2, $3) AS held(id, attempt)
    WHERE j.id = held.id AND j.attempt = held.attempt AND j.lease_owner = $1 AND j.state = 'running'
    RETURNING j.id, j.attempt
$$;

CREATE FUNCTION bitfleet.worker_complete(
    worker_id text, job_ids bigint[], attempts integer[], model_versions text[], samples integer[], outputs text[],
    node_classes text[], queue_wait_seconds double precision[], fetch_seconds double precision[],
    decode_seconds double precision[], infer_seconds double precision[], cpu_seconds double precision[],
    bytes_fetched bigint[], binary_ops bigint[], price_per_core_hour double precision[],
    model_memory_bytes bigint[], memory_gb_seconds double precision[], price_per_gb_hour double precision[],
    expert_activations text[])
RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH input AS (
        SELECT * FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
            AS t(id, attempt, model_version, samples, output, node_class, queue_wait_s, fetch_s, decode_s, infer_s,
                 cpu_s, bytes, ops, price, memory_bytes, memory_gb_s, price_gb, experts)
    ), done AS (
        UPDATE bitfleet.jobs j
        SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL, last_error = NULL
        FROM input
        WHERE j.id = input.id AND j.attempt = input.attempt AND j.lease_owner = $1 AND j.state = 'running'
        RETURNING j.id, j.batch_id, j.model, j.tenant
    ), result AS (
        INSERT INTO bitfleet.results (job_id, attempt, model, model_version, samples, output)
        SELECT done.id, input.attempt, done.model, input.model_version, input.samples, input.output::jsonb
        FROM done JOIN input ON input.id = done.id
        RETURNING job_id
    )
    INSERT INTO bitfleet.job_costs (job_id, batch_id, attempt, model, model_version, tenant, worker_id, node_class,
        samples, queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched,
        binary_ops, price_per_core_hour, euros, model_memory_bytes, memory_gb_seconds, price_per_gb_hour,
        expert_activations)
    SELECT done.id, done.batch_id, input.attempt, done.model, input.model_version, done.tenant, $1,
           input.node_class, input.samples, input.queue_wait_s, input.fetch_s, input.decode_s, input.infer_s,
           input.cpu_s, input.bytes, input.ops, input.price,
           input.cpu_s / 3600 * input.price + input.memory_gb_s / 3600 * input.price_gb,
           input.memory_bytes, input.memory_gb_s, input.price_gb,
           string_to_array(nullif(input.experts, ''), ',')::int[]
    FROM done JOIN result ON result.job_id = done.id JOIN input ON input.id = done.id
    RETURNING job_id
$$;

CREATE FUNCTION bitfleet.worker_write_time(worker_id text, job_ids bigint[], seconds double precision)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH written AS (
        UPDATE bitfleet.job_costs SET write_seconds = $3 / greatest(cardinality($2), 1)
        WHERE job_id = ANY($2) AND worker_id = $1 AND write_seconds IS NULL
        RETURNING 1
    )
    SELECT count(*)::int FROM written
$$;

CREATE FUNCTION bitfleet.worker_fail(worker_id text, job_id bigint, attempt integer,
                                     retry_delay_seconds double precision, error text, error_class text,
                                     phase text)
RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH target AS (
        SELECT j.id, j.attempt >= j.max_attempts AS last_attempt,
               CASE WHEN j.batch_id IS NOT NULL THEN bitfleet.batch_stop_reason(j.batch_id) END AS stopped
        FROM bitfleet.jobs j
        WHERE j.id = $2 AND j.attempt = $3 AND j.lease_owner = $1 AND j.state = 'running'
        FOR UPDATE
    )
    UPDATE bitfleet.jobs j
    SET state = CASE WHEN $4 IS NULL OR t.last_attempt THEN 'dead'::bitfleet.job_state
                     WHEN t.stopped IS NOT NULL THEN 'cancelled'
                     ELSE 'failed' END,
        run_after = CASE WHEN $4 IS NULL OR t.last_attempt OR t.stopped IS NOT NULL THEN j.run_after
                         ELSE now() + make_interval(secs => $4) END,
        finished_at = CASE WHEN $4 IS NULL OR t.last_attempt OR t.stopped IS NOT NULL THEN now() END,
        lease_owner = NULL, lease_expires_at = NULL,
        last_error = CASE WHEN $4 IS NOT NULL AND NOT t.last_attempt AND t.stopped IS NOT NULL
                          THEN $5 || ' (not retried: batch ' || t.stopped || ')' ELSE $5 END,
        errors = j.errors || jsonb_build_object('attempt', $3, 'at', now(), 'worker', $1, 'class', $6,
                                                'phase', $7, 'error', $5)
    FROM target t WHERE j.id = t.id
    RETURNING j.state::text
$$;

CREATE FUNCTION bitfleet.worker_release(worker_id text, job_ids bigint[], attempts integer[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH target AS (
        SELECT j.id, CASE WHEN j.batch_id IS NOT NULL THEN bitfleet.batch_stop_reason(j.batch_id) END AS stopped
        FROM bitfleet.jobs j JOIN unnest($2, $3) AS held(id, attempt) ON held.id = j.id AND held.attempt = j.attempt
        WHERE j.lease_owner = $1 AND j.state = 'running'
        FOR UPDATE OF j
    ), released AS (
        UPDATE bitfleet.jobs j
        SET state = CASE WHEN t.stopped IS NOT NULL THEN 'cancelled'::bitfleet.job_state
                         WHEN j.attempt > 1 THEN 'failed' ELSE 'queued' END,
            finished_at = CASE WHEN t.stopped IS NOT NULL THEN now() END,
            last_error = CASE WHEN t.stopped IS NOT NULL THEN 'batch ' || t.stopped ELSE j.last_error END,
            attempt = j.attempt - 1, lease_owner = NULL, lease_expires_at = NULL
        FROM target t WHERE j.id = t.id
        RETURNING 1
    )
    SELECT count(*)::int FROM released
$$;

CREATE FUNCTION bitfleet.worker_rescue() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH expired AS (
        SELECT q.id, q.attempt >= q.max_attempts AS last_attempt,
               CASE WHEN q.batch_id IS NOT NULL THEN bitfleet.batch_stop_reason(q.batch_id) END AS stopped
        FROM bitfleet.jobs q
        WHERE q.state = 'running' AND q.lease_expires_at < now()
        FOR UPDATE SKIP LOCKED
    ), rescued AS (
        UPDATE bitfleet.jobs j
        SET state = CASE WHEN e.stopped IS NOT NULL THEN 'cancelled'::bitfleet.job_state
                         WHEN e.last_attempt THEN 'dead' ELSE 'failed' END,
            finished_at = CASE WHEN e.stopped IS NOT NULL OR e.last_attempt THEN now() END,
            last_error = CASE WHEN e.stopped IS NOT NULL THEN 'batch ' || e.stopped
                              ELSE 'lease expired: worker ' || j.lease_owner || ' stopped renewing it' END,
            errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'worker', j.lease_owner,
                                                    'class', 'transient', 'phase', 'lease', 'error', 'lease expired'),
            lease_owner = NULL, lease_expires_at = NULL
        FROM expired e WHERE j.id = e.id
        RETURNING 1
    )
    SELECT count(*)::int FROM rescued
$$;

CREATE FUNCTION bitfleet.worker_prune(max_rows integer DEFAULT 10000) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH doomed AS (
        SELECT q.id FROM bitfleet.jobs q, bitfleet.settings s
        WHERE s.finished_job_retention IS NOT NULL
          AND q.state IN ('succeeded', 'dead', 'cancelled') AND q.finished_at < now() - s.finished_job_retention
        ORDER BY q.finished_at LIMIT greatest($1, 0)
        FOR UPDATE OF q SKIP LOCKED
    ), deleted AS (
        DELETE FROM bitfleet.jobs j USING doomed WHERE j.id = doomed.id RETURNING 1
    )
    SELECT count(*)::int FROM deleted
$$;

-- Expired batches: unchanged behaviour, now with the search path every definer function uses.
ALTER FUNCTION bitfleet.expire_batches() SET search_path = pg_catalog, bitfleet, pg_temp;

-- ---------------------------------------------------------------------------------------------------------------
-- Privileges: functions, not tables.
REVOKE EXECUTE ON FUNCTION
    bitfleet.batch_stop_reason(bigint),
    bitfleet.worker_register(text, text, integer, integer, text, double precision),
    bitfleet.worker_stopped(text),
    bitfleet.worker_usage(text, text, double precision, double precision, double precision, double precision,
                          double precision, double precision),
    bitfleet.worker_claim(text, integer, double precision),
    bitfleet.worker_heartbeat(text, bigint[], integer[], double precision),
    bitfleet.worker_complete(text, bigint[], integer[], text[], integer[], text[], text[], double precision[],
                             double precision[], double precision[], double precision[], double precision[],
                             bigint[], bigint[], double precision[], bigint[], double precision[],
                             double precision[], text[]),
    bitfleet.worker_write_time(text, bigint[], double precision),
    bitfleet.worker_fail(text, bigint, integer, double precision, text, text, text),
    bitfleet.worker_release(text, bigint[], integer[]),
    bitfleet.worker_rescue(),
    bitfleet.worker_prune(integer)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    bitfleet.worker_register(text, text, integer, integer, text, double precision),
    bitfleet.worker_stopped(text),
    bitfleet.worker_usage(text, text, double precision, double precision, double precision, double precision,
                          double precision, double precision),
    bitfleet.worker_claim(text, integer, double precision),
    bitfleet.worker_heartbeat(text, bigint[], integer[], double precision),
    bitfleet.worker_complete(text, bigint[], integer[], text[], integer[], text[], text[], double precision[],
                             double precision[], double precision[], double precision[], double precision[],
                             bigint[], bigint[], double precision[], bigint[], double precision[],
                             double precision[], text[]),
    bitfleet.worker_write_time(text, bigint[], double precision),
    bitfleet.worker_fail(text, bigint, integer, double precision, text, text, text),
    bitfleet.worker_release(text, bigint[], integer[]),
    bitfleet.worker_rescue(),
    bitfleet.worker_prune(integer)
TO bitfleet_worker;

REVOKE EXECUTE ON FUNCTION bitfleet.prune_finished(interval, integer) FROM bitfleet_worker;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON bitfleet.jobs, bitfleet.results, bitfleet.job_costs, bitfleet.workers,
    bitfleet.worker_usage FROM bitfleet_worker;
REVOKE UPDATE (write_seconds) ON bitfleet.job_costs FROM bitfleet_worker;
GRANT SELECT ON bitfleet.settings TO bitfleet_worker, bitfleet_readonly;
