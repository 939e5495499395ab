-- BitFleet schema, version 3: what the fleet costs, idle included, and what the same work would cost on GPUs.
--   bitfleet.worker_usage   one row per worker heartbeat interval: allocated, busy and idle core-seconds, the price
--   bitfleet.gpu_baselines  GPU price and throughput to compare with (user-editable; 'measured' or 'stated')
--   views                   cost by tenant/month, per 1 000 inferences, per batch, allocation with __idle__,
--                           fleet utilisation per hour/day, GPU comparison per job/day/model, queue summary,
--                           throughput per worker. bitfleet.cost_by_model_day (0001) is unchanged.
-- Every euro figure is core-seconds / 3600 × the euros per core-hour the worker was configured with (OpenCost's
-- allocation model); every day, month and hour is UTC.

-- Worker heartbeats: the worker inserts one row per interval. allocated = cores × (period_end − period_start);
-- busy = CPU seconds its threads used; idle = allocated − busy, never negative.
CREATE TABLE bitfleet.worker_usage (
    id                   bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id            text             NOT NULL,
    node_class           text             NOT NULL,
    period_start         timestamptz      NOT NULL,
    period_end           timestamptz      NOT NULL,
    cores                double precision NOT NULL CHECK (cores > 0),
    busy_core_seconds    double precision NOT NULL CHECK (busy_core_seconds >= 0),
    idle_core_seconds    double precision NOT NULL CHECK (idle_core_seconds >= 0),
    price_per_core_hour  double precision NOT NULL CHECK (price_per_core_hour >= 0),
    CHECK (period_end >= period_start)
);
CREATE INDEX worker_usage_period ON bitfleet.worker_usage (period_start);
COMMENT ON TABLE bitfleet.worker_usage IS
    'One row per worker heartbeat interval: cores allocated to the worker, busy and idle core-seconds in '
    '[period_start, period_end), and the euros per core-hour of its node class. Utilisation views attribute a row '
    'to the UTC hour/day its period_start falls in.';

-- GPU baselines to compare with. A row names a model (or NULL: every model without a row of its own is compared
-- with it too), a GPU, what it costs per hour and how many samples per second it processes. `source` says whether
-- the throughput was measured by you ('measured') or taken from a document or assumption ('stated'); the views
-- carry it on every row so measured and assumed figures are never mixed unlabelled.
CREATE TABLE bitfleet.gpu_baselines (
    id                  bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model               text,
    gpu                 text             NOT NULL CHECK (length(gpu) > 0),
    euros_per_hour      double precision NOT NULL CHECK (euros_per_hour > 0),
    samples_per_second  double precision NOT NULL CHECK (samples_per_second > 0),
    source              text             NOT NULL CHECK (source IN ('measured', 'stated')),
    note                text             NOT NULL CHECK (length(note) > 0),
    created_at          timestamptz      NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (model, gpu)
);
COMMENT ON TABLE bitfleet.gpu_baselines IS
    'GPU price (euros_per_hour) and throughput (samples_per_second) per model (NULL model: the default for every '
    'model). source = measured (your own benchmark) or stated (a document or an assumption); note says which and '
    'where from. Edit freely: the GPU views read it at query time.';

INSERT INTO bitfleet.gpu_baselines (model, gpu, euros_per_hour, samples_per_second, source, note) VALUES
    (NULL, 'cloud GPU instance (assumed)', 3.0, 1000000, 'stated',
     'ASSUMED, not measured. Price: the low bound of the EUR 3-8 per hour per GPU instance that the seed essay '
     'states. Throughput: an assumed 1 000 000 samples/s for a small classifier on a fully busy GPU, chosen to '
     'favour the GPU (no idle time, no transfer cost). Replace with a measured row (source = measured) for your '
     'model and GPU.');

-- ---------------------------------------------------------------------------------------------------------------
-- Cost views (from bitfleet.job_costs: one row per succeeded job, euros = cpu_seconds / 3600 × price_per_core_hour)

