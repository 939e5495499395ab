-- BitFleet schema, version 7: tenants that cannot see each other, and input URLs dashboards cannot read.
--
-- A login role can be bound to a tenant:
--     CREATE ROLE acme_app LOGIN PASSWORD '…' IN ROLE bitfleet_enqueue;
--     SELECT bitfleet.bind_tenant('acme_app', 'acme');                    -- max_priority => 0 by default
-- A bound role (the login, also after SET ROLE to a group it is in) enqueues only as its tenant, sees only its
-- tenant's jobs, batches, results and cost rows (row-level security), cancels only its tenant's batches, cannot
-- raise priority above its binding's max_priority nor date a job into the past, and has idempotency keys of its
-- own (keys are unique per tenant). Roles that are not bound keep the behaviour of versions 1-6: they see every
-- row, and may enqueue for any tenant. Roles with bitfleet_worker's or bitfleet_readonly's rights always see every
-- row (workers must; dashboards and KEDA count the whole queue, and without a row filter their queries keep using
-- the partial indexes), so bind_tenant refuses them: bind logins that are in bitfleet_enqueue only.
-- bitfleet_readonly no longer reads jobs.input_url (pre-signed URLs carry credentials in their query strings):
-- bitfleet.jobs_redacted shows every job with the URL's user-info, query string and fragment replaced by "…".
--
-- Nothing here depends on how workers write (directly, or through SECURITY DEFINER functions owned by the schema
-- owner, which bypass row-level security as the table owner does).

-- ---------------------------------------------------------------------------------------------------------------
-- Bindings

CREATE TABLE bitfleet.tenant_roles (
    role          regrole     PRIMARY KEY,   -- by OID: renaming the role keeps its binding
    tenant        text        NOT NULL CHECK (length(tenant) BETWEEN 1 AND 200),
    max_priority  integer     NOT NULL DEFAULT 0 CHECK (max_priority BETWEEN -1000 AND 1000),
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bitfleet.tenant_roles IS
    'Login roles bound to a tenant (bitfleet.bind_tenant). A bound role enqueues only as its tenant, at a priority '
    'of at most max_priority, and sees only its tenant''s jobs, batches, results and cost rows. Unbind a role '
    '(bitfleet.unbind_tenant) before dropping it.';

-- Every role may read its own binding (and nothing else): the row-level policies below call current_tenant()
-- with the rights of whoever runs the query.
ALTER TABLE bitfleet.tenant_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_binding ON bitfleet.tenant_roles FOR SELECT
    USING (role IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname IN (current_user, session_user)));
REVOKE ALL ON bitfleet.tenant_roles FROM PUBLIC;
GRANT SELECT ON bitfleet.tenant_roles TO PUBLIC;

-- The tenant of the current role, else of the session's login role (so SET ROLE to an unbound group does not
-- unbind a login); NULL when neither is bound. Inside a SECURITY DEFINER function current_user is the schema
-- owner (never bound), so there it is the login's tenant.
CREATE FUNCTION bitfleet.current_tenant() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT t.tenant FROM bitfleet.tenant_roles t JOIN pg_catalog.pg_roles r ON r.oid = t.role
         WHERE r.rolname = current_user),
        (SELECT t.tenant FROM bitfleet.tenant_roles t JOIN pg_catalog.pg_roles r ON r.oid = t.role
         WHERE r.rolname = session_user))
$$;
COMMENT ON FUNCTION bitfleet.current_tenant() IS
    'The tenant the current role (else the session''s login role) is bound to; NULL for unbound roles.';

CREATE FUNCTION bitfleet.bind_tenant(role regrole, tenant text, max_priority integer DEFAULT 0) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    fleet_group text;
BEGIN
    SELECT g.rolname INTO fleet_group FROM pg_catalog.pg_roles g
    WHERE g.rolname IN ('bitfleet_worker', 'bitfleet_readonly') AND pg_catalog.pg_has_role(bind_tenant.role, g.oid, 'MEMBER')
    ORDER BY g.rolname LIMIT 1;
    IF fleet_group IS NOT NULL THEN
        RAISE EXCEPTION 'role % is a member of %, which sees every tenant''s rows: bind a login that is in bitfleet_enqueue only',
            bind_tenant.role, fleet_group USING ERRCODE = '42501';
    END IF;
    INSERT INTO bitfleet.tenant_roles (role, tenant, max_priority)
    VALUES (bind_tenant.role, bind_tenant.tenant, bind_tenant.max_priority)
    ON CONFLICT (role) DO UPDATE SET tenant = excluded.tenant, max_priority = excluded.max_priority;
END;
$$;
CREATE FUNCTION bitfleet.unbind_tenant(role regrole) RETURNS boolean
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM bitfleet.tenant_roles t WHERE t.role = unbind_tenant.role RETURNING 1)
    SELECT count(*) > 0 FROM gone
