ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS fetch_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS decode_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS infer_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS encode_cpu_seconds double precision;
ALTER TABLE bitfleet.job_costs ADD COLUMN IF NOT EXISTS write_cpu_seconds double precision;