CREATE VIEW bitfleet.cost_by_tenant_month AS
SELECT date_trunc('month', c.created_at AT TIME ZONE 'UTC')::date  AS month,
       coalesce(c.tenant, '__unallocated__')                     AS tenant,
       count(*)                                                  AS jobs,
       sum(c.samples)                                            AS samples,
       sum(c.cpu_seconds)                                        AS cpu_seconds,
       sum(c.euros)                                              AS euros,
       sum(c.euros) / nullif(sum(c.samples), 0) * 1000           AS euros_per_1000_inferences
FROM bitfleet.job_costs c
GROUP BY 1, 2;
COMMENT ON VIEW bitfleet.cost_by_tenant_month IS
    'Metered euros per tenant per calendar month (UTC; month = its first day). Jobs without a tenant are '
    '__unallocated__. euros_per_1000_inferences = euros / samples × 1000.';

CREATE VIEW bitfleet.cost_per_1000_inferences AS
SELECT c.model,
       c.model_version,
       count(*)                                                  AS jobs,
       sum(c.samples)                                            AS samples,
       sum(c.cpu_seconds)                                        AS cpu_seconds,
       sum(c.euros)                                              AS euros,
       sum(c.euros) / nullif(sum(c.samples), 0) * 1000           AS euros_per_1000_inferences,
       sum(c.cpu_seconds) / nullif(sum(c.samples), 0) * 1000     AS cpu_seconds_per_1000_inferences,
       sum(c.samples) / nullif(sum(c.cpu_seconds), 0)            AS samples_per_cpu_second,
       min(c.created_at)                                         AS first_job_at,
       max(c.created_at)                                         AS last_job_at
FROM bitfleet.job_costs c
GROUP BY c.model, c.model_version;
COMMENT ON VIEW bitfleet.cost_per_1000_inferences IS
    'All-time cost of one thousand inferences (samples) per model version: euros / samples × 1000, from the '
    'measured CPU seconds of every succeeded job. NULL when a model has no samples (e.g. the no-op job kind).';

CREATE VIEW bitfleet.cost_by_batch AS
SELECT b.id                                                      AS batch_id,
       b.model,
       coalesce(b.tenant, '__unallocated__')                     AS tenant,
       b.created_at,
       p.status,
       p.total                                                   AS items,
       p.succeeded,
       coalesce(c.samples, 0)                                    AS samples,
       coalesce(c.cpu_seconds, 0)                                AS cpu_seconds,
       coalesce(c.euros, 0)                                      AS euros,
       c.euros / nullif(c.samples, 0) * 1000                     AS euros_per_1000_inferences,
       c.first_cost_at,
       c.last_cost_at
FROM bitfleet.batches b
JOIN bitfleet.batch_progress p ON p.batch_id = b.id
LEFT JOIN (
    SELECT batch_id, sum(samples) AS samples, sum(cpu_seconds) AS cpu_seconds, sum(euros) AS euros,
           min(created_at) AS first_cost_at, max(created_at) AS last_cost_at
    FROM bitfleet.job_costs WHERE batch_id IS NOT NULL GROUP BY batch_id
) c ON c.batch_id = b.id;
COMMENT ON VIEW bitfleet.cost_by_batch IS
    'Cost of each batch so far: metered samples, CPU seconds and euros of its succeeded items, with the batch '
    'status and item counts of bitfleet.batch_progress. A batch with nothing metered yet shows zeros.';

-- ---------------------------------------------------------------------------------------------------------------
-- Fleet utilisation and idle cost (from bitfleet.worker_usage)