$$;

-- The tenant and priority a job may be enqueued with by the caller (called inside the enqueue functions).
CREATE FUNCTION bitfleet.enqueue_tenant(requested text, priority integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    binding record;
BEGIN
    SELECT t.tenant, t.max_priority INTO binding
    FROM bitfleet.tenant_roles t JOIN pg_catalog.pg_roles r ON r.oid = t.role
    WHERE r.rolname = session_user;
    IF NOT FOUND THEN
        RETURN requested;   -- unbound: as before
    END IF;
    IF requested IS NOT NULL AND requested IS DISTINCT FROM binding.tenant THEN
        RAISE EXCEPTION 'role % is bound to tenant "%" and cannot enqueue for tenant "%"',
            session_user, binding.tenant, requested USING ERRCODE = '42501';
    END IF;
    IF enqueue_tenant.priority IS NULL OR enqueue_tenant.priority NOT BETWEEN -1000 AND binding.max_priority THEN
        RAISE EXCEPTION 'priority % is outside what tenant "%" may use (-1000 … %)',
            enqueue_tenant.priority, binding.tenant, binding.max_priority USING ERRCODE = '42501';
    END IF;
    RETURN binding.tenant;
END;
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Idempotency keys are unique per tenant (jobs without a tenant share one namespace), not across tenants: a key
-- another tenant used neither fails nor returns that tenant's job.

ALTER TABLE bitfleet.jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_tenant_idempotency_key ON bitfleet.jobs (tenant, idempotency_key) NULLS NOT DISTINCT
    WHERE idempotency_key IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------------
-- Enqueue paths (same signatures, grants kept): the tenant comes from the binding; bound roles are held to their
-- priority range and cannot date jobs before now (which would put them ahead of every waiting job).

CREATE OR REPLACE FUNCTION bitfleet.enqueue(
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
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id     bigint;
    job_tenant text;
    due        timestamptz := coalesce(enqueue.run_after, now());
BEGIN
    job_tenant := bitfleet.enqueue_tenant(enqueue.tenant, enqueue.priority);
    IF bitfleet.current_tenant() IS NOT NULL AND due < now() THEN
        due := now();
    END IF;
    INSERT INTO bitfleet.jobs AS j (model, input_url, model_version, input_format, top_k, priority, run_after,
                                    max_attempts, tenant, idempotency_key)
    VALUES (enqueue.model, enqueue.input_url, enqueue.model_version, enqueue.input_format, enqueue.top_k,
            enqueue.priority, due, enqueue.max_attempts, job_tenant, enqueue.idempotency_key)
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        IF job_tenant IS NULL THEN
            SELECT j.id INTO new_id FROM bitfleet.jobs j
            WHERE j.tenant IS NULL AND j.idempotency_key = enqueue.idempotency_key;
        ELSE
            SELECT j.id INTO new_id FROM bitfleet.jobs j
            WHERE j.tenant = job_tenant AND j.idempotency_key = enqueue.idempotency_key;
        END IF;
    END IF;
    RETURN new_id;
END;
$$;

CREATE OR REPLACE FUNCTION bitfleet.create_batch(
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
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_batch    bigint;
    batch_tenant text;
BEGIN
    IF coalesce(cardinality(create_batch.input_urls), 0) = 0 THEN
        RAISE EXCEPTION 'a batch needs at least one input URL' USING ERRCODE = '22023';
    END IF;
    IF create_batch.custom_ids IS NOT NULL
       AND cardinality(create_batch.custom_ids) <> cardinality(create_batch.input_urls) THEN
        RAISE EXCEPTION 'custom_ids has % entries but input_urls has %',
            cardinality(create_batch.custom_ids), cardinality(create_batch.input_urls) USING ERRCODE = '22023';
    END IF;
    batch_tenant := bitfleet.enqueue_tenant(create_batch.tenant, create_batch.priority);
    INSERT INTO bitfleet.batches (model, model_version, tenant, metadata, expires_at)
    VALUES (create_batch.model, create_batch.model_version, batch_tenant, create_batch.metadata,
            now() + create_batch.expires_in)
    RETURNING id INTO new_batch;
    INSERT INTO bitfleet.jobs (batch_id, custom_id, model, model_version, input_url, input_format, top_k, priority,
                               max_attempts, tenant)
    SELECT new_batch, c.custom_id, create_batch.model, create_batch.model_version, c.url, create_batch.input_format,
           create_batch.top_k, create_batch.priority, create_batch.max_attempts, batch_tenant
    FROM unnest(create_batch.input_urls, create_batch.custom_ids) WITH ORDINALITY AS c(url, custom_id, n)
    ORDER BY c.n;
    RETURN new_batch;
END;
$$;

-- A bound role cancels only its own tenant's batches; another tenant's batch (or one that does not exist) is
-- refused with the same message, so the refusal tells nothing about other tenants.
CREATE OR REPLACE FUNCTION bitfleet.cancel_batch(batch_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n integer;
    caller_tenant text := bitfleet.current_tenant();
BEGIN
    IF caller_tenant IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM bitfleet.batches b WHERE b.id = cancel_batch.batch_id AND b.tenant = caller_tenant) THEN
        RAISE EXCEPTION 'tenant "%" has no batch %', caller_tenant, cancel_batch.batch_id USING ERRCODE = '42501';
    END IF;
    UPDATE bitfleet.batches SET cancelled_at = coalesce(cancelled_at, now()) WHERE id = cancel_batch.batch_id;
    UPDATE bitfleet.jobs SET state = 'cancelled', finished_at = now()
    WHERE batch_id = cancel_batch.batch_id AND state IN ('queued', 'failed');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- ---------------------------------------------------------------------------------------------------------------
-- Row-level security. Unbound roles: current_tenant() is NULL and every row passes (one lookup per statement: the
-- scalar subqueries are evaluated once). Bound roles: only their tenant's rows, for reading and for writing.
-- bitfleet_worker and bitfleet_readonly: every row, with no row filter at all (a filter, even one that passes
-- every row, keeps PostgreSQL from using the partial indexes for their non-leakproof enum conditions, which
-- would turn KEDA's count into a scan of every finished job). The table owner (migrations, SECURITY DEFINER
-- functions) and superusers are not subject to these policies.

ALTER TABLE bitfleet.jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bitfleet.jobs
    USING ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()))
    WITH CHECK ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()));
