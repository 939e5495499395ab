#!/usr/bin/env python3
"""Check the Grafana provisioning and dashboards in Ops/grafana/ (and the chart's copies) against the real schema.

    python3 Ops/grafana/check_dashboards.py [-v] [--database-url postgresql://postgres@host:port/postgres]

1. every dashboard JSON loads and is well formed (title, unique uid, unique panel ids, grid positions, a Postgres
   datasource variable, rawSql on every target, only the $__timeFilter macro), and Helm/bitfleet/dashboards/ holds
   exactly the files build_dashboards.py writes;
2. the provisioning files name the same datasource type, take every connection setting from environment
   variables and hold no literal password;
3. against a throwaway PostgreSQL (Ops/pg.sh; or a superuser URL given with --database-url, in which a temporary
   database is created and dropped) with Migrations/*.sql applied, every panel's SQL — $__timeFilter(x) replaced by
   plain SQL over the last 30 days — runs as a LOGIN role that is a member of bitfleet_readonly: without error on an
   empty database, and returning at least one row on a database with known data, where a few panels are also
   checked against the hand-computed figures of that data.
Stdlib only (plus psql); PyYAML is used for the provisioning files when installed. Prints one line per failed check
(every check with -v) and `N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Ops" / "testing"))
from throwaway_pg import ClusterError, throwaway_cluster  # noqa: E402
GRAFANA = ROOT / "Ops" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
CHART_DASHBOARDS = ROOT / "Helm" / "bitfleet" / "dashboards"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
DS_TYPE = "grafana-postgresql-datasource"


class Report:
    def __init__(self, verbose: bool) -> None:
        self.verbose, self.passed, self.failed = verbose, 0, 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            if self.verbose:
                print(f"  ok    {name}")
        else:
            self.failed += 1
            print(f"  FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok


def grafana_macros(sql: str) -> str:
    """$__timeFilter(col) → col BETWEEN now() - 30 days AND now() + 1 day (what Grafana does with literal bounds)."""
    return re.sub(r"\$__timeFilter\(([^)]+)\)",
                  r"\1 BETWEEN (now() - interval '30 days') AND now() + interval '1 day'", sql)


def panels_of(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return out


# ---------------------------------------------------------------------------------------------------------------
def check_files(rep: Report) -> dict[str, dict]:
    print("== dashboard JSON")
    loaded: dict[str, dict] = {}
    files = sorted(DASHBOARDS.glob("*.json"))
    rep.check("Ops/grafana/dashboards has the five dashboards", len(files) >= 5, str([f.name for f in files]))
    uids = set()
    for path in files:
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            rep.check(f"{path.name} loads", False, str(exc))
            continue
        rep.check(f"{path.name} loads", True)
        loaded[path.name] = d
        rep.check(f"{path.name}: title and uid", bool(d.get("title")) and bool(d.get("uid")))
        rep.check(f"{path.name}: uid unique", d.get("uid") not in uids, d.get("uid", ""))
        uids.add(d.get("uid"))
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        rep.check(f"{path.name}: datasource variable of type {DS_TYPE}",
                  variables.get("datasource", {}).get("query") == DS_TYPE)
        panels = panels_of(d)
        ids = [p.get("id") for p in panels]
        rep.check(f"{path.name}: panel ids unique", len(ids) == len(set(ids)), str(ids))
        for p in panels:
            where = f"{path.name} panel '{p.get('title')}'"
            gp = p.get("gridPos", {})
            rep.check(f"{where}: grid position within 24 columns",
                      all(isinstance(gp.get(k), int) for k in "xywh") and gp["x"] + gp["w"] <= 24)
            rep.check(f"{where}: uses the datasource variable", p.get("datasource", {}).get("uid") == "${datasource}")
            targets = p.get("targets", [])
            rep.check(f"{where}: has SQL", bool(targets) and all(t.get("rawSql") for t in targets))
            for t in targets:
                sql = t.get("rawSql", "")
                macros = set(re.findall(r"\$__\w+", sql))
                rep.check(f"{where}: only the $__timeFilter macro", macros <= {"$__timeFilter"}, str(macros))
                rep.check(f"{where}: reads the bitfleet schema", "bitfleet." in sql)
                rep.check(f"{where}: raw SQL in code mode", t.get("rawQuery") is True and t.get("editorMode") == "code")
    # The chart ships the same files.
    chart = sorted(p.name for p in CHART_DASHBOARDS.glob("*.json"))
    rep.check("Helm/bitfleet/dashboards has the same files", chart == [p.name for p in files], f"{chart}")
    for path in files:
        copy = CHART_DASHBOARDS / path.name
        rep.check(f"Helm copy of {path.name} is identical", copy.exists() and copy.read_bytes() == path.read_bytes())
    out = subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"], capture_output=True,
                         text=True)
    rep.check("dashboards are what build_dashboards.py writes", out.returncode == 0, out.stdout.strip())
    return loaded


def check_provisioning(rep: Report) -> None:
    print("== provisioning")
    ds_path = GRAFANA / "provisioning" / "datasources" / "bitfleet.yaml"
    db_path = GRAFANA / "provisioning" / "dashboards" / "bitfleet.yaml"
    for path in (ds_path, db_path):
        rep.check(f"{path.relative_to(ROOT)} exists", path.exists())
    if not ds_path.exists():
        return
    text = ds_path.read_text()
    try:
        import yaml  # type: ignore
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            ds = yaml.safe_load(text)["datasources"][0]
            rep.check("datasource YAML parses", True)
            rep.check(f"datasource type {DS_TYPE}", ds.get("type") == DS_TYPE, str(ds.get("type")))
            rep.check("datasource url/user/database/password from env",
                      all(str(v).startswith("${") for v in (ds.get("url"), ds.get("user"),
                                                            ds["jsonData"].get("database"),
                                                            ds["secureJsonData"].get("password"))))
            providers = yaml.safe_load(db_path.read_text())["providers"]
            rep.check("dashboard provider is a file provider", providers[0].get("type") == "file")
        except Exception as exc:  # noqa: BLE001
            rep.check("provisioning YAML parses", False, f"{type(exc).__name__}: {exc}")
    else:
        rep.check(f"datasource type {DS_TYPE}", f"type: {DS_TYPE}" in text)
        for key in ("url", "user", "database", "password"):
            rep.check(f"datasource {key} from env", re.search(rf"^\s*{key}: \$\{{BITFLEET_GRAFANA_DB_\w+\}}\s*$",
                                                               text, re.M) is not None)
    rep.check("no literal password in provisioning",
              all(m.strip().startswith("${") for m in re.findall(r"^\s*password:(.*)$", text, re.M)))


# ---------------------------------------------------------------------------------------------------------------
# Known data: every view gets rows; a few panels are checked against these numbers.
#   succeeded jobs: 4 'fashion' (2 in a batch for tenant acme), each 100 samples, 36 CPU s at 0.1 EUR/core-h
#                   = 0.001 EUR; 2 'digits' jobs of 50 samples, 18 CPU s at 0.2 = 0.001 EUR.
#   worker_usage:   12 heartbeats in the last 3 hours, 2 cores x 60 s, 30 busy, 90 idle, 0.1 EUR/core-h
#                   → allocated 1440 core-s (0.04 EUR), idle 1080 core-s (0.03 EUR), utilisation 25 %.
FIXTURE = """
SELECT bitfleet.create_batch(model => 'fashion', input_urls => ARRAY['http://127.0.0.1/a', 'http://127.0.0.1/b', 'http://127.0.0.1/c'],
                             custom_ids => ARRAY['a', 'b', 'c'], tenant => 'acme');
