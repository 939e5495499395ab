-- pgbench script: exactly the worker's statements for one claimed batch of no-op jobs
-- (claim with SKIP LOCKED, fenced batched completion with result and cost rows, write-time update).
-- Variables: :batch (jobs per claim). Used by Ops/bench/queue.sh; run with pgbench -M simple.
WITH due AS (
    SELECT id FROM bitfleet.jobs
    WHERE state IN ('queued', 'failed') AND run_after <= now()
    ORDER BY priority DESC, run_after, id
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE bitfleet.jobs j
    SET state = 'running', attempt = j.attempt + 1, lease_owner = 'pgbench-' || pg_backend_pid(),
        lease_expires_at = now() + make_interval(secs => 30), started_at = coalesce(j.started_at, now())
    FROM due WHERE j.id = due.id
    RETURNING j.id, j.attempt, j.max_attempts, j.batch_id, j.custom_id, j.model, j.model_version, j.input_url,
              j.input_format, j.top_k, j.tenant, extract(epoch FROM now() - j.run_after)::float8 AS queue_wait
)
SELECT coalesce(quote_literal(array_agg(id)::text), 'NULL') AS ids,
       coalesce(quote_literal(array_agg(attempt)::text), 'NULL') AS attempts,
       coalesce(quote_literal(array_agg('builtin'::text)::text), 'NULL') AS versions,
       coalesce(quote_literal(array_agg(0)::text), 'NULL') AS samples,
       coalesce(quote_literal(array_agg('{"noop": true}'::text)::text), 'NULL') AS outputs,
       coalesce(quote_literal(array_agg('default'::text)::text), 'NULL') AS classes,
       coalesce(quote_literal(array_agg(queue_wait)::text), 'NULL') AS waits,
       coalesce(quote_literal(array_agg(0.00001::float8)::text), 'NULL') AS zeros,
       coalesce(quote_literal(array_agg(0::bigint)::text), 'NULL') AS bigzeros,
       coalesce(quote_literal(array_agg(0.05::float8)::text), 'NULL') AS prices,
       coalesce(quote_literal(array_agg(''::text)::text), 'NULL') AS empties
FROM claimed
\gset
WITH input AS (
    SELECT * FROM unnest(:ids::bigint[], :attempts::int[], :versions::text[], :samples::int[], :outputs::text[], :classes::text[],
                         :waits::float8[], :zeros::float8[], :zeros::float8[], :zeros::float8[], :zeros::float8[],
                         :bigzeros::bigint[], :bigzeros::bigint[], :prices::float8[], :zeros::float8[], :bigzeros::bigint[],
                         :zeros::float8[], :zeros::float8[], :empties::text[])
        AS t(id, attempt, model_version, samples, output, node_class, queue_wait_s, fetch_s, decode_s,
             infer_s, cpu_s, bytes, ops, price, euros, memory_bytes, memory_gb_s, price_gb, experts)
), done AS (
    UPDATE bitfleet.jobs j
    SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL, last_error = NULL
    FROM input
    WHERE j.id = input.id AND j.attempt = input.attempt AND j.lease_owner = 'pgbench-' || pg_backend_pid() AND j.state = 'running'
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
SELECT done.id, done.batch_id, input.attempt, done.model, input.model_version, done.tenant, 'pgbench-' || pg_backend_pid(),
       input.node_class, input.samples, input.queue_wait_s, input.fetch_s, input.decode_s, input.infer_s, input.cpu_s,
       input.bytes, input.ops, input.price, input.euros, input.memory_bytes, input.memory_gb_s, input.price_gb,
       string_to_array(nullif(input.experts, ''), ',')::int[]
FROM done JOIN result ON result.job_id = done.id JOIN input ON input.id = done.id
RETURNING job_id;
UPDATE bitfleet.job_costs SET write_seconds = 0.0001 WHERE job_id = ANY(:ids::bigint[]);
