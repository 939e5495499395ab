-- Per-job phase CPU seconds: where a job's metered CPU goes (issue 15, items 3 and 4).
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS fetch_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS decode_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS infer_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS encode_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS write_cpu_seconds double precision;

-- Each is thread CPU time (CLOCK_THREAD_CPUTIME_ID, user + system) of the worker thread that ran the phase. A phase
-- the worker runs for several jobs at once (the inference of a claimed batch, the statement that writes it) is
-- shared among its jobs in proportion to their samples (infer) or evenly (write); see docs/COSTS.md.
-- cpu_seconds = fetch + decode + infer + encode + write CPU seconds once write_cpu_seconds is filled (right after the
-- commit it measures, by bitfleet.worker_write_time); rows written before this migration have NULLs here.
COMMENT ON COLUMN bitfleet.job_costs.fetch_cpu_seconds IS
    'Thread CPU seconds of this job''s fetch (model registry lookup and the HTTP transfer, TLS and gzip included).';
COMMENT ON COLUMN bitfleet.job_costs.decode_cpu_seconds IS
    'Thread CPU seconds decoding and validating the input (npy, JSON, NDJSON, raw) and quantising it to 8 bits.';
COMMENT ON COLUMN bitfleet.job_costs.infer_cpu_seconds IS
    'Thread CPU seconds of the forward pass; a pass over several jobs'' samples is shared by samples.';
COMMENT ON COLUMN bitfleet.job_costs.encode_cpu_seconds IS
    'Thread CPU seconds building the result document (JSON).';
COMMENT ON COLUMN bitfleet.job_costs.write_cpu_seconds IS
    'Worker-side thread CPU seconds of the statement that stored the result and cost row, shared evenly by the jobs '
    'it wrote (the database server''s own CPU is not in it). Added to cpu_seconds and euros when it is recorded.';

-- worker_complete with the four phase CPU columns known before the write (fetch, decode, infer, encode). Same
-- fences as the 0006 function (which stays, for workers of the previous version during a rolling upgrade).
CREATE FUNCTION bitfleet.worker_complete(
    worker_id text, job_ids bigint[], attempts integer[], model_versions text[], samples integer[], outputs text[],
    node_classes text[], queue_wait_seconds double precision[], fetch_seconds double precision[],
    decode_seconds double precision[], infer_seconds double precision[], cpu_seconds double precision[],
    bytes_fetched bigint[], binary_ops bigint[], price_per_core_hour double precision[],
    model_memory_bytes bigint[], memory_gb_seconds double precision[], price_per_gb_hour double precision[],
    expert_activations text[], fetch_cpu_seconds double precision[], decode_cpu_seconds double precision[],
    infer_cpu_seconds double precision[], encode_cpu_seconds double precision[])
RETURNS SETOF bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH input AS (
        SELECT * FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                             $20, $21, $22, $23)
            AS t(id, attempt, model_version, samples, output, node_class, queue_wait_s, fetch_s, decode_s, infer_s,
                 cpu_s, bytes, ops, price, memory_bytes, memory_gb_s, price_gb, experts,
                 fetch_cpu, decode_cpu, infer_cpu, encode_cpu)
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
        expert_activations, fetch_cpu_seconds, decode_cpu_seconds, infer_cpu_seconds, encode_cpu_seconds)
    SELECT done.id, done.batch_id, input.attempt, done.model, input.model_version, done.tenant, $1,
           input.node_class, input.samples, input.queue_wait_s, input.fetch_s, input.decode_s, input.infer_s,
           input.cpu_s, input.bytes, input.ops, input.price,
           input.cpu_s / 3600 * input.price + input.memory_gb_s / 3600 * input.price_gb,
           input.memory_bytes, input.memory_gb_s, input.price_gb,
           string_to_array(nullif(input.experts, ''), ',')::int[],
           greatest(input.fetch_cpu, 0), greatest(input.decode_cpu, 0), greatest(input.infer_cpu, 0),
           greatest(input.encode_cpu, 0)
    FROM done JOIN result ON result.job_id = done.id JOIN input ON input.id = done.id
    RETURNING job_id
$$;

-- worker_write_time with the statement's worker-side CPU seconds: write_seconds and write_cpu_seconds (each shared
-- evenly by the jobs), and the job's cpu_seconds and euros grow by its share. Once per job, only for the caller's rows.
CREATE FUNCTION bitfleet.worker_write_time(worker_id text, job_ids bigint[], seconds double precision,
                                           cpu_seconds double precision)
RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, bitfleet, pg_temp AS $$
    WITH share AS (
        SELECT $3 / greatest(cardinality($2), 1) AS wall, greatest($4, 0) / greatest(cardinality($2), 1) AS cpu
    ), written AS (
        UPDATE bitfleet.job_costs c
        SET write_seconds = share.wall, write_cpu_seconds = share.cpu,
            cpu_seconds = c.cpu_seconds + share.cpu,
            euros = c.euros + share.cpu / 3600 * c.price_per_core_hour
        FROM share
        WHERE c.job_id = ANY($2) AND c.worker_id = $1 AND c.write_seconds IS NULL
        RETURNING 1
    )
    SELECT count(*)::int FROM written
$$;

REVOKE EXECUTE ON FUNCTION
    bitfleet.worker_complete(text, bigint[], integer[], text[], integer[], text[], text[], double precision[],
                             double precision[], double precision[], double precision[], double precision[],
                             bigint[], bigint[], double precision[], bigint[], double precision[],
                             double precision[], text[], double precision[], double precision[], double precision[],
                             double precision[]),
    bitfleet.worker_write_time(text, bigint[], double precision, double precision)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    bitfleet.worker_complete(text, bigint[], integer[], text[], integer[], text[], text[], double precision[],
                             double precision[], double precision[], double precision[], double precision[],
                             bigint[], bigint[], double precision[], bigint[], double precision[],
                             double precision[], text[], double precision[], double precision[], double precision[],
                             double precision[]),
    bitfleet.worker_write_time(text, bigint[], double precision, double precision)
TO bitfleet_worker;