CREATE POLICY fleet_roles_see_all ON bitfleet.jobs TO bitfleet_worker, bitfleet_readonly USING (true) WITH CHECK (true);

ALTER TABLE bitfleet.batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bitfleet.batches
    USING ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()))
    WITH CHECK ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()));
CREATE POLICY fleet_roles_see_all ON bitfleet.batches TO bitfleet_worker, bitfleet_readonly USING (true) WITH CHECK (true);

ALTER TABLE bitfleet.job_costs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bitfleet.job_costs
    USING ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()))
    WITH CHECK ((SELECT bitfleet.current_tenant()) IS NULL OR tenant = (SELECT bitfleet.current_tenant()));
CREATE POLICY fleet_roles_see_all ON bitfleet.job_costs TO bitfleet_worker, bitfleet_readonly USING (true) WITH CHECK (true);

-- Results carry no tenant: a result is visible with its job (the jobs policy applies inside the subquery too).
ALTER TABLE bitfleet.results ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bitfleet.results
    USING ((SELECT bitfleet.current_tenant()) IS NULL
           OR EXISTS (SELECT 1 FROM bitfleet.jobs j
                      WHERE j.id = results.job_id AND j.tenant = (SELECT bitfleet.current_tenant())))
    WITH CHECK ((SELECT bitfleet.current_tenant()) IS NULL
           OR EXISTS (SELECT 1 FROM bitfleet.jobs j
                      WHERE j.id = results.job_id AND j.tenant = (SELECT bitfleet.current_tenant())));
CREATE POLICY fleet_roles_see_all ON bitfleet.results TO bitfleet_worker, bitfleet_readonly USING (true) WITH CHECK (true);

-- Views keep their owner's rights (no row-level security inside them, so dashboards and KEDA keep the plans and
-- statistics they had), and the four a bound role can read (granted to bitfleet_enqueue) filter by the caller's
-- tenant themselves: current_tenant() is evaluated for whoever queries the view. They are security barriers, so
-- a caller's own functions in WHERE cannot see rows before the filter has removed them. Views granted only to
-- bitfleet_readonly need no filter (nobody in it can be bound, see bind_tenant).

CREATE OR REPLACE VIEW bitfleet.batch_progress WITH (security_barrier) AS
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
WHERE (SELECT bitfleet.current_tenant()) IS NULL OR b.tenant = (SELECT bitfleet.current_tenant())
GROUP BY b.id;

CREATE OR REPLACE VIEW bitfleet.queue_depth WITH (security_barrier) AS
SELECT s.state,
       count(j.id) AS jobs,
       extract(epoch FROM now() - min(j.run_after) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now()))
           AS oldest_due_seconds
FROM unnest(enum_range(NULL::bitfleet.job_state)) AS s(state)
LEFT JOIN bitfleet.jobs j ON j.state = s.state
    AND ((SELECT bitfleet.current_tenant()) IS NULL OR j.tenant = (SELECT bitfleet.current_tenant()))
GROUP BY s.state
ORDER BY s.state;

