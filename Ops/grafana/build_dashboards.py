#!/usr/bin/env python3
"""Writes the BitFleet Grafana dashboards (JSON) from the panel definitions below.

    python3 Ops/grafana/build_dashboards.py          # writes Ops/grafana/dashboards/*.json and the chart's copies
    python3 Ops/grafana/build_dashboards.py --check  # exits 1 if a written file differs from what it would write

Ops/grafana/dashboards/ is what Grafana's file provider loads (Ops/grafana/provisioning/); the Helm chart ships the
same files in Helm/bitfleet/dashboards/ (its ConfigMap for Grafana's sidecar). Every query reads the bitfleet schema
through the PostgreSQL datasource (a login role in bitfleet_readonly) and uses no Grafana macro but
$__timeFilter(column), so `Ops/grafana/check_dashboards.py` and `Ops/helm/check_chart.py` can run it as plain SQL.
Every panel returns at least one row on a database with jobs (time series fill empty hours from generate_series,
stat panels aggregate), so an empty fleet shows zeros and gaps rather than "No data" errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = [ROOT / "Ops" / "grafana" / "dashboards", ROOT / "Helm" / "bitfleet" / "dashboards"]
DS = {"type": "grafana-postgresql-datasource", "uid": "${datasource}"}

# Hourly time series cover at most this much history (the series is generated, then cut to the dashboard range).
HOURS_SERIES = ("generate_series(date_trunc('hour', now()) - interval '31 days', date_trunc('hour', now()), "
                "interval '1 hour') AS h(hour)")


def target(sql: str, fmt: str = "table") -> dict:
    return {"refId": "A", "datasource": DS, "editorMode": "code", "format": fmt, "rawQuery": True,
            "rawSql": sql.strip()}


def stat(title: str, description: str, sql: str, unit: str, decimals: int | None = None,
         field: str | None = None) -> dict:
    defaults: dict = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "targets": [target(sql)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": f"/^{field}$/" if field else "",
                                          "values": False},
                        "colorMode": "value", "graphMode": "none", "textMode": "auto"}}


def table(title: str, description: str, sql: str, units: dict[str, str] | None = None) -> dict:
    overrides = [{"matcher": {"id": "byName", "options": name},
                  "properties": [{"id": "unit", "value": unit}]} for name, unit in (units or {}).items()]
    return {"type": "table", "title": title, "description": description, "targets": [target(sql)],
            "fieldConfig": {"defaults": {}, "overrides": overrides},
            "options": {"showHeader": True, "cellHeight": "sm"}}


def timeseries(title: str, description: str, sql: str, unit: str, stacked: bool = False, bars: bool = False,
               long_format: bool = False) -> dict:
    panel = {"type": "timeseries", "title": title, "description": description, "targets": [target(sql)],
             "fieldConfig": {"defaults": {"unit": unit, "custom": {
                 "drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10, "spanNulls": False,
                 "stacking": {"mode": "normal" if stacked else "none", "group": "A"}}}, "overrides": []},
             "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                         "tooltip": {"mode": "multi", "sort": "none"}}}
    if long_format:
        panel["transformations"] = [{"id": "prepareTimeSeries", "options": {"format": "multi"}}]
    return panel


def bargauge(title: str, description: str, sql: str) -> dict:
    return {"type": "bargauge", "title": title, "description": description, "targets": [target(sql)],
            "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
            "options": {"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True}}}


def dashboard(uid: str, title: str, description: str, rows: list[list[tuple[int, int, dict]]],
              time_from: str = "now-30d") -> dict:
    panels = []
    y = 0
    for row in rows:
        x = 0
        for width, height, panel in row:
            panel = dict(panel)
            panel["id"] = len(panels) + 1
            panel["datasource"] = DS
            panel["gridPos"] = {"x": x, "y": y, "w": width, "h": height}
            panels.append(panel)
            x += width
        y += max(h for _, h, _ in row)
    links = [{"title": "BitFleet", "type": "dashboards", "tags": ["bitfleet"], "asDropdown": True,
              "includeVars": True, "keepTime": True}]
    return {"title": title, "uid": uid, "tags": ["bitfleet", uid.removeprefix("bitfleet-")], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1, "refresh": "1m",
            "time": {"from": time_from, "to": "now"}, "description": description,
            "annotations": {"list": []}, "links": links,
            "templating": {"list": [{"name": "datasource", "label": "Postgres", "type": "datasource",
                                     "query": "grafana-postgresql-datasource", "current": {}, "hide": 0,
                                     "refresh": 1, "regex": "", "options": []}]},
            "panels": panels}


EUR = "currencyEUR"

COST = dashboard("bitfleet-cost", "BitFleet — cost",
    "Metered cost of the work: euros = CPU core-seconds of each job / 3600 x the worker's price per core-hour "
    "(bitfleet.job_costs and the cost views of Migrations/0003_costs.sql). Datasource: a login role in "
    "bitfleet_readonly. Days and months are UTC.", [
    [(6, 5, stat("Cost in range (EUR)", "Euros metered for all jobs in the selected range.",
                 "SELECT coalesce(sum(euros), 0) AS euros\nFROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)",
                 EUR, 4)),
     (6, 5, stat("Samples in range", "Inferences (samples) completed in the selected range.",
                 "SELECT coalesce(sum(samples), 0) AS samples\nFROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)",
                 "short")),
     (6, 5, stat("EUR per 1 000 inferences", "Euros / samples x 1000 over the selected range (all models).",
                 "SELECT coalesce(sum(euros) * 1000.0 / nullif(sum(samples), 0), 0) AS eur_per_1000\n"
                 "FROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)", EUR, 8)),
     (6, 5, stat("Idle cost in range (EUR)",
                 "What allocated but unused cores cost (worker heartbeats, OpenCost's __idle__).",
                 "SELECT coalesce(sum(idle_euros), 0) AS idle_euros\nFROM bitfleet.fleet_utilisation_day\n"
                 "WHERE $__timeFilter(day)", EUR, 4))],
    [(6, 5, stat("Shared cost in range (EUR)",
                 "What the operator's shared costs (bitfleet.shared_costs: the database server, fixed monthly "
                 "prices of node classes) came to over the range.",
                 "SELECT coalesce(sum(euros), 0) AS shared_euros\nFROM bitfleet.shared_cost_day\n"
                 "WHERE $__timeFilter(day)", EUR, 4)),
     (6, 5, stat("Fleet total in range (EUR)",
                 "Nodes (cores x time x price of every worker) plus shared costs: what the allocation lines add up "
                 "to (bitfleet.fleet_cost_day).",
                 "SELECT coalesce(sum(total_euros), 0) AS total_euros\nFROM bitfleet.fleet_cost_day\n"
                 "WHERE $__timeFilter(day)", EUR, 4)),
     (12, 10, table("Allocation with shared costs: models and tenants, __overhead__, __idle__ (range)",
                    "bitfleet.cost_allocation_model_tenant_day summed over the range: each model and tenant's "
                    "direct CPU euros plus its share of the shared costs (split by jobs), and the fleet's "
                    "overhead, idle and unallocated shared lines. The euros add up to the fleet total.",
                    "SELECT allocation, tenant, kind, sum(jobs) AS jobs, sum(direct_euros) AS direct_euros,\n"
                    "       sum(shared_euros) AS shared_euros, sum(euros) AS euros\n"
                    "FROM bitfleet.cost_allocation_model_tenant_day\nWHERE $__timeFilter(day)\n"
                    "GROUP BY allocation, tenant, kind\nORDER BY euros DESC",
                    {"direct_euros": EUR, "shared_euros": EUR, "euros": EUR}))],
    [(16, 9, {**timeseries("Cost per day: models, __overhead__, __idle__ and __shared__ (EUR)",
                           "Daily euros per model (metered jobs), the __overhead__ line (busy worker core-seconds "
                           "no job metered), the __idle__ line (idle core-seconds x price) and __shared__ (the "
                           "shared costs), from bitfleet.cost_allocation_day.",
                           "SELECT day::timestamptz AS time, allocation, euros\nFROM bitfleet.cost_allocation_day\n"
                           "WHERE $__timeFilter(day)\nORDER BY 1, 2", EUR, stacked=True, bars=True, long_format=True)}),
     (8, 9, table("Cost per 1 000 inferences by model (range)",
                  "Per model over the selected range: samples, CPU seconds, euros and euros per 1 000 inferences.",
                  "SELECT model,\n       sum(jobs) AS jobs,\n       sum(samples) AS samples,\n"
                  "       sum(cpu_seconds) AS cpu_seconds,\n       sum(euros) AS euros,\n"
                  "       sum(euros) * 1000.0 / nullif(sum(samples), 0) AS eur_per_1000\n"
                  "FROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)\nGROUP BY model\nORDER BY euros DESC",
                  {"euros": EUR, "eur_per_1000": EUR, "cpu_seconds": "s"}))],
    [(12, 8, table("Cost by tenant per month",
                   "bitfleet.cost_by_tenant_month: jobs without a tenant are __unallocated__.",
                   "SELECT month, tenant, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences\n"
                   "FROM bitfleet.cost_by_tenant_month\nWHERE $__timeFilter(month)\nORDER BY month DESC, euros DESC",
                   {"euros": EUR, "euros_per_1000_inferences": EUR, "cpu_seconds": "s"})),
     (12, 8, table("Cost per batch (created in range, with a total)",
                   "bitfleet.cost_by_batch: metered samples and euros of each batch's succeeded items, and the "
                   "total of the batches shown.",
                   "SELECT * FROM (\n"
                   "  SELECT batch_id::text AS batch, model, tenant, status, items, succeeded, samples, euros,\n"
                   "         euros_per_1000_inferences\n"
                   "  FROM bitfleet.cost_by_batch WHERE $__timeFilter(created_at)\n"
                   "  ORDER BY batch_id DESC LIMIT 200\n) b\n"
                   "UNION ALL\n"
                   "SELECT 'total', NULL, NULL, NULL, coalesce(sum(items), 0), coalesce(sum(succeeded), 0),\n"
                   "       coalesce(sum(samples), 0), coalesce(sum(euros), 0),\n"
                   "       sum(euros) * 1000.0 / nullif(sum(samples), 0)\n"
                   "FROM bitfleet.cost_by_batch WHERE $__timeFilter(created_at)",
                   {"euros": EUR, "euros_per_1000_inferences": EUR}))],
])

SAVINGS = dashboard("bitfleet-savings", "BitFleet — savings against GPUs and CPU peers",
    "Measured CPU euros against what the same samples would cost on each alternative (bitfleet.alternatives: GPU "
    "instances and CPU peers such as ONNX Runtime int8 or OpenVINO running the float twin on this server; "
    "equivalent euros = samples / samples_per_second / 3600 x euros_per_hour). Every figure says whether it is "
    "measured or stated (assumed); the two are never added together.", [
    [(24, 9, table("Cost per million inferences: the binary model next to each alternative",
                   "bitfleet.savings_vs_alternatives (all time): the binary model's metered euros per million "
                   "inferences (measured) and each alternative's (alternative_source: measured by "
                   "Ops/bench/peers.py --record, with the date, or stated), and what the same samples would have "
                   "cost there.",
                   "SELECT model, kind, alternative_source AS figure, label, runtime, batch,\n"
                   "       measured_at, device,\n"
                   "       binary_euros_per_million, alternative_euros_per_million,\n"
                   "       binary_euros, alternative_euros, saving_percent\n"
                   "FROM bitfleet.savings_vs_alternatives\n"
                   "ORDER BY model, alternative_source, kind, alternative_euros_per_million",
                   {"binary_euros_per_million": EUR, "alternative_euros_per_million": EUR, "binary_euros": EUR,
                    "alternative_euros": EUR, "saving_percent": "percent"}))],
    [(6, 5, stat("CPU cost in range (EUR, measured)", "Metered euros of the jobs in range.",
                 "SELECT coalesce(sum(euros), 0) AS euros\nFROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)",
                 EUR, 4)),
     (6, 5, stat("GPU-equivalent, MEASURED baselines (EUR)",
                 "Same samples on GPU baselines whose source is measured; 0 when none is recorded.",
                 "SELECT coalesce(sum(gpu_euros), 0) AS gpu_euros\nFROM bitfleet.savings_vs_gpu_day\n"
                 "WHERE baseline_source = 'measured' AND $__timeFilter(day)", EUR, 4)),
     (6, 5, stat("GPU-equivalent, STATED baselines (EUR, assumed)",
                 "Same samples on GPU baselines whose throughput is stated or assumed, not measured.",
                 "SELECT coalesce(sum(gpu_euros), 0) AS gpu_euros\nFROM bitfleet.savings_vs_gpu_day\n"
                 "WHERE baseline_source = 'stated' AND $__timeFilter(day)", EUR, 4)),
     (6, 5, stat("Always-on GPU per model (EUR, stated price)",
                 "One dedicated GPU instance per model for each day it ran (24 x euros_per_hour of the stated "
                 "default baseline): the deployment the seed essay describes.",
                 "SELECT coalesce(sum(gpu_always_on_euros), 0) AS always_on_euros\nFROM bitfleet.savings_vs_gpu_day\n"
                 "WHERE baseline_source = 'stated' AND baseline_scope = 'default' AND $__timeFilter(day)", EUR, 2))],
    [(24, 9, table("Savings by model and GPU baseline (range)",
                   "One row per model and baseline: measured CPU euros, GPU-equivalent euros, saving and saving %; "
                   "baseline_source says whether the GPU figure is measured or stated.",
                   "SELECT model, gpu, baseline_source, baseline_scope, cpu_source,\n"
                   "       sum(samples) AS samples,\n       sum(cpu_euros) AS cpu_euros,\n"
                   "       sum(gpu_euros) AS gpu_euros,\n       sum(saving_euros) AS saving_euros,\n"
                   "       100 * sum(saving_euros) / nullif(sum(gpu_euros), 0) AS saving_percent,\n"
                   "       sum(gpu_always_on_euros) AS gpu_always_on_euros\n"
                   "FROM bitfleet.savings_vs_gpu_day\nWHERE $__timeFilter(day)\n"
                   "GROUP BY model, baseline_id, gpu, baseline_source, baseline_scope, cpu_source\n"
                   "ORDER BY model, baseline_source, gpu",
                   {"cpu_euros": EUR, "gpu_euros": EUR, "saving_euros": EUR, "saving_percent": "percent",
                    "gpu_always_on_euros": EUR}))],
    [(14, 9, timeseries("CPU euros vs GPU-equivalent euros per day",
                        "Measured CPU euros and, per baseline (labelled measured/stated), GPU-equivalent euros.",
                        "SELECT day::timestamptz AS time, 'CPU (measured)' AS series, sum(euros) AS euros\n"
                        "FROM bitfleet.cost_by_model_day WHERE $__timeFilter(day) GROUP BY 1\n"
                        "UNION ALL\n"
                        "SELECT day::timestamptz, 'GPU ' || gpu || ' (' || baseline_source || ')', sum(gpu_euros)\n"
                        "FROM bitfleet.savings_vs_gpu_day WHERE $__timeFilter(day) GROUP BY 1, 2\nORDER BY 1, 2",
                        EUR, bars=True, long_format=True)),
     (10, 9, table("Alternatives (bitfleet.alternatives)",
                   "The figures compared with: source measured = a benchmark (Ops/bench/peers.py --record for CPU "
                   "peers), stated = a document or an assumption (see note). A NULL model applies to every model.",
                   "SELECT id, coalesce(model, '(every model)') AS model, kind, source, label, batch, cores,\n"
                   "       euros_per_hour, samples_per_second, euros_per_million, measured_at, note\n"
                   "FROM bitfleet.alternatives\nORDER BY source, kind, model, label, batch",
                   {"euros_per_hour": EUR, "euros_per_million": EUR}))],
])

UTILISATION = dashboard("bitfleet-utilisation", "BitFleet — fleet utilisation and idle cost",
    "Worker heartbeats (bitfleet.worker_usage): allocated core-seconds = cores x time, busy = CPU time used, idle = "
    "the rest. Idle cost is what allocated but unused cores cost (OpenCost's __idle__). Hourly series cover at most "
    "the last 31 days.", [
    [(6, 5, stat("Utilisation in range", "100 x busy / allocated core-seconds; empty when no worker reported.",
                 "SELECT 100 * sum(busy_core_seconds) / nullif(sum(allocated_core_seconds), 0) AS utilisation,\n"
                 "       count(*) AS days_with_heartbeats\nFROM bitfleet.fleet_utilisation_day\nWHERE $__timeFilter(day)",
                 "percent", 1, field="utilisation")),
     (6, 5, stat("Allocated cost in range (EUR)", "Cores x time x price of every worker, busy or not.",
                 "SELECT coalesce(sum(allocated_euros), 0) AS allocated_euros\nFROM bitfleet.fleet_utilisation_day\n"
                 "WHERE $__timeFilter(day)", EUR, 4)),
     (6, 5, stat("Idle cost in range (EUR)", "Idle core-seconds x price.",
                 "SELECT coalesce(sum(idle_euros), 0) AS idle_euros\nFROM bitfleet.fleet_utilisation_day\n"
                 "WHERE $__timeFilter(day)", EUR, 4)),
     (6, 5, stat("Workers reporting (last hour)", "Distinct workers with a heartbeat row in the last hour.",
                 "SELECT count(DISTINCT worker_id) AS workers\nFROM bitfleet.worker_usage\n"
                 "WHERE period_start > now() - interval '1 hour'", "short"))],
    [(12, 9, timeseries("Utilisation per hour (%)", "100 x busy / allocated per UTC hour; gaps where no worker ran.",
                        "SELECT h.hour AS time, u.utilisation_percent AS utilisation\n"
                        f"FROM {HOURS_SERIES}\n"
                        "LEFT JOIN bitfleet.fleet_utilisation_hour u ON u.hour = h.hour\n"
                        "WHERE $__timeFilter(h.hour)\nORDER BY 1", "percent")),
     (12, 9, timeseries("Busy and idle core-seconds per hour", "Stacked: busy + idle = allocated.",
                        "SELECT h.hour AS time, coalesce(u.busy_core_seconds, 0) AS busy,\n"
                        "       coalesce(u.idle_core_seconds, 0) AS idle\n"
                        f"FROM {HOURS_SERIES}\n"
                        "LEFT JOIN bitfleet.fleet_utilisation_hour u ON u.hour = h.hour\n"
                        "WHERE $__timeFilter(h.hour)\nORDER BY 1", "s", stacked=True, bars=True))],
    [(12, 9, timeseries("Idle and busy cost per hour (EUR)", "What the fleet's busy and idle cores cost each hour.",
                        "SELECT h.hour AS time, coalesce(u.busy_euros, 0) AS busy_euros,\n"
                        "       coalesce(u.idle_euros, 0) AS idle_euros\n"
                        f"FROM {HOURS_SERIES}\n"
                        "LEFT JOIN bitfleet.fleet_utilisation_hour u ON u.hour = h.hour\n"
                        "WHERE $__timeFilter(h.hour)\nORDER BY 1", EUR, stacked=True, bars=True)),
     (12, 9, table("Cost allocation in range: models, __overhead__, __idle__, __shared__",
                   "bitfleet.cost_allocation_day summed over the range: one row per model and the __overhead__, "
                   "__idle__ and __shared__ lines.",
                   "SELECT allocation, kind, sum(core_seconds) AS core_seconds, sum(euros) AS euros\n"
                   "FROM bitfleet.cost_allocation_day\nWHERE $__timeFilter(day)\nGROUP BY allocation, kind\n"
                   "ORDER BY euros DESC", {"euros": EUR, "core_seconds": "s"}))],
])

QUEUE = dashboard("bitfleet-queue", "BitFleet — queue", "Queue depth and waiting time (bitfleet.queue_summary, "
    "bitfleet.queue_depth, bitfleet.jobs).", [
    [(5, 5, stat("Due now", "Queued or retrying jobs whose run_after has passed.",
                 "SELECT due FROM bitfleet.queue_summary", "short")),
     (5, 5, stat("Running", "Jobs leased by a worker.", "SELECT running FROM bitfleet.queue_summary", "short")),
     (5, 5, stat("Scheduled later", "Queued or retrying jobs whose run_after is in the future.",
                 "SELECT scheduled FROM bitfleet.queue_summary", "short")),
     (5, 5, stat("Oldest due job waiting", "Seconds since the oldest due job became due (0 when none is due).",
                 "SELECT coalesce(oldest_due_seconds, 0) AS oldest_due_seconds FROM bitfleet.queue_summary", "s")),
     (4, 5, stat("Work for the autoscaler (due + running)",
                 "The number KEDA scales on: queued or retrying jobs that are due, plus running jobs.",
                 "SELECT count(*) AS jobs\nFROM bitfleet.jobs\nWHERE state = 'running'\n"
                 "   OR (state IN ('queued', 'failed') AND run_after <= now())", "short"))],
    [(8, 9, bargauge("Jobs by state", "Every state, zero included (bitfleet.queue_depth).",
                     "SELECT state::text AS state, jobs FROM bitfleet.queue_depth ORDER BY state")),
     (16, 9, timeseries("Jobs enqueued and finished per hour", "From bitfleet.jobs created_at and finished_at.",
                        "SELECT h.hour AS time, coalesce(e.n, 0) AS enqueued, coalesce(f.n, 0) AS finished\n"
                        f"FROM {HOURS_SERIES}\n"
                        "LEFT JOIN (SELECT date_trunc('hour', created_at) AS hour, count(*) AS n FROM bitfleet.jobs\n"
                        "           WHERE $__timeFilter(created_at) GROUP BY 1) e ON e.hour = h.hour\n"
                        "LEFT JOIN (SELECT date_trunc('hour', finished_at) AS hour, count(*) AS n FROM bitfleet.jobs\n"
                        "           WHERE $__timeFilter(finished_at) GROUP BY 1) f ON f.hour = h.hour\n"
                        "WHERE $__timeFilter(h.hour)\nORDER BY 1", "short", bars=True))],
], time_from="now-24h")

THROUGHPUT = dashboard("bitfleet-throughput", "BitFleet — throughput", "Jobs and samples per second from "
    "bitfleet.job_costs (per worker over the last hour, fleet-wide per hour) and phase timings. Live per-process "
    "rates are also on each worker's /metrics (bitfleet_samples_total, bitfleet_job_phase_seconds).", [
    [(6, 5, stat("Samples per CPU-second (range)", "Samples / metered CPU seconds: the engine's efficiency.",
                 "SELECT coalesce(sum(samples) / nullif(sum(cpu_seconds), 0), 0) AS samples_per_cpu_second\n"
                 "FROM bitfleet.cost_by_model_day\nWHERE $__timeFilter(day)", "short", 0)),
     (6, 5, stat("Samples per second (last hour)", "All workers, averaged over the last hour.",
                 "SELECT coalesce(sum(samples_per_second), 0) AS samples_per_second FROM bitfleet.worker_throughput",
                 "short", 1)),
     (6, 5, stat("Jobs per second (last hour)", "All workers, averaged over the last hour.",
                 "SELECT coalesce(sum(jobs_per_second), 0) AS jobs_per_second FROM bitfleet.worker_throughput",
                 "short", 3)),
     (6, 5, stat("Workers with jobs (last hour)", "Workers that wrote a cost row in the last hour.",
                 "SELECT count(*) AS workers FROM bitfleet.worker_throughput", "short"))],
    [(24, 8, table("Throughput per worker (last hour)", "bitfleet.worker_throughput.",
                   "SELECT worker_id, node_class, jobs_last_hour, samples_last_hour, jobs_per_second,\n"
                   "       samples_per_second, samples_per_cpu_second, euros_last_hour, last_job_at\n"
                   "FROM bitfleet.worker_throughput\nORDER BY samples_last_hour DESC",
                   {"euros_last_hour": EUR}))],
    [(12, 9, timeseries("Samples per second, per hour", "Samples written per UTC hour / 3600.",
                        "SELECT h.hour AS time, coalesce(c.samples, 0) / 3600.0 AS samples_per_second\n"
                        f"FROM {HOURS_SERIES}\n"
                        "LEFT JOIN (SELECT date_trunc('hour', created_at) AS hour, sum(samples) AS samples\n"
                        "           FROM bitfleet.job_costs WHERE $__timeFilter(created_at) GROUP BY 1) c ON c.hour = h.hour\n"
                        "WHERE $__timeFilter(h.hour)\nORDER BY 1", "short")),
     (12, 9, timeseries("Mean phase time per job, per hour", "Wall seconds per phase (queue wait, fetch, decode, "
                        "inference, write), averaged over the jobs of each hour.",
                        "SELECT date_trunc('hour', created_at) AS time,\n"
                        "       avg(queue_wait_seconds) AS queue_wait, avg(fetch_seconds) AS fetch,\n"
                        "       avg(decode_seconds) AS decode, avg(infer_seconds) AS infer,\n"
                        "       avg(write_seconds) AS write\n"
                        "FROM bitfleet.job_costs\nWHERE $__timeFilter(created_at)\nGROUP BY 1\nORDER BY 1", "s"))],
    [(12, 9, bargauge("Where the CPU goes: CPU seconds per phase (range)",
                      "bitfleet.phase_cpu_day: metered CPU seconds per phase (fetch, decode, infer, encode, write; "
                      "other = the rest of the job's CPU; not split = rows without phase figures).",
                      "SELECT phase, sum(cpu_seconds) AS cpu_seconds\nFROM bitfleet.phase_cpu_day\n"
                      "WHERE $__timeFilter(day)\nGROUP BY phase, phase_order\nORDER BY phase_order")),
     (12, 9, table("Phase cost by model (range)", "bitfleet.phase_cpu_day: CPU seconds and euros per model and phase.",
                   "SELECT model, phase, sum(jobs) AS jobs, sum(cpu_seconds) AS cpu_seconds, sum(euros) AS euros\n"
                   "FROM bitfleet.phase_cpu_day\nWHERE $__timeFilter(day)\n"
                   "GROUP BY model, phase, phase_order\nORDER BY model, phase_order",
                   {"cpu_seconds": "s", "euros": EUR}))],
], time_from="now-24h")

DASHBOARDS = {"bitfleet-cost.json": COST, "bitfleet-savings.json": SAVINGS,
              "bitfleet-utilisation.json": UTILISATION, "bitfleet-queue.json": QUEUE,
              "bitfleet-throughput.json": THROUGHPUT}


def render(d: dict) -> str:
    return json.dumps(d, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is missing or differs")
    args = ap.parse_args()
    stale = []
    for directory in OUT:
        for name, d in DASHBOARDS.items():
            path = directory / name
            text = render(d)
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        extra = sorted(p.name for p in directory.glob("*.json") if p.name not in DASHBOARDS)
        if extra:
            stale += [f"{directory.relative_to(ROOT)}/{e} (not generated here)" for e in extra]
    if stale:
        print("out of date (run python3 Ops/grafana/build_dashboards.py): " + ", ".join(stale))
        return 1
    if not args.check:
        print(f"wrote {len(DASHBOARDS)} dashboards to " + ", ".join(str(d.relative_to(ROOT)) for d in OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
