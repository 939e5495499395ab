-- BitFleet schema, version 1: model registry, batches, the job queue, results, per-job cost rows, workers.
-- Applied by `bitfleet migrate` (in a transaction, under an advisory lock, recorded in bitfleet.schema_migrations);
-- also usable with `psql -v ON_ERROR_STOP=1 -1 -f Migrations/0001_init.sql`.

CREATE SCHEMA IF NOT EXISTS bitfleet;

-- Models: a name has versions; a job naming no version runs the newest registered one.
CREATE TABLE bitfleet.models (
    name            text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    version         text        NOT NULL CHECK (length(version) BETWEEN 1 AND 100),
    uri             text        NOT NULL,   -- model directory: file:///… or a path (relative to the worker's --model-dir)
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),   -- of model.safetensors
    input_features  integer     CHECK (input_features > 0),
    classes         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TYPE bitfleet.job_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled');
COMMENT ON TYPE bitfleet.job_state IS
    'queued: waiting; running: leased by a worker; succeeded: result written; failed: an attempt failed and the job '
    'runs again at run_after; dead: will not run again (out of attempts, or a permanent error); cancelled.';

CREATE TABLE bitfleet.batches (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model           text        NOT NULL,
    model_version   text,
    tenant          text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    cancelled_at    timestamptz,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bitfleet.jobs (
    id               bigint              GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id         bigint              REFERENCES bitfleet.batches (id) ON DELETE CASCADE,
    custom_id        text,
    model            text                NOT NULL,
    model_version    text,
    input_url        text                NOT NULL CHECK (length(input_url) BETWEEN 1 AND 8192),
    input_format     text,               -- npy | json | ndjson | raw:<dtype>:<shape>; NULL = detect
    top_k            integer             NOT NULL DEFAULT 3 CHECK (top_k BETWEEN 1 AND 1000),
    tenant           text,
    priority         integer             NOT NULL DEFAULT 0,   -- higher runs first
    state            bitfleet.job_state  NOT NULL DEFAULT 'queued',
    attempt          integer             NOT NULL DEFAULT 0,   -- attempts started so far; fences every write
    max_attempts     integer             NOT NULL DEFAULT 5 CHECK (max_attempts BETWEEN 1 AND 100),
    run_after        timestamptz         NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    errors           jsonb               NOT NULL DEFAULT '[]',   -- one object per failed attempt
    idempotency_key  text                UNIQUE,
    created_at       timestamptz         NOT NULL DEFAULT now(),
    started_at       timestamptz,        -- first claim
    finished_at      timestamptz,        -- reached succeeded, dead or cancelled
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Claims read this partial index only, so finished rows (millions of them) do not slow the queue down.
CREATE INDEX jobs_claimable ON bitfleet.jobs (priority DESC, run_after, id) WHERE state IN ('queued', 'failed');
CREATE INDEX jobs_leases ON bitfleet.jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_batch ON bitfleet.jobs (batch_id, state) WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX jobs_batch_custom_id ON bitfleet.jobs (batch_id, custom_id) WHERE batch_id IS NOT NULL AND custom_id IS NOT NULL;

-- Exactly one result per job: the primary key makes a second write impossible, the lease fence makes it unattempted.
CREATE TABLE bitfleet.results (
    job_id          bigint      PRIMARY KEY REFERENCES bitfleet.jobs (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,
    model           text        NOT NULL,
    model_version   text        NOT NULL,
    samples         integer     NOT NULL,
    output          jsonb       NOT NULL,   -- {"predictions":[{"sample":0,"custom_id":…,"top":[{"class":…,"label":…,"p":…}]}]}
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One cost row per succeeded job, written in the same transaction as its result.
CREATE TABLE bitfleet.job_costs (
    job_id               bigint           PRIMARY KEY REFERENCES bitfleet.jobs (id) ON DELETE CASCADE,
    batch_id             bigint,
    attempt              integer          NOT NULL,
    model                text             NOT NULL,
    model_version        text             NOT NULL,
    tenant               text,
    worker_id            text             NOT NULL,
    node_class           text             NOT NULL,
    samples              integer          NOT NULL,
    queue_wait_seconds   double precision NOT NULL,
    fetch_seconds        double precision NOT NULL,
    decode_seconds       double precision NOT NULL,
    infer_seconds        double precision NOT NULL,
    write_seconds        double precision,   -- filled right after the commit it measures
    cpu_seconds          double precision NOT NULL,   -- thread CPU time of the work on this job (not wall × cores)
    bytes_fetched        bigint           NOT NULL,
    binary_ops           bigint           NOT NULL,   -- binary multiply-accumulates executed
    price_per_core_hour  double precision NOT NULL,   -- euros, as configured on the worker
    euros                double precision NOT NULL,   -- cpu_seconds / 3600 × price_per_core_hour
    created_at           timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX job_costs_day ON bitfleet.job_costs (created_at);

CREATE TABLE bitfleet.workers (
    id                   text             PRIMARY KEY,
    hostname             text             NOT NULL,
    pid                  integer          NOT NULL,
    concurrency          integer          NOT NULL,
    node_class           text             NOT NULL,
    price_per_core_hour  double precision NOT NULL,
    started_at           timestamptz      NOT NULL DEFAULT now(),
    heartbeat_at         timestamptz      NOT NULL DEFAULT now(),
    stopped_at           timestamptz,
    jobs_succeeded       bigint           NOT NULL DEFAULT 0,
    jobs_failed          bigint           NOT NULL DEFAULT 0
);

-- Wake sleeping workers once per inserting statement (a batch of 10 000 jobs is one notification).
CREATE FUNCTION bitfleet.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bitfleet_jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify AFTER INSERT ON bitfleet.jobs FOR EACH STATEMENT EXECUTE FUNCTION bitfleet.notify_jobs();

-- Enqueue one job; returns its id. With an idempotency key, enqueuing twice returns the first job's id.
CREATE FUNCTION bitfleet.enqueue(
    model           text,
    input_url       text,
    model_version   text        DEFAULT NULL,
    input_format    text        DEFAULT NULL,
    top_k           integer     DEFAULT 3,
    priority        integer     DEFAULT 0,
    run_after       timestamptz DEFAULT NULL,
    max_attempts    integer     DEFAULT 5,
    tenant          text        DEFAULT NULL,
    idempotency_key text        DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO bitfleet.jobs AS j (model, input_url, model_version, input_format, top_k, priority, run_after,
                                    max_attempts, tenant, idempotency_key)
    VALUES (enqueue.model, enqueue.input_url, enqueue.model_version, enqueue.input_format, enqueue.top_k,
            enqueue.priority, coalesce(enqueue.run_after, now()), enqueue.max_attempts, enqueue.tenant,
            enqueue.idempotency_key)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT j.id INTO new_id FROM bitfleet.jobs j WHERE j.idempotency_key = enqueue.idempotency_key;
    END IF;
    RETURN new_id;
END;
$$;

-- Create a batch of many inputs at once; custom_ids (optional) name each input for the caller. Returns the batch id.
CREATE FUNCTION bitfleet.create_batch(
    model          text,
    input_urls     text[],
    custom_ids     text[]      DEFAULT NULL,
    model_version  text        DEFAULT NULL,
    input_format   text        DEFAULT NULL,
    top_k          integer     DEFAULT 3,
    priority       integer     DEFAULT 0,
    max_attempts   integer     DEFAULT 5,
    tenant         text        DEFAULT NULL,
    expires_in     interval    DEFAULT interval '24 hours',
    metadata       jsonb       DEFAULT '{}'
) RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_batch bigint;
BEGIN
    IF coalesce(cardinality(create_batch.input_urls), 0) = 0 THEN
        RAISE EXCEPTION 'a batch needs at least one input URL' USING ERRCODE = '22023';
    END IF;
    IF create_batch.custom_ids IS NOT NULL
       AND cardinality(create_batch.custom_ids) <> cardinality(create_batch.input_urls) THEN
        RAISE EXCEPTION 'custom_ids has % entries but input_urls has %',
            cardinality(create_batch.custom_ids), cardinality(create_batch.input_urls) USING ERRCODE = '22023';
    END IF;
    INSERT INTO bitfleet.batches (model, model_version, tenant, metadata, expires_at)
    VALUES (create_batch.model, create_batch.model_version, create_batch.tenant, create_batch.metadata,
            now() + create_batch.expires_in)
    RETURNING id INTO new_batch;
    INSERT INTO bitfleet.jobs (batch_id, custom_id, model, model_version, input_url, input_format, top_k, priority,
                               max_attempts, tenant)
    SELECT new_batch, c.custom_id, create_batch.model, create_batch.model_version, c.url, create_batch.input_format,
           create_batch.top_k, create_batch.priority, create_batch.max_attempts, create_batch.tenant
    FROM unnest(create_batch.input_urls, create_batch.custom_ids) WITH ORDINALITY AS c(url, custom_id, n)
    ORDER BY c.n;
    RETURN new_batch;
END;
$$;

-- Batch progress with request counts, as the OpenAI Batch API reports them.
CREATE VIEW bitfleet.batch_progress AS
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
            WHEN count(j.id) FILTER (WHERE j.state IN ('queued', 'running', 'failed')) = 0 THEN 'completed'
            ELSE 'in_progress' END                          AS status
FROM bitfleet.batches b
LEFT JOIN bitfleet.jobs j ON j.batch_id = b.id
GROUP BY b.id;

-- Queue depth by state and the age of the oldest waiting job.
CREATE VIEW bitfleet.queue_depth AS
SELECT s.state,
       count(j.id) AS jobs,
       extract(epoch FROM now() - min(j.run_after) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now()))
           AS oldest_due_seconds
FROM unnest(enum_range(NULL::bitfleet.job_state)) AS s(state)
LEFT JOIN bitfleet.jobs j ON j.state = s.state
GROUP BY s.state
ORDER BY s.state;

-- Cost by model per day (UTC), with cost per 1 000 inferences.
CREATE VIEW bitfleet.cost_by_model_day AS
SELECT date_trunc('day', c.created_at AT TIME ZONE 'UTC')::date AS day,
       c.model,
       c.model_version,
       count(*)                                AS jobs,
       sum(c.samples)                          AS samples,
       sum(c.cpu_seconds)                      AS cpu_seconds,
       sum(c.euros)                            AS euros,
       sum(c.euros) / nullif(sum(c.samples), 0) * 1000 AS euros_per_1000_inferences,
       sum(c.samples) / nullif(sum(c.cpu_seconds), 0)  AS samples_per_cpu_second
FROM bitfleet.job_costs c
GROUP BY 1, 2, 3;