CREATE VIEW bitfleet.fleet_utilisation_hour AS
SELECT date_trunc('hour', u.period_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'                  AS hour,
       count(DISTINCT u.worker_id)                                                              AS workers,
       sum(u.cores * extract(epoch FROM u.period_end - u.period_start))::double precision        AS allocated_core_seconds,
       sum(u.busy_core_seconds)                                                                 AS busy_core_seconds,
       sum(u.idle_core_seconds)                                                                 AS idle_core_seconds,
       100 * sum(u.busy_core_seconds)
           / nullif(sum(u.cores * extract(epoch FROM u.period_end - u.period_start))::double precision, 0)
                                                                                                AS utilisation_percent,
       sum(u.cores * extract(epoch FROM u.period_end - u.period_start) / 3600 * u.price_per_core_hour)::double precision
                                                                                                AS allocated_euros,
       sum(u.busy_core_seconds / 3600 * u.price_per_core_hour)                                  AS busy_euros,
       sum(u.idle_core_seconds / 3600 * u.price_per_core_hour)                                  AS idle_euros
FROM bitfleet.worker_usage u
GROUP BY 1;
COMMENT ON VIEW bitfleet.fleet_utilisation_hour IS
    'Fleet utilisation per UTC hour from worker heartbeats: allocated core-seconds (cores × interval), busy and idle '
    'core-seconds, utilisation_percent = 100 × busy / allocated, and euros of each at the node class price. '
    'idle_euros is what idle capacity cost (OpenCost''s __idle__).';

CREATE VIEW bitfleet.fleet_utilisation_day AS
SELECT date_trunc('day', u.period_start AT TIME ZONE 'UTC')::date                                AS day,
       count(DISTINCT u.worker_id)                                                              AS workers,
       sum(u.cores * extract(epoch FROM u.period_end - u.period_start))::double precision        AS allocated_core_seconds,
       sum(u.busy_core_seconds)                                                                 AS busy_core_seconds,
       sum(u.idle_core_seconds)                                                                 AS idle_core_seconds,
       100 * sum(u.busy_core_seconds)
           / nullif(sum(u.cores * extract(epoch FROM u.period_end - u.period_start))::double precision, 0)
                                                                                                AS utilisation_percent,
       sum(u.cores * extract(epoch FROM u.period_end - u.period_start) / 3600 * u.price_per_core_hour)::double precision
                                                                                                AS allocated_euros,
       sum(u.busy_core_seconds / 3600 * u.price_per_core_hour)                                  AS busy_euros,
       sum(u.idle_core_seconds / 3600 * u.price_per_core_hour)                                  AS idle_euros
FROM bitfleet.worker_usage u
GROUP BY 1;
COMMENT ON VIEW bitfleet.fleet_utilisation_day IS
    'Fleet utilisation per UTC day, as bitfleet.fleet_utilisation_hour: allocated, busy and idle core-seconds, '
    'utilisation_percent = 100 × busy / allocated, and allocated, busy and idle euros.';

CREATE VIEW bitfleet.cost_allocation_day AS
SELECT date_trunc('day', c.created_at AT TIME ZONE 'UTC')::date AS day,
       c.model                                                 AS allocation,
       'model'::text                                           AS kind,
       sum(c.cpu_seconds)                                      AS core_seconds,
       sum(c.euros)                                            AS euros
FROM bitfleet.job_costs c
GROUP BY 1, 2
UNION ALL
SELECT date_trunc('day', u.period_start AT TIME ZONE 'UTC')::date,
       '__idle__',
       'idle',
       sum(u.idle_core_seconds),
       sum(u.idle_core_seconds / 3600 * u.price_per_core_hour)
FROM bitfleet.worker_usage u
GROUP BY 1;
COMMENT ON VIEW bitfleet.cost_allocation_day IS
    'Euros per UTC day allocated as OpenCost does: one row per model (kind = model: metered job CPU seconds × '
    'price) and one __idle__ row (kind = idle: idle core-seconds of worker heartbeats × price). Their sum is what '
    'the work plus the idle capacity cost; worker overhead outside jobs is in neither.';

-- ---------------------------------------------------------------------------------------------------------------
-- GPU comparison: GPU-equivalent euros = samples / samples_per_second / 3600 × euros_per_hour.
-- Each row carries the baseline's source ('measured' or 'stated'); the CPU side is always measured.

CREATE VIEW bitfleet.job_gpu_comparison AS
SELECT c.job_id,
       c.batch_id,
       c.model,
       c.tenant,
       c.created_at,
       c.samples,
       c.cpu_seconds,
       c.euros                                                              AS cpu_euros,
       g.id                                                                 AS baseline_id,
       g.gpu,
       CASE WHEN g.model IS NULL THEN 'default' ELSE 'model' END            AS baseline_scope,
       g.source                                                             AS baseline_source,
       g.euros_per_hour                                                     AS gpu_euros_per_hour,
       g.samples_per_second                                                 AS gpu_samples_per_second,
       c.samples / g.samples_per_second                                     AS gpu_seconds,
       c.samples / g.samples_per_second / 3600 * g.euros_per_hour           AS gpu_euros,
       c.samples / g.samples_per_second / 3600 * g.euros_per_hour - c.euros AS saving_euros
FROM bitfleet.job_costs c
JOIN bitfleet.gpu_baselines g ON g.model = c.model OR g.model IS NULL;
COMMENT ON VIEW bitfleet.job_gpu_comparison IS
    'Each succeeded job against each GPU baseline that applies to its model (its own rows, scope model, and the '
    'default rows, scope default): measured CPU euros, GPU-equivalent euros = samples / gpu_samples_per_second / '
    '3600 × gpu_euros_per_hour, and saving_euros = gpu_euros - cpu_euros. baseline_source says whether the GPU '
    'throughput was measured or stated (assumed).';

CREATE VIEW bitfleet.savings_vs_gpu_day AS
SELECT date_trunc('day', j.created_at AT TIME ZONE 'UTC')::date     AS day,
       j.model,
       j.baseline_id,
       j.gpu,
       j.baseline_scope,
       j.baseline_source,
       'measured'::text                                             AS cpu_source,
       count(*)                                                     AS jobs,
       sum(j.samples)                                               AS samples,
       sum(j.cpu_seconds)                                           AS cpu_seconds,
       sum(j.cpu_euros)                                             AS cpu_euros,
       sum(j.gpu_seconds)                                           AS gpu_seconds,
       sum(j.gpu_euros)                                             AS gpu_euros,
       sum(j.saving_euros)                                          AS saving_euros,
       100 * sum(j.saving_euros) / nullif(sum(j.gpu_euros), 0)      AS saving_percent,
       24 * min(j.gpu_euros_per_hour)                               AS gpu_always_on_euros
FROM bitfleet.job_gpu_comparison j
GROUP BY 1, 2, 3, 4, 5, 6;
COMMENT ON VIEW bitfleet.savings_vs_gpu_day IS
    'Per UTC day, model and GPU baseline: measured CPU euros, GPU-equivalent euros for the same samples, the saving '
    '(gpu_euros - cpu_euros) and saving_percent = 100 × saving / gpu_euros; baseline_source labels the GPU figure '
    'measured or stated. gpu_always_on_euros = 24 × euros_per_hour: one dedicated GPU instance for the model that '
    'day, the deployment the seed essay describes (compare it with cpu_euros, not with gpu_euros).';

CREATE VIEW bitfleet.savings_vs_gpu AS
SELECT j.model,
       j.baseline_id,
       j.gpu,
       j.baseline_scope,
       j.baseline_source,
       'measured'::text                                             AS cpu_source,
       min(j.gpu_euros_per_hour)                                    AS gpu_euros_per_hour,
       min(j.gpu_samples_per_second)                                AS gpu_samples_per_second,
       count(*)                                                     AS jobs,
       sum(j.samples)                                               AS samples,
       sum(j.cpu_seconds)                                           AS cpu_seconds,
       sum(j.cpu_euros)                                             AS cpu_euros,
       sum(j.gpu_seconds)                                           AS gpu_seconds,
       sum(j.gpu_euros)                                             AS gpu_euros,
       sum(j.saving_euros)                                          AS saving_euros,
       100 * sum(j.saving_euros) / nullif(sum(j.gpu_euros), 0)      AS saving_percent,
       sum(j.cpu_euros) / nullif(sum(j.samples), 0) * 1000          AS cpu_euros_per_1000_inferences,
       sum(j.gpu_euros) / nullif(sum(j.samples), 0) * 1000          AS gpu_euros_per_1000_inferences
FROM bitfleet.job_gpu_comparison j
GROUP BY j.model, j.baseline_id, j.gpu, j.baseline_scope, j.baseline_source;
COMMENT ON VIEW bitfleet.savings_vs_gpu IS
    'All-time, per model and GPU baseline: measured CPU euros against GPU-equivalent euros for the same samples '
    '(samples / gpu_samples_per_second / 3600 × gpu_euros_per_hour), saving_euros = gpu_euros - cpu_euros, '
    'saving_percent = 100 × saving / gpu_euros, and both per 1 000 inferences. baseline_source (measured | stated) '
    'labels the GPU figure; cpu_source is always measured. One row per baseline: figures are never blended.';

-- ---------------------------------------------------------------------------------------------------------------
-- Queue and throughput

CREATE VIEW bitfleet.queue_summary AS
SELECT count(*) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now())          AS due,
       count(*) FILTER (WHERE j.state = 'queued' AND j.run_after <= now())                       AS queued_due,
       count(*) FILTER (WHERE j.state = 'failed' AND j.run_after <= now())                       AS retrying_due,
       count(*) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after > now())           AS scheduled,
       count(*) FILTER (WHERE j.state = 'running')                                               AS running,
       extract(epoch FROM now() - min(j.run_after) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now()))::double precision
                                                                                                 AS oldest_due_seconds,
       extract(epoch FROM now() - min(j.created_at) FILTER (WHERE j.state IN ('queued', 'failed', 'running')))::double precision
                                                                                                 AS oldest_unfinished_age_seconds
