-- pgbench script: exactly the worker's statements for one claimed batch of no-op jobs, through the same fenced
-- functions the worker calls (Sources/BitFleetWorker/JobQueue.swift): worker_claim (SKIP LOCKED, lease, attempt),
-- worker_complete (result + cost row + succeeded, fenced by id, attempt and lease owner), worker_write_time.
-- Variables: :batch (jobs per claim). Used by Ops/bench/queue.sh; run with pgbench -M simple.
SELECT coalesce(quote_literal(array_agg(id)::text), 'NULL') AS ids,
       coalesce(quote_literal(array_agg(attempt)::text), 'NULL') AS attempts,
       coalesce(quote_literal(array_agg('builtin'::text)::text), 'NULL') AS versions,
       coalesce(quote_literal(array_agg(0)::text), 'NULL') AS samples,
       coalesce(quote_literal(array_agg('{"noop": true}'::text)::text), 'NULL') AS outputs,
       coalesce(quote_literal(array_agg('default'::text)::text), 'NULL') AS classes,
       coalesce(quote_literal(array_agg(queue_wait_seconds)::text), 'NULL') AS waits,
       coalesce(quote_literal(array_agg(0.00001::float8)::text), 'NULL') AS zeros,
       coalesce(quote_literal(array_agg(0::bigint)::text), 'NULL') AS bigzeros,
       coalesce(quote_literal(array_agg(0.05::float8)::text), 'NULL') AS prices,
       coalesce(quote_literal(array_agg(''::text)::text), 'NULL') AS empties
FROM bitfleet.worker_claim('pgbench-' || pg_backend_pid(), :batch, 30)
\gset
SELECT bitfleet.worker_complete('pgbench-' || pg_backend_pid(), :ids::bigint[], :attempts::int[], :versions::text[],
    :samples::int[], :outputs::text[], :classes::text[], :waits::float8[], :zeros::float8[], :zeros::float8[],
    :zeros::float8[], :zeros::float8[], :bigzeros::bigint[], :bigzeros::bigint[], :prices::float8[],
    :bigzeros::bigint[], :zeros::float8[], :zeros::float8[], :empties::text[], :zeros::float8[], :zeros::float8[],
    :zeros::float8[], :zeros::float8[]);
SELECT bitfleet.worker_write_time('pgbench-' || pg_backend_pid(), :ids::bigint[], 0.0001, 0.0001);