UPDATE bitfleet.jobs SET state = 'succeeded', attempt = 1, finished_at = now() WHERE custom_id IN ('a', 'b');
INSERT INTO bitfleet.jobs (model, input_url, state, run_after, lease_owner, lease_expires_at, tenant, finished_at)
SELECT m, 'http://127.0.0.1/x', s::bitfleet.job_state, now() + o::interval,
       CASE WHEN s = 'running' THEN 'w1' END, CASE WHEN s = 'running' THEN now() + interval '1 minute' END, t,
       CASE WHEN s IN ('succeeded', 'dead') THEN now() END
FROM (VALUES ('fashion', 'succeeded', '-1 hour', NULL), ('fashion', 'succeeded', '-2 hours', 'globex'),
             ('digits', 'succeeded', '-1 hour', NULL), ('digits', 'succeeded', '-1 hour', 'globex'),
             ('fashion', 'queued', '-5 minutes', NULL), ('fashion', 'queued', '+1 hour', NULL),
             ('fashion', 'failed', '-1 minute', NULL), ('fashion', 'running', '-2 minutes', NULL),
             ('fashion', 'dead', '-1 hour', NULL)) AS v(m, s, o, t);
INSERT INTO bitfleet.job_costs (job_id, batch_id, attempt, model, model_version, tenant, worker_id, node_class, samples,
    queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, write_seconds, cpu_seconds, bytes_fetched,
    binary_ops, price_per_core_hour, euros, created_at)