FROM bitfleet.jobs j;
COMMENT ON VIEW bitfleet.queue_summary IS
    'One row: jobs due now (queued or retrying with run_after <= now), scheduled for later, running; '
    'oldest_due_seconds = how long the oldest due job has been waiting since it became due; '
    'oldest_unfinished_age_seconds = age of the oldest job not yet finished (since enqueue). '
    'Per-state counts are in bitfleet.queue_depth.';

CREATE VIEW bitfleet.worker_throughput AS
SELECT c.worker_id,
       c.node_class,
       count(*)                                           AS jobs_last_hour,
       sum(c.samples)                                     AS samples_last_hour,
       sum(c.cpu_seconds)                                 AS cpu_seconds_last_hour,
       count(*)::double precision / 3600                  AS jobs_per_second,
       sum(c.samples)::double precision / 3600            AS samples_per_second,
       sum(c.samples) / nullif(sum(c.cpu_seconds), 0)     AS samples_per_cpu_second,
       sum(c.euros)                                       AS euros_last_hour,
       max(c.created_at)                                  AS last_job_at
FROM bitfleet.job_costs c
WHERE c.created_at > now() - interval '1 hour'
GROUP BY c.worker_id, c.node_class;
COMMENT ON VIEW bitfleet.worker_throughput IS
    'Per worker, over the last hour of job_costs: jobs and samples, jobs_per_second and samples_per_second '
    '(count / 3600, the whole hour, idle time included), samples_per_cpu_second (samples / metered CPU seconds) '
    'and euros.';