CREATE OR REPLACE VIEW bitfleet.queue_summary WITH (security_barrier) AS
SELECT count(*) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now())          AS due,
       count(*) FILTER (WHERE j.state = 'queued' AND j.run_after <= now())                       AS queued_due,
       count(*) FILTER (WHERE j.state = 'failed' AND j.run_after <= now())                       AS retrying_due,
       count(*) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after > now())           AS scheduled,
       count(*) FILTER (WHERE j.state = 'running')                                               AS running,
       extract(epoch FROM now() - min(j.run_after) FILTER (WHERE j.state IN ('queued', 'failed') AND j.run_after <= now()))::double precision
                                                                                                 AS oldest_due_seconds,
       extract(epoch FROM now() - min(j.created_at) FILTER (WHERE j.state IN ('queued', 'failed', 'running')))::double precision
                                                                                                 AS oldest_unfinished_age_seconds
FROM bitfleet.jobs j
WHERE (SELECT bitfleet.current_tenant()) IS NULL OR j.tenant = (SELECT bitfleet.current_tenant());

CREATE OR REPLACE VIEW bitfleet.cost_by_batch WITH (security_barrier) AS
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
) c ON c.batch_id = b.id
WHERE (SELECT bitfleet.current_tenant()) IS NULL OR b.tenant = (SELECT bitfleet.current_tenant());

-- KEDA's count of due and running work, with the owner's rights (partial indexes, full statistics): the chart's
-- default scaler query is SELECT bitfleet.queue_load(). Reading bitfleet.jobs directly also works, more slowly on
-- a big table, because row-level security hides column statistics from the planner.
CREATE FUNCTION bitfleet.queue_load() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM bitfleet.jobs
    WHERE state = 'running' OR (state IN ('queued', 'failed') AND run_after <= now())
$$;
REVOKE EXECUTE ON FUNCTION bitfleet.queue_load() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bitfleet.queue_load() TO bitfleet_readonly, bitfleet_worker;

-- Bound roles read their own cost rows (row-level security); not every column, so an unbound enqueue role still
-- cannot SELECT * from job_costs.
GRANT SELECT (job_id, batch_id, tenant, model, model_version, samples, cpu_seconds, euros, created_at)
    ON bitfleet.job_costs TO bitfleet_enqueue;

-- ---------------------------------------------------------------------------------------------------------------
-- bitfleet_readonly does not read input URLs: every column of jobs but input_url, and jobs_redacted.

-- "https://user:pw@host/p?X-Amz-Signature=…#f" → "https://…@host/p?…" (as the worker's logs show URLs).
CREATE FUNCTION bitfleet.redact_url(url text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN strpos(u, '?') > 0 THEN split_part(u, '?', 1) || '?…' ELSE u END
    FROM (SELECT regexp_replace(split_part(url, '#', 1), '^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', '\1…@') AS u) s
$$;

DO $$
DECLARE
    columns text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = 'bitfleet.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'input_url';
    EXECUTE 'REVOKE SELECT ON bitfleet.jobs FROM bitfleet_readonly';
    EXECUTE format('GRANT SELECT (%s) ON bitfleet.jobs TO bitfleet_readonly', columns);
    -- The view runs with its owner's rights (readonly cannot read input_url itself); should it ever be granted to
    -- a role that can be bound, it applies the tenant filter on its own.
    EXECUTE format($v$
        CREATE VIEW bitfleet.jobs_redacted AS
        SELECT %s, bitfleet.redact_url(j.input_url) AS input_url
        FROM bitfleet.jobs j
        WHERE (SELECT bitfleet.current_tenant()) IS NULL OR j.tenant = (SELECT bitfleet.current_tenant())$v$,
        (SELECT string_agg('j.' || quote_ident(a.attname), ', ' ORDER BY a.attnum)
         FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = 'bitfleet.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attname <> 'input_url'));
END;
$$;
COMMENT ON VIEW bitfleet.jobs_redacted IS
    'Every job (for a role bound to a tenant: its tenant''s) with input_url reduced to scheme, host and path: user-info, query '
    'string (pre-signed credentials) and fragment are replaced by "…". bitfleet_readonly reads jobs through it.';
GRANT SELECT ON bitfleet.jobs_redacted TO bitfleet_readonly;

-- ---------------------------------------------------------------------------------------------------------------
-- New functions are not callable by PUBLIC unless said so: current_tenant and redact_url are used inside policies
-- and views (evaluated with the caller's rights); binding is for the schema owner.
REVOKE EXECUTE ON FUNCTION bitfleet.bind_tenant(regrole, text, integer), bitfleet.unbind_tenant(regrole),
                           bitfleet.enqueue_tenant(text, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bitfleet.current_tenant(), bitfleet.redact_url(text) TO PUBLIC;