SELECT id, batch_id, 1, model, '1', tenant, CASE WHEN id % 2 = 0 THEN 'w1' ELSE 'w2' END, 'default',
       CASE model WHEN 'fashion' THEN 100 ELSE 50 END, 0.5, 0.01, 0.002, 0.03, 0.004,
       CASE model WHEN 'fashion' THEN 36 ELSE 18 END, 100000, 1000000,
       CASE model WHEN 'fashion' THEN 0.1 ELSE 0.2 END, 0.001, now() - interval '10 minutes'
FROM bitfleet.jobs WHERE state = 'succeeded';
INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                   idle_core_seconds, price_per_core_hour)
SELECT 'w' || (g % 2 + 1), 'default', now() - make_interval(mins => g * 15 + 1), now() - make_interval(mins => g * 15),
       2, 30, 90, 0.1
FROM generate_series(0, 11) g;
INSERT INTO bitfleet.gpu_baselines (model, gpu, euros_per_hour, samples_per_second, source, note)
VALUES ('fashion', 'bench GPU', 4, 20000, 'measured', 'check fixture');
SELECT bitfleet.record_alternative('cpu-peer', 'fashion', 'fashion-float', 'ONNX Runtime int8 (dynamic)',
                                   'onnxruntime 1.0 int8', 'check CPU', 256, 1, 50000, 0.1, 'check', NULL);
INSERT INTO bitfleet.shared_costs (name, euros_per_hour, valid_from, valid_until, note)
VALUES ('db server', 1, now() - interval '2 hours', now() - interval '1 hour', 'check fixture');
UPDATE bitfleet.job_costs SET fetch_cpu_seconds = 1, decode_cpu_seconds = 2, infer_cpu_seconds = 10,
                              encode_cpu_seconds = 1, write_cpu_seconds = 1 WHERE model = 'fashion';