COMMENT ON VIEW bitfleet.cost_by_model_day IS
    'Metered euros per UTC day, model and version: jobs, samples, CPU seconds, euros, euros per 1 000 inferences '
    'and samples per CPU second (from bitfleet.job_costs).';
COMMENT ON VIEW bitfleet.queue_depth IS
    'Jobs per state (every state, zero included) and, per waiting state, seconds since the oldest due job became due.';

-- ---------------------------------------------------------------------------------------------------------------
GRANT SELECT, INSERT ON bitfleet.worker_usage TO bitfleet_worker;
GRANT SELECT ON bitfleet.gpu_baselines TO bitfleet_worker;
GRANT SELECT ON bitfleet.worker_usage, bitfleet.gpu_baselines,
                bitfleet.cost_by_tenant_month, bitfleet.cost_per_1000_inferences, bitfleet.cost_by_batch,
                bitfleet.fleet_utilisation_hour, bitfleet.fleet_utilisation_day, bitfleet.cost_allocation_day,
                bitfleet.job_gpu_comparison, bitfleet.savings_vs_gpu_day, bitfleet.savings_vs_gpu,
                bitfleet.queue_summary, bitfleet.worker_throughput, bitfleet.cost_by_model_day, bitfleet.queue_depth
    TO bitfleet_readonly;
GRANT SELECT ON bitfleet.cost_by_batch, bitfleet.queue_summary TO bitfleet_enqueue;
