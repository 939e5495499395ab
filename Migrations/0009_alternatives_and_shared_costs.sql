-- BitFleet schema, version 9: measured alternatives next to the stated GPU baseline, shared costs allocated as
-- OpenCost does, and where the CPU money goes per phase.
--
--   bitfleet.alternatives            (was gpu_baselines) every alternative the binary model is compared with:
--                                    kind 'gpu' or 'cpu-peer' (ONNX Runtime, OpenVINO on this server's CPU),
--                                    source 'measured' or 'stated', runtime, device (CPU model or GPU), batch,
--                                    cores, price, measured_at; euros_per_million is computed from price and
--                                    throughput. bitfleet.gpu_baselines stays as a view of its GPU rows (same
--                                    columns, insertable by the owner), so every old query and view keeps working.
--   bitfleet.record_alternative(…)   the one way a benchmark writes a row: source = measured, measured_at = now();
--                                    EXECUTE for bitfleet_bench only, which cannot touch stated rows or prices.
--   bitfleet.savings_vs_alternatives the binary model's metered cost per million inferences next to each alternative
--   bitfleet.shared_costs            what the operator states: the database server, a node class's fixed monthly
--                                    price (per hour and/or per month, a share of it); only the owner edits it
--   bitfleet.shared_cost_day         each shared cost's euros per UTC day
--   bitfleet.cost_allocation_model_tenant_day
--                                    per day: each model × tenant's direct CPU euros plus its share of the shared
--                                    costs (in proportion to its jobs), and the __overhead__, __idle__ and
--                                    __shared_unallocated__ lines; the lines of a day add up to what the fleet's
--                                    nodes and shared costs cost that day
--   bitfleet.fleet_cost_day          that sum, per day, next to the node and shared costs it must equal
--   bitfleet.cost_allocation_day     gains the __overhead__ and __shared__ lines (same columns)
--   bitfleet.phase_cpu_day           CPU seconds and euros per phase (fetch, decode, infer, encode, write, other,
--                                    and 'not split' for rows written before the phase columns of 0008)

-- ---------------------------------------------------------------------------------------------------------------
-- Alternatives

ALTER TABLE bitfleet.gpu_baselines RENAME TO alternatives;
ALTER TABLE bitfleet.alternatives RENAME COLUMN gpu TO label;
ALTER TABLE bitfleet.alternatives DROP CONSTRAINT gpu_baselines_model_gpu_key;
ALTER TABLE bitfleet.alternatives
    ADD COLUMN kind        text        NOT NULL DEFAULT 'gpu' CHECK (kind IN ('gpu', 'cpu-peer')),
    ADD COLUMN twin        text        CHECK (twin IS NULL OR length(twin) > 0),
    ADD COLUMN runtime     text        CHECK (runtime IS NULL OR length(runtime) > 0),
    ADD COLUMN device      text        CHECK (device IS NULL OR length(device) > 0),
    ADD COLUMN batch       integer     CHECK (batch IS NULL OR batch > 0),
    ADD COLUMN cores       double precision CHECK (cores IS NULL OR cores > 0),
    ADD COLUMN measured_at timestamptz,
    ADD COLUMN tool        text,
    ADD COLUMN recorded_by text        NOT NULL DEFAULT session_user;
ALTER TABLE bitfleet.alternatives
    ADD COLUMN euros_per_core_hour     double precision GENERATED ALWAYS AS (euros_per_hour / cores) STORED,
    ADD COLUMN samples_per_core_second double precision GENERATED ALWAYS AS (samples_per_second / cores) STORED,
    ADD COLUMN euros_per_million       double precision
        GENERATED ALWAYS AS (euros_per_hour / 3600 / samples_per_second * 1000000) STORED,
    ADD CONSTRAINT alternatives_cpu_peer_complete
        CHECK (kind <> 'cpu-peer' OR (cores IS NOT NULL AND runtime IS NOT NULL AND device IS NOT NULL AND batch IS NOT NULL)),
    ADD CONSTRAINT alternatives_measured_cpu_peer_dated
        CHECK (kind <> 'cpu-peer' OR source <> 'measured' OR measured_at IS NOT NULL),
    ADD CONSTRAINT alternatives_identity UNIQUE NULLS NOT DISTINCT (model, kind, label, runtime, batch);

COMMENT ON TABLE bitfleet.alternatives IS
    'What the same work would cost elsewhere, per model (NULL model: every model). kind = gpu (an instance: '
    'euros_per_hour per instance-hour, samples_per_second of the instance) or cpu-peer (a CPU runtime such as ONNX '
    'Runtime int8 or OpenVINO running the model''s float twin on `cores` cores of `device`: euros_per_hour = cores × '
    'euros_per_core_hour). source = measured (a benchmark run, measured_at says when; written through '
    'bitfleet.record_alternative) or stated (a document or an assumption; note says which). euros_per_million = '
    'euros_per_hour / 3600 / samples_per_second × 1e6. Only the schema owner edits rows directly.';
COMMENT ON COLUMN bitfleet.alternatives.label IS 'What the row is, for people: the GPU instance or the CPU runtime';
COMMENT ON COLUMN bitfleet.alternatives.twin IS 'The model that ran (e.g. fashion-float, the float twin of fashion)';
COMMENT ON COLUMN bitfleet.alternatives.runtime IS 'Runtime, version and precision, e.g. onnxruntime 1.20.1 int8 (QInt8 weights)';
COMMENT ON COLUMN bitfleet.alternatives.device IS 'The CPU model (kind cpu-peer) or GPU name it ran on';
COMMENT ON COLUMN bitfleet.alternatives.cores IS 'Cores the throughput was measured on (kind cpu-peer); NULL for a GPU instance';
COMMENT ON COLUMN bitfleet.alternatives.recorded_by IS 'The login role that wrote the row';

-- The old name, for every query, view and script written against version 3: the GPU rows, insertable by the owner
-- (a row inserted here is kind gpu).
CREATE VIEW bitfleet.gpu_baselines AS
SELECT id, model, label AS gpu, euros_per_hour, samples_per_second, source, note, created_at
FROM bitfleet.alternatives
WHERE kind = 'gpu'
WITH CASCADED CHECK OPTION;
COMMENT ON VIEW bitfleet.gpu_baselines IS
    'The GPU rows of bitfleet.alternatives under their version-3 name and columns (gpu = label); the owner may '
    'insert and update through it.';

-- The GPU views compare with GPU rows only (CPU peers have their own comparison below).
CREATE OR REPLACE VIEW bitfleet.job_gpu_comparison AS
SELECT c.job_id,
       c.batch_id,
       c.model,
       c.tenant,
       c.created_at,
       c.samples,
       c.cpu_seconds,
       c.euros                                                              AS cpu_euros,
       g.id                                                                 AS baseline_id,
       g.label                                                              AS gpu,
       CASE WHEN g.model IS NULL THEN 'default' ELSE 'model' END            AS baseline_scope,
       g.source                                                             AS baseline_source,
       g.euros_per_hour                                                     AS gpu_euros_per_hour,
       g.samples_per_second                                                 AS gpu_samples_per_second,
       c.samples / g.samples_per_second                                     AS gpu_seconds,
       c.samples / g.samples_per_second / 3600 * g.euros_per_hour           AS gpu_euros,
       c.samples / g.samples_per_second / 3600 * g.euros_per_hour - c.euros AS saving_euros
FROM bitfleet.job_costs c
JOIN bitfleet.alternatives g ON g.kind = 'gpu' AND (g.model = c.model OR g.model IS NULL);

-- A benchmark's way in: one measured row, upserted on (model, kind, label, runtime, batch). price_per_hour is euros
-- per core-hour for kind cpu-peer (euros_per_hour = cores × price), per instance-hour for kind gpu. A stated row is
-- never overwritten (the caller gets an error), and nothing else can be changed through it.
CREATE FUNCTION bitfleet.record_alternative(
    kind               text,
    model              text,
    twin               text,
    label              text,
    runtime            text,
    device             text,
    batch              integer,
    cores              double precision,
    samples_per_second double precision,
    price_per_hour     double precision,
    tool               text,
    note               text
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    IF $1 IS NULL OR $1 NOT IN ('cpu-peer', 'gpu') THEN
        RAISE EXCEPTION 'kind must be cpu-peer or gpu, not %', $1 USING ERRCODE = '22023';
    END IF;
    IF $1 = 'cpu-peer' AND $8 IS NULL THEN
        RAISE EXCEPTION 'a cpu-peer row needs the cores it was measured on' USING ERRCODE = '22023';
    END IF;
    IF $1 = 'gpu' AND $8 IS NOT NULL THEN
        RAISE EXCEPTION 'a gpu row is priced per instance-hour: pass cores => NULL' USING ERRCODE = '22023';
    END IF;
    INSERT INTO bitfleet.alternatives AS a (kind, model, twin, label, runtime, device, batch, cores,
                                            samples_per_second, euros_per_hour, source, note, measured_at, tool)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $1 = 'cpu-peer' THEN $10 * $8 ELSE $10 END,
            'measured', coalesce($12, 'recorded by ' || coalesce($11, 'a benchmark')), now(), $11)
    ON CONFLICT ON CONSTRAINT alternatives_identity DO UPDATE
        SET twin = excluded.twin, device = excluded.device, cores = excluded.cores,
            samples_per_second = excluded.samples_per_second, euros_per_hour = excluded.euros_per_hour,
            note = excluded.note, measured_at = excluded.measured_at, tool = excluded.tool,
            recorded_by = excluded.recorded_by, created_at = now()
        WHERE a.source = 'measured'
    RETURNING a.id INTO new_id;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'a stated row for (%, %, %, %, %) exists; a benchmark does not overwrite it', $2, $1, $4, $5, $7
            USING ERRCODE = '42501';
    END IF;
    RETURN new_id;
END;
$$;
COMMENT ON FUNCTION bitfleet.record_alternative(text, text, text, text, text, text, integer, double precision,
                                                double precision, double precision, text, text) IS
    'Record one measured alternative (kind cpu-peer or gpu), replacing the previous measurement of the same model, '
    'kind, label, runtime and batch. price_per_hour: euros per core-hour (cpu-peer) or per instance-hour (gpu). '
    'Granted to bitfleet_bench; never overwrites a stated row.';

-- The benchmark role: may record measured alternatives, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bitfleet_bench') THEN
        BEGIN
            CREATE ROLE bitfleet_bench NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA bitfleet TO bitfleet_bench;

CREATE VIEW bitfleet.savings_vs_alternatives AS
WITH metered AS (
    SELECT c.model, count(*) AS jobs, sum(c.samples) AS samples, sum(c.cpu_seconds) AS cpu_seconds,
           sum(c.euros) AS euros, min(c.price_per_core_hour) AS min_price_per_core_hour,
           max(c.price_per_core_hour) AS max_price_per_core_hour
    FROM bitfleet.job_costs c
    GROUP BY c.model
)
SELECT m.model,
       a.id                                                              AS alternative_id,
       a.kind,
       a.source                                                          AS alternative_source,
       'measured'::text                                                  AS binary_source,
       a.label,
       a.runtime,
       a.device,
       a.batch,
       a.twin,
       CASE WHEN a.model IS NULL THEN 'default' ELSE 'model' END         AS scope,
       a.measured_at,
       a.cores,
       a.euros_per_hour,
       a.euros_per_core_hour,
       a.samples_per_second                                              AS alternative_samples_per_second,
       a.samples_per_core_second                                         AS alternative_samples_per_core_second,
       m.jobs,
       m.samples,
       m.cpu_seconds,
       m.samples / nullif(m.cpu_seconds, 0)                              AS binary_samples_per_cpu_second,
       m.min_price_per_core_hour                                         AS binary_min_euros_per_core_hour,
       m.max_price_per_core_hour                                         AS binary_max_euros_per_core_hour,
       m.euros                                                           AS binary_euros,
       m.euros / nullif(m.samples, 0) * 1000000                          AS binary_euros_per_million,
       a.euros_per_million                                               AS alternative_euros_per_million,
       m.samples * a.euros_per_million / 1000000                         AS alternative_euros,
       m.samples * a.euros_per_million / 1000000 - m.euros               AS saving_euros,
       100 * (m.samples * a.euros_per_million / 1000000 - m.euros)
           / nullif(m.samples * a.euros_per_million / 1000000, 0)        AS saving_percent
FROM metered m
JOIN bitfleet.alternatives a ON a.model = m.model OR a.model IS NULL;
COMMENT ON VIEW bitfleet.savings_vs_alternatives IS
    'All time, per model and alternative (GPU or CPU peer, measured or stated): the binary model''s metered cost '
    'per million inferences (binary_euros / samples × 1e6, binary_source = measured) next to the alternative''s '
    '(euros_per_hour / 3600 / samples_per_second × 1e6, labelled by alternative_source), what the same samples '
    'would have cost there, saving_euros = alternative_euros - binary_euros and saving_percent. One row per '
    'alternative: figures are never blended.';

-- ---------------------------------------------------------------------------------------------------------------
-- Shared costs (OpenCost's shared resources): stated by the operator, allocated to models and tenants in proportion
-- to their jobs. A row with node_class NULL (the database server) is shared by every job; a row with a node class
-- (its fixed monthly price, a share of a rack) only by the jobs that ran on that class.

CREATE TABLE bitfleet.shared_costs (
    id               bigint           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text             NOT NULL CHECK (length(name) > 0),
    node_class       text             CHECK (node_class IS NULL OR length(node_class) > 0),
    euros_per_hour   double precision NOT NULL DEFAULT 0 CHECK (euros_per_hour >= 0),
    euros_per_month  double precision NOT NULL DEFAULT 0 CHECK (euros_per_month >= 0),
    share            double precision NOT NULL DEFAULT 1 CHECK (share > 0 AND share <= 1),
    valid_from       timestamptz      NOT NULL DEFAULT now(),
    valid_until      timestamptz,
    note             text             NOT NULL CHECK (length(note) > 0),
    created_at       timestamptz      NOT NULL DEFAULT now(),
    CHECK (euros_per_hour > 0 OR euros_per_month > 0),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);
COMMENT ON TABLE bitfleet.shared_costs IS
    'Costs the fleet shares, stated by the operator: the database server (node_class NULL: shared by every job), '
    'or a fixed price of a node class (node_class set: shared by the jobs that ran on it). Cost over a period = '
    'share × (euros_per_hour × hours + euros_per_month × the fraction of its calendar month (UTC)), counted from '
    'valid_from to valid_until (NULL: until now). Only the schema owner edits it.';

CREATE VIEW bitfleet.shared_cost_day AS
SELECT d.day_start::date                                                     AS day,
       s.id                                                                  AS shared_cost_id,
       s.name,
       s.node_class,
       extract(epoch FROM w.until_at - w.from_at)::double precision / 3600   AS hours,
       s.share * (s.euros_per_hour * extract(epoch FROM w.until_at - w.from_at)::double precision / 3600
                  + s.euros_per_month * extract(epoch FROM w.until_at - w.from_at)::double precision
                    / extract(epoch FROM (date_trunc('month', d.day_start) + interval '1 month')
                                         - date_trunc('month', d.day_start))::double precision)
                                                                             AS euros
FROM bitfleet.shared_costs s
CROSS JOIN LATERAL generate_series(date_trunc('day', s.valid_from AT TIME ZONE 'UTC'),
                                   date_trunc('day', least(coalesce(s.valid_until, 'infinity'), now()) AT TIME ZONE 'UTC'),
                                   interval '1 day') AS d(day_start)
CROSS JOIN LATERAL (
    SELECT greatest(s.valid_from, d.day_start AT TIME ZONE 'UTC')                                          AS from_at,
           least(coalesce(s.valid_until, 'infinity'), now(), (d.day_start + interval '1 day') AT TIME ZONE 'UTC') AS until_at
) w
WHERE w.until_at > w.from_at;
COMMENT ON VIEW bitfleet.shared_cost_day IS
    'Each shared cost''s euros per UTC day: share × (euros_per_hour × hours + euros_per_month × seconds / seconds '
    'of that calendar month), over the part of the day in [valid_from, valid_until) and not after now.';

CREATE VIEW bitfleet.cost_allocation_model_tenant_day AS
WITH jobs AS (
    SELECT date_trunc('day', c.created_at AT TIME ZONE 'UTC')::date AS day, c.model,
           coalesce(c.tenant, '__unallocated__') AS tenant, c.node_class,
           count(*) AS jobs, sum(c.samples) AS samples, sum(c.cpu_seconds) AS core_seconds,
           sum(c.cpu_euros) AS cpu_euros
    FROM bitfleet.job_costs c
    GROUP BY 1, 2, 3, 4
), day_jobs AS (
    SELECT day, sum(jobs) AS jobs, sum(core_seconds) AS core_seconds, sum(cpu_euros) AS cpu_euros FROM jobs GROUP BY day
), class_jobs AS (
    SELECT day, node_class, sum(jobs) AS jobs FROM jobs GROUP BY day, node_class
), shared AS (
    SELECT day, node_class, sum(euros) AS euros FROM bitfleet.shared_cost_day GROUP BY day, node_class
), usage AS (
    SELECT date_trunc('day', u.period_start AT TIME ZONE 'UTC')::date AS day,
           sum(u.busy_core_seconds) AS busy_core_seconds, sum(u.idle_core_seconds) AS idle_core_seconds,
           sum(u.busy_core_seconds / 3600 * u.price_per_core_hour) AS busy_euros,
           sum(u.idle_core_seconds / 3600 * u.price_per_core_hour) AS idle_euros
    FROM bitfleet.worker_usage u
    GROUP BY 1
), models AS (
    SELECT j.day, j.model, j.tenant,
           sum(j.jobs) AS jobs, sum(j.samples) AS samples, sum(j.core_seconds) AS core_seconds,
           sum(j.cpu_euros) AS direct_euros,
           sum(j.jobs * (coalesce(fleet.euros, 0) / dj.jobs + coalesce(cls.euros, 0) / cj.jobs)) AS shared_euros
    FROM jobs j
    JOIN day_jobs dj ON dj.day = j.day
    JOIN class_jobs cj ON cj.day = j.day AND cj.node_class = j.node_class
    LEFT JOIN shared fleet ON fleet.day = j.day AND fleet.node_class IS NULL
    LEFT JOIN shared cls ON cls.day = j.day AND cls.node_class = j.node_class
    GROUP BY j.day, j.model, j.tenant
)
SELECT day, model AS allocation, tenant, 'model'::text AS kind, jobs, samples, core_seconds, direct_euros,
       shared_euros, direct_euros + shared_euros AS euros
FROM models
UNION ALL
SELECT u.day, '__overhead__', NULL, 'overhead', 0, 0, u.busy_core_seconds - coalesce(dj.core_seconds, 0),
       u.busy_euros - coalesce(dj.cpu_euros, 0), 0, u.busy_euros - coalesce(dj.cpu_euros, 0)
FROM usage u LEFT JOIN day_jobs dj ON dj.day = u.day
UNION ALL
SELECT u.day, '__idle__', NULL, 'idle', 0, 0, u.idle_core_seconds, u.idle_euros, 0, u.idle_euros
FROM usage u
UNION ALL
SELECT s.day, '__shared_unallocated__', NULL, 'shared', 0, 0, 0, 0, sum(s.euros), sum(s.euros)
FROM shared s
WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.day = s.day AND (s.node_class IS NULL OR j.node_class = s.node_class))
GROUP BY s.day;
COMMENT ON VIEW bitfleet.cost_allocation_model_tenant_day IS
    'Per UTC day, OpenCost style: kind model = one row per model and tenant (__unallocated__ when none) with '
    'direct_euros (its jobs'' CPU seconds × price) and shared_euros (each shared cost of the day split in proportion '
    'to jobs: rows without node class over all jobs of the day, node-class rows over the jobs on that class); '
    '__overhead__ (kind overhead: busy worker core-seconds not metered to any job: claiming, heartbeats, writes '
    'outside job threads); __idle__ (kind idle); __shared_unallocated__ (kind shared: shared costs of a day or node '
    'class without jobs). The euros of a day add up to the fleet''s node cost (worker heartbeats: cores × time × '
    'price) plus the shared costs (bitfleet.fleet_cost_day). Memory euros (job_costs.memory_euros) are priced '
    'separately and are not in it.';

CREATE VIEW bitfleet.fleet_cost_day AS
WITH days AS (
    SELECT day FROM bitfleet.fleet_utilisation_day
    UNION SELECT day FROM bitfleet.shared_cost_day
    UNION SELECT date_trunc('day', created_at AT TIME ZONE 'UTC')::date FROM bitfleet.job_costs
), shared AS (
    SELECT day, sum(euros) AS euros FROM bitfleet.shared_cost_day GROUP BY day
), lines AS (
    SELECT day,
           sum(direct_euros) FILTER (WHERE kind = 'model') AS direct_euros,
           sum(shared_euros) FILTER (WHERE kind = 'model') AS shared_allocated_euros,
           sum(euros) FILTER (WHERE kind = 'overhead')     AS overhead_euros,
           sum(euros) FILTER (WHERE kind = 'idle')         AS idle_euros,
           sum(euros) FILTER (WHERE kind = 'shared')       AS shared_unallocated_euros,
           sum(euros)                                      AS allocation_euros
    FROM bitfleet.cost_allocation_model_tenant_day
    GROUP BY day
)
SELECT d.day,
       coalesce(u.allocated_euros, 0)                                  AS node_euros,
       coalesce(s.euros, 0)                                            AS shared_euros,
       coalesce(u.allocated_euros, 0) + coalesce(s.euros, 0)           AS total_euros,
       coalesce(l.direct_euros, 0)                                     AS direct_euros,
       coalesce(l.shared_allocated_euros, 0)                           AS shared_allocated_euros,
       coalesce(l.overhead_euros, 0)                                   AS overhead_euros,
       coalesce(l.idle_euros, 0)                                       AS idle_euros,
       coalesce(l.shared_unallocated_euros, 0)                         AS shared_unallocated_euros,
       coalesce(l.allocation_euros, 0)                                 AS allocation_euros
FROM days d
LEFT JOIN bitfleet.fleet_utilisation_day u ON u.day = d.day
LEFT JOIN shared s ON s.day = d.day
LEFT JOIN lines l ON l.day = d.day;
COMMENT ON VIEW bitfleet.fleet_cost_day IS
    'Per UTC day: what the fleet cost (node_euros = worker cores × time × price, shared_euros = the shared costs, '
    'total_euros = both) and how bitfleet.cost_allocation_model_tenant_day splits it: direct + shared_allocated + '
    'overhead + idle + shared_unallocated = allocation_euros, which equals total_euros on every day with worker '
    'heartbeats.';

-- The daily allocation gains the fleet's own overhead and the shared costs as lines next to __idle__.
CREATE OR REPLACE VIEW bitfleet.cost_allocation_day AS
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
GROUP BY 1
UNION ALL
SELECT day, '__overhead__', 'overhead', core_seconds, euros
FROM bitfleet.cost_allocation_model_tenant_day WHERE kind = 'overhead'
UNION ALL
SELECT day, '__shared__', 'shared', 0, sum(euros)
FROM bitfleet.shared_cost_day GROUP BY day;
COMMENT ON VIEW bitfleet.cost_allocation_day IS
    'Euros per UTC day allocated as OpenCost does: one row per model (kind = model: metered job CPU seconds × '
    'price), __idle__ (kind = idle: idle core-seconds of worker heartbeats × price), __overhead__ (kind = overhead: '
    'busy worker core-seconds not metered to a job) and __shared__ (kind = shared: bitfleet.shared_costs that day, '
    'split across models and tenants in bitfleet.cost_allocation_model_tenant_day).';

-- ---------------------------------------------------------------------------------------------------------------
-- Where the CPU money goes: per-phase CPU seconds (0008's columns; NULL on rows written before them).

CREATE VIEW bitfleet.phase_cpu_day AS
SELECT date_trunc('day', c.created_at AT TIME ZONE 'UTC')::date AS day,
       c.model,
       p.ord                                                   AS phase_order,
       p.phase,
       count(*)                                                AS jobs,
       sum(p.seconds)                                          AS cpu_seconds,
       sum(p.seconds / 3600 * c.price_per_core_hour)           AS euros
FROM bitfleet.job_costs c
CROSS JOIN LATERAL (
    SELECT num_nonnulls(c.fetch_cpu_seconds, c.decode_cpu_seconds, c.infer_cpu_seconds, c.encode_cpu_seconds,
                        c.write_cpu_seconds) > 0 AS split,
           coalesce(c.fetch_cpu_seconds, 0) + coalesce(c.decode_cpu_seconds, 0) + coalesce(c.infer_cpu_seconds, 0)
           + coalesce(c.encode_cpu_seconds, 0) + coalesce(c.write_cpu_seconds, 0) AS phases
) s
CROSS JOIN LATERAL (VALUES
    (1, 'fetch',     c.fetch_cpu_seconds),
    (2, 'decode',    c.decode_cpu_seconds),
    (3, 'infer',     c.infer_cpu_seconds),
    (4, 'encode',    c.encode_cpu_seconds),
    (5, 'write',     c.write_cpu_seconds),
    (6, 'other',     CASE WHEN s.split THEN c.cpu_seconds - s.phases END),
    (7, 'not split', CASE WHEN NOT s.split THEN c.cpu_seconds END)
) AS p(ord, phase, seconds)
WHERE p.seconds IS NOT NULL
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW bitfleet.phase_cpu_day IS
    'CPU seconds and euros (× the job''s price per core-hour) per UTC day, model and phase: fetch, decode, infer, '
    'encode, write (job_costs.*_cpu_seconds), other = cpu_seconds minus the phases of the same rows (negative when a '
    'phase was metered outside cpu_seconds), and not split = cpu_seconds of rows without any phase figure (written '
    'before the phase columns). jobs counts the rows with a figure for that phase. Per day and model, the phases add '
    'up to the metered cpu_seconds.';

-- ---------------------------------------------------------------------------------------------------------------
-- Rights: the owner edits alternatives and shared costs; bitfleet_bench records measured alternatives through the
-- function; dashboards read. Workers read neither (they never needed the baselines).

REVOKE ALL ON bitfleet.alternatives, bitfleet.gpu_baselines, bitfleet.shared_costs FROM PUBLIC;
REVOKE ALL ON bitfleet.alternatives, bitfleet.gpu_baselines FROM bitfleet_worker;
REVOKE EXECUTE ON FUNCTION bitfleet.record_alternative(text, text, text, text, text, text, integer, double precision,
                                                       double precision, double precision, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bitfleet.record_alternative(text, text, text, text, text, text, integer, double precision,
                                                      double precision, double precision, text, text) TO bitfleet_bench;
GRANT SELECT ON bitfleet.alternatives, bitfleet.gpu_baselines, bitfleet.shared_costs, bitfleet.shared_cost_day,
                bitfleet.savings_vs_alternatives, bitfleet.cost_allocation_model_tenant_day, bitfleet.fleet_cost_day,
                bitfleet.phase_cpu_day
    TO bitfleet_readonly;