"""

# (dashboard file, panel title) → expected single value (first column of the first row) on the fixture.
EXPECTED = {
    ("bitfleet-cost.json", "Cost in range (EUR)"): 0.006,
    ("bitfleet-cost.json", "Samples in range"): 500,
    ("bitfleet-cost.json", "Idle cost in range (EUR)"): 0.03,
    ("bitfleet-utilisation.json", "Utilisation in range"): 25,
    ("bitfleet-utilisation.json", "Allocated cost in range (EUR)"): 0.04,
    ("bitfleet-queue.json", "Due now"): 3,  # the batch's third item, one queued, one retrying
    ("bitfleet-queue.json", "Running"): 1,
    ("bitfleet-queue.json", "Work for the autoscaler (due + running)"): 4,
    ("bitfleet-savings.json", "CPU cost in range (EUR, measured)"): 0.006,
    # 400 fashion samples / 20000 per s / 3600 x 4 EUR
    ("bitfleet-savings.json", "GPU-equivalent, MEASURED baselines (EUR)"): 400 / 20000 / 3600 * 4,
    # the db server at 1 EUR/h for one hour
    ("bitfleet-cost.json", "Shared cost in range (EUR)"): 1.0,
    # nodes 0.04 + shared 1.0
    ("bitfleet-cost.json", "Fleet total in range (EUR)"): 1.04,
}


def check_sql(rep: Report, dashboards: dict[str, dict], admin_url: str | None) -> None:
    print("== panel SQL as a bitfleet_readonly login role (throwaway PostgreSQL)")
    psql = shutil.which("psql") or str(PG_BIN / "psql")
    if not Path(psql).exists():
        rep.check("psql available", False, "apt-get install postgresql-client-15")
        return
    if admin_url is None:
        try:
            with throwaway_cluster("bitfleet-grafana-pg-") as url:
                check_sql_on(rep, dashboards, url, psql)
        except ClusterError as exc:
            rep.check("SQL checks ran", False, str(exc))
        return
    check_sql_on(rep, dashboards, admin_url, psql)


def check_sql_on(rep: Report, dashboards: dict[str, dict], admin_url: str, psql: str) -> None:

    def run(url: str, statement: str) -> list[str]:
        out = subprocess.run([psql, url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip()[-500:])
        return [line for line in out.stdout.splitlines() if line != ""]

    def with_db(url: str, db: str, user: str | None = None, password: str | None = None) -> str:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        if user:
            netloc = f"{user}:{password}@{netloc}" if password else f"{user}@{netloc}"
        else:
            netloc = parts.netloc
        return urllib.parse.urlunsplit((parts.scheme, netloc, "/" + db, parts.query, parts.fragment))

    suffix = secrets.token_hex(4)
    databases = {"empty": f"bitfleet_grafana_empty_{suffix}", "data": f"bitfleet_grafana_data_{suffix}"}
    login = f"bitfleet_grafana_check_{suffix}"
    password = secrets.token_hex(12)
    created: list[str] = []
    try:
        for kind, db in databases.items():
            run(admin_url, f"CREATE DATABASE {db}")
            created.append(db)
            url = with_db(admin_url, db)
            # What `bitfleet migrate` does before the files (Sources/BitFleetPostgres/Migrator.swift).
            run(url, "CREATE SCHEMA IF NOT EXISTS bitfleet; CREATE TABLE IF NOT EXISTS bitfleet.schema_migrations "
                     "(name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());")
            for m in sorted((ROOT / "Migrations").glob("*.sql")):
                out = subprocess.run([psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(m)],
                                     capture_output=True, text=True, timeout=120)
                if not rep.check(f"{kind}: apply {m.name}", out.returncode == 0, out.stderr.strip()[-400:]):
                    return
            if kind == "data":
                run(url, FIXTURE)
        run(admin_url, f"CREATE ROLE {login} LOGIN PASSWORD '{password}' IN ROLE bitfleet_readonly")
        for name, d in sorted(dashboards.items()):
            for panel in panels_of(d):
                for t in panel.get("targets", []):
                    sql = grafana_macros(t["rawSql"])
                    where = f"{name} panel '{panel.get('title')}'"
                    for kind, db in databases.items():
                        url = with_db(admin_url, db, login, password)
                        try:
                            rows = run(url, sql)
                        except RuntimeError as exc:
                            rep.check(f"{where} runs as {login} on the {kind} database", False, str(exc))
                            continue
                        rep.check(f"{where} runs as {login} on the {kind} database", True)
                        if kind == "data":
                            rep.check(f"{where} returns rows on the data", bool(rows))
                            key = (name, panel.get("title"))
                            if key in EXPECTED and rows:
                                got = rows[0].split("|")[0]
                                try:
                                    ok = abs(float(got) - EXPECTED[key]) <= 1e-9 * max(1.0, abs(EXPECTED[key]))
                                except ValueError:
                                    ok = False
                                rep.check(f"{where} = {EXPECTED[key]}", ok, f"got {got}")
        missing = [k for k in EXPECTED if k[0] not in dashboards or
                   not any(p.get("title") == k[1] for p in panels_of(dashboards[k[0]]))]
        rep.check("every expected-value panel exists", not missing, str(missing))
        # The read-only role cannot write.
        try:
            run(with_db(admin_url, databases["data"], login, password),
                "INSERT INTO bitfleet.gpu_baselines (gpu, euros_per_hour, samples_per_second, source, note) "
                "VALUES ('g', 1, 1, 'stated', 'n')")
            rep.check("the read-only role cannot write", False, "INSERT succeeded")
        except RuntimeError:
            rep.check("the read-only role cannot write", True)
    except Exception as exc:  # noqa: BLE001
        rep.check("SQL checks ran", False, f"{type(exc).__name__}: {exc}")
    finally:
        for db in created:
            try:
                run(admin_url, f"DROP DATABASE IF EXISTS {db}")
            except Exception:  # noqa: BLE001
                pass
        try:
            run(admin_url, f"DROP ROLE IF EXISTS {login}")
        except Exception:  # noqa: BLE001
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="print every check, not only failures")
    ap.add_argument("--database-url", help="superuser URL of a running cluster (default: start one with Ops/pg.sh)")
    ap.add_argument("--no-sql", action="store_true", help="skip running the panels' SQL")
    args = ap.parse_args()
    rep = Report(args.verbose)
    dashboards = check_files(rep)
    check_provisioning(rep)
    if not args.no_sql:
        check_sql(rep, dashboards, args.database_url)
    print(f"{rep.passed} passed, {rep.failed} failed")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
