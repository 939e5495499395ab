-- Cost rows gain the memory side of the bill (OpenCost-style: GB allocated × hours × price per GB-hour, priced per
-- node class by the worker) and the expert activations of the job (which experts its samples were routed to).
-- euros = cpu_euros + memory_euros from here on; rows written before this migration have memory_euros 0.

ALTER TABLE bitfleet.job_costs
    ADD COLUMN model_memory_bytes bigint           NOT NULL DEFAULT 0,   -- the model's weights: mapped + private
    ADD COLUMN memory_gb_seconds  double precision NOT NULL DEFAULT 0,   -- model memory (GB) × the job's wall time
    ADD COLUMN price_per_gb_hour  double precision NOT NULL DEFAULT 0,   -- euros, as configured on the worker
    ADD COLUMN expert_activations integer[],                             -- samples routed to each expert (top-k each)
    ADD COLUMN cpu_euros          double precision GENERATED ALWAYS AS (cpu_seconds / 3600 * price_per_core_hour) STORED,
    ADD COLUMN memory_euros       double precision GENERATED ALWAYS AS (memory_gb_seconds / 3600 * price_per_gb_hour) STORED;

COMMENT ON COLUMN bitfleet.job_costs.euros IS 'cpu_euros + memory_euros';
COMMENT ON COLUMN bitfleet.job_costs.cpu_euros IS 'cpu_seconds / 3600 × price_per_core_hour';
COMMENT ON COLUMN bitfleet.job_costs.memory_euros IS 'memory_gb_seconds / 3600 × price_per_gb_hour';
