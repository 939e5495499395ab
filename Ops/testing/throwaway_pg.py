"""A throwaway PostgreSQL cluster for the Python check scripts, through Ops/pg.sh (which, as root, keeps the data
where the postgres user can reach it, whatever directory the clone is in).

    from throwaway_pg import throwaway_cluster
    with throwaway_cluster("bitfleet-chart-pg-") as url:   # a superuser libpq URL
        ...
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
PG_SH = ROOT / "Ops" / "pg.sh"


class ClusterError(RuntimeError):
    pass


@contextlib.contextmanager
def throwaway_cluster(prefix: str = "bitfleet-pg-") -> Iterator[str]:
    """Starts a cluster in a new temporary directory, yields its URL, and stops and deletes it afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = base / "pg"
    try:
        out = subprocess.run(["bash", str(PG_SH), "start", str(cluster)], capture_output=True, text=True, timeout=180)
        if out.returncode != 0 or not out.stdout.strip():
            raise ClusterError(f"Ops/pg.sh start failed: {out.stderr.strip()[-800:]}")
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(PG_SH), "remove", str(cluster)], capture_output=True, timeout=180)
        shutil.rmtree(base, ignore_errors=True)
