#!/usr/bin/env python3
"""Multi-host test: PostgreSQL, the input server and three worker hosts, each in its own network namespace.

    Ops/multihost/run.sh [--jobs 3000] [--samples 64] [--rate 1gbit] [--delay 1ms] [--lease 5] [--json]

Hosts (Ops/multihost/net.sh): bfmh-pg 10.77.0.1 (PostgreSQL), bfmh-http 10.77.0.2 (Ops/testing/http_fixture.py),
bfmh-w1..w3 10.77.0.11-13 (one `bitfleet worker` each), all on one bridge in a "switch" namespace. The harness
itself talks to PostgreSQL over its Unix socket (not namespaced), so it still sees the database while a host is cut.

1. Throughput: the same batch (--jobs inputs of --samples uint8 samples x 784 features, a random binary MoE model)
   drained by 1, 2 and 3 worker hosts, each a worker with --concurrency 1 (hosts scale, not slots), timed from the
   workers' start until every one exited (--exit-when-drained). Prints jobs/s and samples/s per configuration.
2. Partition: 3 hosts, --lease-seconds 5. When host 3 holds running jobs (matched by its PID in lease_owner), its
   switch port goes down; the harness waits until every job it held has succeeded under another worker, then
   restores the link. Checks: every job succeeded, one result and one cost row per job, none lost, and nothing
   written by host 3 for the attempts it lost (results, cost rows, error entries). Prints the recovery time.
With --json the last line is one JSON object.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NET = os.path.join(ROOT, "Ops", "multihost", "net.sh")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PG_PORT = 5432  # the database host has its own namespace, so its port space is its own
HOSTS = {1: "10.77.0.11", 2: "10.77.0.12", 3: "10.77.0.13"}


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {error.stderr or error.stdout}") from None


class Cluster:
    def __init__(self, args):
        self.args = args
        self.work = os.path.join(ROOT, ".tmp", "multihost")
        self.pgdir = os.path.join(self.work, "pg")
        self.processes = []  # every process we started, for cleanup
        self.http = None
        self.pg_started = False
        # The harness's own connection: the Unix socket in pgdir, which no namespace cuts off.
        self.admin_url = f"postgresql://postgres@/postgres?host={self.pgdir}&port={PG_PORT}"
        self.worker_url = f"postgresql://postgres@10.77.0.1:{PG_PORT}/postgres?sslmode=disable"

    # -- set-up ---------------------------------------------------------------------------------------
    def start(self):
        a = self.args
        run([NET, "down"])
        if os.path.exists(self.pgdir + "/data/postmaster.pid"):
            run(["runuser", "-u", "postgres", "--", PG_BIN + "/pg_ctl", "-D", self.pgdir + "/data", "-m", "immediate",
                 "-w", "stop"], check=False)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work + "/inputs")
        os.makedirs(self.work + "/logs")
        # A private copy of the binary: other builds in the tree must not swap it under a running measurement.
        self.bitfleet = os.path.join(self.work, "bitfleet")
        shutil.copy2(a.bitfleet, self.bitfleet)

        self.shaping = run([NET, "up", a.rate, a.delay]).stdout.strip()
        log(f"network: bfmh-sw bridge, hosts pg 10.77.0.1, http 10.77.0.2, workers 10.77.0.11-13; links: {self.shaping}")

        # PostgreSQL on 10.77.0.1, run as the postgres user inside the database host's namespace.
        os.makedirs(self.pgdir)
        shutil.chown(self.pgdir, "postgres")
        run(["runuser", "-u", "postgres", "--", PG_BIN + "/initdb", "-D", self.pgdir + "/data", "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        with open(self.pgdir + "/data/pg_hba.conf", "a") as hba:
            hba.write("host all all 10.77.0.0/24 trust\n")
        options = (f"-p {PG_PORT} -k {self.pgdir} -c listen_addresses=10.77.0.1 -c max_connections=100 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=128MB")
        run(["ip", "netns", "exec", "bfmh-pg", "runuser", "-u", "postgres", "--", PG_BIN + "/pg_ctl", "-D",
             self.pgdir + "/data", "-l", self.pgdir + "/server.log", "-w", "-t", "60", "start", "-o", options])
        self.pg_started = True
        self.bf(["migrate"])

        # The input server on 10.77.0.2.
        self.http = subprocess.Popen(
            ["ip", "netns", "exec", "bfmh-http", sys.executable, os.path.join(ROOT, "Ops/testing/http_fixture.py"),
             "--root", self.work + "/inputs", "--bind", "10.77.0.2", "--port", "0", "--ignore-stdin"],
            stdout=subprocess.PIPE, stderr=open(self.work + "/logs/http.log", "wb"), text=True)
        self.processes.append(self.http)
        line = self.http.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError("input server did not start (see .tmp/multihost/logs/http.log)")
        self.http_port = int(line[1])

        # Model and inputs.
        model = self.work + "/model"
        run([sys.executable, os.path.join(ROOT, "Ops/models/random_model.py"), model, "--features", "784", "--stem",
             "256", "--experts", "8", "--top-k", "2", "--hidden", "128", "--classes", "10", "--samples", "8",
             "--seed", "7"])
        self.bf(["model", "add", "--name", "mh", "--path", model])
        import numpy as np
        rng = np.random.default_rng(11)
        for index in range(a.files):
            np.save(f"{self.work}/inputs/in-{index}.npy", rng.integers(0, 256, (a.samples, 784), dtype=np.uint8))
        with open(self.work + "/batch.jsonl", "w") as out:
            for index in range(a.jobs):
                url = f"http://10.77.0.2:{self.http_port}/in-{index % a.files}.npy"
                out.write(json.dumps({"custom_id": f"item-{index}", "url": url}) + "\n")
        log(f"postgres 10.77.0.1:{PG_PORT}, inputs http://10.77.0.2:{self.http_port}/ ({a.files} files x "
            f"{a.samples} samples x 784 uint8), model mh (784 -> stem 256, 8 experts top-2, hidden 128, 10 classes)")

    def bf(self, argv):
        return run([self.bitfleet] + argv + ["--database-url", self.admin_url]).stdout.strip()

    def q(self, sql):
        return run(["psql", self.admin_url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql]).stdout.strip()

    def qi(self, sql):
        return int(self.q(sql) or 0)

    def new_batch(self):
        self.q("TRUNCATE bitfleet.batches, bitfleet.jobs, bitfleet.results, bitfleet.job_costs, bitfleet.worker_usage, "
               "bitfleet.workers CASCADE")
        batch = self.bf(["batch", "create", "--model", "mh", "--inputs", self.work + "/batch.jsonl", "--top-k", "2"])
        self.q("VACUUM ANALYZE bitfleet.jobs")
        return int(batch.split()[-1])

    def worker(self, host, tag, lease):
        a = self.args
        logfile = open(f"{self.work}/logs/{tag}-w{host}.log", "wb")
        process = subprocess.Popen(
            ["ip", "netns", "exec", f"bfmh-w{host}", self.bitfleet, "worker", "--database-url", self.worker_url,
             "--concurrency", str(a.concurrency), "--claim-batch", str(a.claim_batch), "--lease-seconds", str(lease),
             "--allow-networks", "10.77.0.0/24", "--health-port", "0", "--exit-when-drained", "--poll-seconds", "0.2",
             "--fetch-timeout", "15", "--grace-period", "5"],
            stdout=logfile, stderr=subprocess.STDOUT, env=dict(os.environ, BITFLEET_LOG_LEVEL="info"))
        self.processes.append(process)
        return process

    def wait_all(self, workers, deadline):
        for process in workers:
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"worker {process.pid} still running at the time limit") from None
        return [process.returncode for process in workers]

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=8)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self.pg_started:
            subprocess.run(["runuser", "-u", "postgres", "--", PG_BIN + "/pg_ctl", "-D", self.pgdir + "/data", "-m",
                            "fast", "-w", "-t", "30", "stop"], capture_output=True)
        subprocess.run([NET, "down"], capture_output=True)

    # -- checks -----------------------------------------------------------------------------------------
    def integrity(self, expected):
        total = self.qi("SELECT count(*) FROM bitfleet.jobs")
        succeeded = self.qi("SELECT count(*) FROM bitfleet.jobs WHERE state = 'succeeded'")
        results = self.qi("SELECT count(*) FROM bitfleet.results")
        costs = self.qi("SELECT count(*) FROM bitfleet.job_costs")
        missing = self.qi("""SELECT count(*) FROM bitfleet.jobs j WHERE j.state = 'succeeded' AND
            (NOT EXISTS (SELECT 1 FROM bitfleet.results r WHERE r.job_id = j.id AND r.attempt = j.attempt)
             OR NOT EXISTS (SELECT 1 FROM bitfleet.job_costs c WHERE c.job_id = j.id AND c.attempt = j.attempt))""")
        duplicates = self.qi("""SELECT
            (SELECT count(*) FROM (SELECT job_id FROM bitfleet.results GROUP BY job_id HAVING count(*) > 1) a)
          + (SELECT count(*) FROM (SELECT job_id FROM bitfleet.job_costs GROUP BY job_id HAVING count(*) > 1) b)
          + (SELECT count(*) FROM bitfleet.results r WHERE NOT EXISTS
                (SELECT 1 FROM bitfleet.jobs j WHERE j.id = r.job_id AND j.state = 'succeeded'))
          + (SELECT count(*) FROM bitfleet.job_costs c WHERE NOT EXISTS
                (SELECT 1 FROM bitfleet.jobs j WHERE j.id = c.job_id AND j.state = 'succeeded'))""")
        lost = (expected - total) + (total - succeeded) + missing
        samples = self.qi("SELECT coalesce(sum(samples), 0) FROM bitfleet.results")
        return {"jobs": expected, "succeeded": succeeded, "results": results, "cost_rows": costs, "lost": lost,
                "duplicates": duplicates, "samples": samples}

    # -- 1. throughput ------------------------------------------------------------------------------------
    def throughput(self, hosts):
        a = self.args
        self.new_batch()
        start = time.time()
        workers = [self.worker(host, f"tput{hosts}", 30) for host in range(1, hosts + 1)]
        codes = self.wait_all(workers, start + a.time_limit)
        seconds = time.time() - start
        check = self.integrity(a.jobs)
        # Also the database's view: first claim to last completion (no process start-up or exit).
        busy = float(self.q("SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM bitfleet.jobs") or 0)
        per_worker = self.q("SELECT string_agg(n::text, '/' ORDER BY n DESC) FROM "
                            "(SELECT count(*) n FROM bitfleet.job_costs GROUP BY worker_id) t")
        row = {"hosts": hosts, "seconds": round(seconds, 2), "jobs_per_s": round(a.jobs / seconds, 1),
               "samples_per_s": round(check["samples"] / seconds), "db_busy_seconds": round(busy, 2),
               "jobs_per_s_db": round(a.jobs / busy, 1) if busy else None, "jobs_per_worker": per_worker,
               "exit_codes": codes, "ok": check["lost"] == 0 and check["duplicates"] == 0 and codes == [0] * hosts}
        log(f"  {hosts} host(s): {a.jobs} jobs in {seconds:.2f} s = {row['jobs_per_s']} jobs/s, "
            f"{row['samples_per_s']} samples/s (first claim to last result {busy:.2f} s = {row['jobs_per_s_db']} jobs/s; "
            f"jobs per worker {per_worker}; lost {check['lost']}, duplicates {check['duplicates']})")
        return row

    # -- 2. partition ----------------------------------------------------------------------------------
    def partition(self):
        a = self.args
        self.new_batch()
        start = time.time()
        deadline = start + a.time_limit
        workers = {host: self.worker(host, "partition", a.lease) for host in (1, 2, 3)}
        # Every namespace has the same hostname, so host 3's worker is found by its PID (its id is host-PID-random);
        # `ip netns exec` execs the worker, so the PID we started is the worker's own.
        pid3 = workers[3].pid
        worker3 = ""
        while not worker3:
            if time.time() > deadline or workers[3].poll() is not None:
                raise RuntimeError("host 3's worker did not register")
            worker3 = self.q(f"SELECT id FROM bitfleet.workers WHERE pid = {pid3} AND id LIKE '%-{pid3}-%'")
            time.sleep(0.05)
        held_sql = f"SELECT id, attempt FROM bitfleet.jobs WHERE state = 'running' AND lease_owner = '{worker3}'"

        # Wait until the batch is under way (a fifth done) and host 3 holds running jobs, then cut it off. Its jobs
        # may finish between that look and the cut: then plug it back in and try again (a few times at most).
        held = {}
        for _ in range(10):
            while True:
                if time.time() > deadline:
                    raise RuntimeError("host 3 never held running jobs")
                done = self.qi("SELECT count(*) FROM bitfleet.jobs WHERE state = 'succeeded'")
                if done >= a.jobs // 5 and self.q(held_sql):
                    break
                if done >= a.jobs * 0.9:
                    raise RuntimeError("the batch nearly drained before host 3 was cut off holding jobs: use more --jobs")
                time.sleep(0.05)
            run([NET, "cut", "w3"])
            cut_at = time.time()
            # What host 3 holds once it can no longer reach the database (a claim already committed counts too).
            for line in self.q(held_sql).splitlines():
                job, attempt = map(int, line.split("|"))
                held[job] = attempt
            if held:
                break
            run([NET, "restore", "w3"])
            log("  host 3's jobs finished just before the cut; link restored, trying again")
            time.sleep(1)
        if not held:
            raise RuntimeError("could not cut host 3 off while it held running jobs")
        done_at_cut = self.qi("SELECT count(*) FROM bitfleet.jobs WHERE state = 'succeeded'")
        log(f"  cut host 3 (worker {worker3}) at {done_at_cut}/{a.jobs} done; it held {len(held)} running jobs: "
            f"{sorted(held)}")
        pairs = ",".join(f"({job},{attempt})" for job, attempt in held.items()) or "(0,0)"
        # Recovered when every held job was claimed again (a later attempt), then when each has succeeded elsewhere.
        # Rescued: its lease expired and another worker's heartbeat gave it back to the queue (or it was claimed).
        rescue_s = reclaim_s = recovery_s = None
        backlog = None
        while time.time() < deadline and recovery_s is None:
            rescued, reclaimed, finished = map(int, self.q(f"""
                SELECT count(*) FILTER (WHERE j.attempt > h.attempt OR j.state <> 'running'),
                       count(*) FILTER (WHERE j.attempt > h.attempt),
                       count(*) FILTER (WHERE j.state = 'succeeded' AND r.attempt > h.attempt)
                FROM (VALUES {pairs}) AS h(id, attempt) JOIN bitfleet.jobs j ON j.id = h.id
                LEFT JOIN bitfleet.results r ON r.job_id = j.id""").split("|"))
            if rescue_s is None and rescued == len(held):
                rescue_s = round(time.time() - cut_at, 2)
                backlog = self.qi(f"""SELECT count(*) FROM bitfleet.jobs WHERE state IN ('queued', 'failed')
                                      AND id NOT IN (SELECT id FROM (VALUES {pairs}) AS h(id, attempt))""")
            if reclaim_s is None and reclaimed == len(held):
                reclaim_s = round(time.time() - cut_at, 2)
            if finished == len(held):
                recovery_s = round(time.time() - cut_at, 2)
                break
            time.sleep(0.1)
        if recovery_s is None:
            raise RuntimeError("host 3's jobs did not finish elsewhere within the time limit")
        log(f"  host 3's jobs: leases expired and rescued after {rescue_s} s (lease {a.lease} s), claimed again after "
            f"{reclaim_s} s ({backlog} other jobs were waiting when the rescue was seen), all succeeded elsewhere after {recovery_s} s")
        # Keep it cut a moment longer, then plug it back in while it still believes it holds those jobs.
        time.sleep(1)
        run([NET, "restore", "w3"])
        restored_at = time.time()
        log(f"  link restored after {restored_at - cut_at:.1f} s; waiting for every worker to drain and exit")
        codes = {host: None for host in workers}
        for host, process in workers.items():
            try:
                codes[host] = process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"  worker on host {host} still running at the time limit; stopping it")
                process.terminate()
                codes[host] = process.wait(timeout=30)
        rejoined_s = round(time.time() - restored_at, 1)

        check = self.integrity(a.jobs)
        # Nothing from host 3 for the attempts it lost: no result of that attempt, no cost row by it for those jobs,
        # no error entry it wrote for them (the lease rescue's entry names it but is written by the rescuer).
        fenced_writes = self.qi(f"""SELECT
            (SELECT count(*) FROM bitfleet.results r JOIN (VALUES {pairs}) AS h(id, attempt)
                ON r.job_id = h.id AND r.attempt = h.attempt)
          + (SELECT count(*) FROM bitfleet.job_costs c JOIN (VALUES {pairs}) AS h(id, attempt)
                ON c.job_id = h.id AND (c.attempt = h.attempt OR c.worker_id = '{worker3}'))
          + (SELECT count(*) FROM bitfleet.jobs j JOIN (VALUES {pairs}) AS h(id, attempt) ON j.id = h.id,
                jsonb_array_elements(j.errors) e
                WHERE e->>'worker' = '{worker3}' AND e->>'phase' <> 'lease')""")
        lease_rescues = self.qi(f"""SELECT count(*) FROM bitfleet.jobs j JOIN (VALUES {pairs}) AS h(id, attempt)
            ON j.id = h.id, jsonb_array_elements(j.errors) e WHERE e->>'phase' = 'lease' AND e->>'worker' = '{worker3}'""")
        by3 = self.qi(f"SELECT count(*) FROM bitfleet.job_costs WHERE worker_id = '{worker3}'")
        with open(f"{self.work}/logs/partition-w3.log", errors="replace") as handle:
            text = handle.read()
        refused = text.count("lease lost before the result was written")
        lease_lost = text.count("lease lost")
        ok = (check["lost"] == 0 and check["duplicates"] == 0 and fenced_writes == 0 and check["succeeded"] == a.jobs
              and len(held) > 0)
        result = dict(check, held=len(held), worker3=worker3, rescue_s=rescue_s, backlog_at_rescue=backlog, reclaim_s=reclaim_s, recovery_s=recovery_s,
                      lease_s=a.lease, cut_s=round(restored_at - cut_at, 1), rejoin_exit_s=rejoined_s,
                      fenced_writes=fenced_writes, lease_rescues=lease_rescues, host3_jobs_total=by3,
                      host3_log_fenced_completions=refused, host3_log_lease_lost=lease_lost,
                      exit_codes=[codes[h] for h in (1, 2, 3)], ok=ok)
        log(f"  after restore host 3 exited in {rejoined_s} s (exit codes {result['exit_codes']}); its log: "
            f"{refused} completions refused by the fence, {lease_lost} 'lease lost' lines")
        log(f"  jobs {a.jobs}: {check['succeeded']} succeeded, results {check['results']}, cost rows "
            f"{check['cost_rows']}, lost {check['lost']}, duplicates {check['duplicates']}, writes by host 3 for its "
            f"lost attempts {fenced_writes}, lease rescues of its jobs {lease_rescues}")
        return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bitfleet", required=True)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=64, help="uint8 samples per input file")
    parser.add_argument("--files", type=int, default=32, help="distinct input files")
    parser.add_argument("--concurrency", type=int, default=1, help="executor slots per worker host")
    parser.add_argument("--claim-batch", type=int, default=8)
    parser.add_argument("--rate", default="1gbit", help="link rate per host (tc)")
    parser.add_argument("--delay", default="1ms", help="link delay per direction (tc netem, if the kernel has it)")
    parser.add_argument("--lease", type=float, default=5, help="lease seconds in the partition run")
    parser.add_argument("--time-limit", type=float, default=300, help="seconds per run")
    parser.add_argument("--skip-partition", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("Ops/multihost: needs root (network namespaces)")

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, interrupted)

    cluster = Cluster(args)
    try:
        cluster.start()
        log(f"== throughput: {args.jobs} jobs x {args.samples} samples, 1/2/3 worker hosts, each --concurrency "
            f"{args.concurrency} --claim-batch {args.claim_batch} ({os.cpu_count()} cores shared by all hosts)")
        rows = [cluster.throughput(hosts) for hosts in (1, 2, 3)]
        part = None
        if not args.skip_partition:
            log(f"== partition: 3 hosts, lease {args.lease} s, host 3 cut off while it holds running jobs")
            part = cluster.partition()
    finally:
        cluster.stop()

    print(f"links: {cluster.shaping}; {os.cpu_count()} cores shared by PostgreSQL, the input server and all workers "
          f"(load average at the end {os.getloadavg()[0]:.1f})")
    print(f"{'worker hosts':<14}{'seconds':>9}{'jobs/s':>9}{'samples/s':>11}{'jobs/s (db)':>13}  jobs per worker")
    for row in rows:
        print(f"{row['hosts']:<14}{row['seconds']:>9}{row['jobs_per_s']:>9}{row['samples_per_s']:>11}"
              f"{row['jobs_per_s_db']:>13}  {row['jobs_per_worker']}")
    base = rows[0]["jobs_per_s"]
    print("speed-up vs 1 host: " + ", ".join(f"{r['hosts']} hosts {r['jobs_per_s'] / base:.2f}x" for r in rows))
    ok = all(row["ok"] for row in rows)
    if part:
        print(f"partition: host 3 held {part['held']} running jobs when cut; rescued after {part['rescue_s']} s, "
              f"claimed again after {part['reclaim_s']} s, "
              f"all succeeded elsewhere after {part['recovery_s']} s (lease {part['lease_s']} s); link restored after "
              f"{part['cut_s']} s; lost {part['lost']}, duplicates {part['duplicates']}, writes by host 3 for its lost "
              f"attempts {part['fenced_writes']} ({part['host3_log_fenced_completions']} completions refused by the "
              f"fence); {part['succeeded']}/{part['jobs']} succeeded, {part['results']} results, "
              f"{part['cost_rows']} cost rows")
        ok = ok and part["ok"]
    print("PASS" if ok else "FAIL")
    if args.json:
        print(json.dumps({
            "jobs": args.jobs, "samples_per_job": args.samples, "links": cluster.shaping, "cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1), "jobs_per_s": {str(r["hosts"]): r["jobs_per_s"] for r in rows},
            "samples_per_s": {str(r["hosts"]): r["samples_per_s"] for r in rows},
            "throughput": rows,
            "partition": None if part is None else {
                "lost": part["lost"], "duplicates": part["duplicates"], "recovery_s": part["recovery_s"],
                "rescue_s": part["rescue_s"], "reclaim_s": part["reclaim_s"], "held": part["held"], "fenced_writes": part["fenced_writes"],
                "refused_completions": part["host3_log_fenced_completions"], "lease_s": part["lease_s"],
                "succeeded": part["succeeded"], "results": part["results"], "cost_rows": part["cost_rows"],
                "ok": part["ok"]},
            "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
