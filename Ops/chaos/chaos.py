#!/usr/bin/env python3
"""Chaos harness: many jobs, several real worker processes, random kill -9 of workers, pg_terminate_backend of
worker sessions, one restart of PostgreSQL, and an input server that stalls or errors now and then. Bounded in time.

    Ops/chaos/run.sh [--jobs 5000] [--workers 3] [--kills 20] [--lease 10] [--time-limit 600] [--json]

At the end it checks and prints: every job in a final state, no job lost, exactly one result and one cost row per
succeeded job (and none for any other), and the recovery time after each kill (until every job the killed worker
held is running elsewhere or finished). With --json the last line is one JSON object.
"""
import argparse
import http.server
import json
import os
import random
import signal
import socketserver
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def psql(url, sql):
    out = subprocess.run(["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    return out.stdout.strip()


def try_psql(url, sql, attempts=60):
    for _ in range(attempts):
        try:
            return psql(url, sql)
        except RuntimeError:
            time.sleep(0.5)
    return psql(url, sql)


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files after a delay; now and then answers 500 or stalls past the worker's fetch timeout."""
    delay = 0.05
    p_error = 0.03
    p_stall = 0.01
    stall_seconds = 8.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(self.delay)
        roll = random.random()
        if roll < self.p_error:
            self.send_error(500, "chaos")
            return
        if roll < self.p_error + self.p_stall:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            time.sleep(self.stall_seconds)
            return
        super().do_GET()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that time out on a stalled response close the socket: expected here


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bitfleet", required=True)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terminations", type=int, default=10)
    parser.add_argument("--lease", type=float, default=10)
    parser.add_argument("--delay", type=float, default=0.05, help="input server latency per request (s)")
    parser.add_argument("--time-limit", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    random.seed(args.seed)

    work = os.path.join(ROOT, ".tmp", "chaos")
    subprocess.run([os.path.join(ROOT, "Ops/pg.sh"), "remove", work + "/pg"], capture_output=True)
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work + "/inputs")
    started = subprocess.run([os.path.join(ROOT, "Ops/pg.sh"), "start", work + "/pg"], capture_output=True, text=True)
    if started.returncode != 0:
        sys.exit(f"chaos: the throwaway PostgreSQL cluster did not start:\n{started.stderr.strip()}")
    url = started.stdout.strip()
    env = dict(os.environ, DATABASE_URL=url, BITFLEET_LOG_LEVEL="warning")
    workers = {}
    log = open(os.path.join(work, "workers.log"), "ab")
    try:
        subprocess.run([args.bitfleet, "migrate"], env=env, check=True, capture_output=True)
        model = os.path.join(work, "model")
        subprocess.run([sys.executable, os.path.join(ROOT, "Ops/models/random_model.py"), model, "--features", "64",
                        "--stem", "128", "--experts", "8", "--top-k", "2", "--hidden", "64", "--classes", "10",
                        "--seed", "3", "--samples", "8"], check=True, capture_output=True)
        subprocess.run([args.bitfleet, "model", "add", "--name", "chaos", "--path", model], env=env, check=True,
                       capture_output=True)
        import numpy as np
        rng = np.random.default_rng(args.seed)
        for index in range(50):
            np.save(os.path.join(work, "inputs", f"in-{index}.npy"), rng.integers(0, 256, (4, 64), dtype=np.uint8))

        FlakyHandler.delay = args.delay
        FlakyHandler.stall_seconds = 8.0
        handler = lambda *a, **k: FlakyHandler(*a, directory=os.path.join(work, "inputs"), **k)  # noqa: E731
        server = Server(("127.0.0.1", 0), handler)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

        psql(url, f"""
            INSERT INTO bitfleet.jobs (model, input_url, max_attempts)
            SELECT 'chaos', 'http://127.0.0.1:{port}/in-' || (n % 50) || '.npy', 25 FROM generate_series(1, {args.jobs}) n
        """)
        enqueued = int(psql(url, "SELECT count(*) FROM bitfleet.jobs"))

        def start_worker():
            process = subprocess.Popen(
                [args.bitfleet, "worker", "--concurrency", str(args.concurrency), "--lease-seconds", str(args.lease),
                 "--claim-batch", "2", "--fetch-timeout", "4", "--allow-networks", "127.0.0.1", "--poll-seconds", "0.5",
                 "--grace-period", "5", "--health-port", "0"],
                env=env, stdout=log, stderr=log)
            workers[process.pid] = process
            return process

        for _ in range(args.workers):
            start_worker()

        hostname = os.uname().nodename
        kills, terminations, restarted = [], 0, False
        recoveries = []  # seconds per kill that held jobs
        pending_recoveries = []  # (kill_time, pid, job ids)
        start = time.time()
        next_action = start + 2
        while time.time() - start < args.time_limit:
            now = time.time()
            try:
                open_jobs = int(psql(url, "SELECT count(*) FROM bitfleet.jobs WHERE state IN ('queued','running','failed')"))
            except RuntimeError:
                open_jobs = -1  # database restarting
            for item in list(pending_recoveries):
                kill_time, pid, held = item
                # Recovered once every job the dead worker held was claimed again (a later attempt) or is final.
                pairs = ",".join(f"({job},{attempt})" for job, attempt in held)
                try:
                    still = int(psql(url, f"""SELECT count(*) FROM bitfleet.jobs j JOIN (VALUES {pairs}) AS h(id, attempt)
                                             ON j.id = h.id WHERE j.attempt = h.attempt
                                             AND j.state NOT IN ('succeeded', 'dead', 'cancelled')"""))
                except RuntimeError:
                    continue
                if still == 0:
                    recoveries.append(round(time.time() - kill_time, 2))
                    pending_recoveries.remove(item)
            if open_jobs == 0 and not pending_recoveries:
                break
            if now >= next_action and open_jobs != 0:
                done = 1 - max(open_jobs, 0) / enqueued
                if not restarted and done > 0.4:
                    subprocess.run([os.path.join(ROOT, "Ops/pg.sh"), "restart", work + "/pg"], check=True, capture_output=True)
                    restarted = True
                elif len(kills) < args.kills and (terminations >= args.terminations or random.random() < 0.7):
                    pid = random.choice(list(workers))
                    try:
                        held = psql(url, f"SELECT coalesce(string_agg(id || ':' || attempt, ','), '') FROM bitfleet.jobs WHERE state = 'running' AND lease_owner LIKE '{hostname}-{pid}-%'")
                    except RuntimeError:
                        held = ""
                    os.kill(pid, signal.SIGKILL)
                    workers.pop(pid).wait()
                    kill_time = time.time()
                    kills.append(pid)
                    if held:
                        pending_recoveries.append((kill_time, pid, [tuple(map(int, x.split(":"))) for x in held.split(",")]))
                    start_worker()
                elif terminations < args.terminations:
                    try:
                        psql(url, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                     WHERE application_name LIKE 'bitfleet-%' ORDER BY random() LIMIT 1""")
                        terminations += 1
                    except RuntimeError:
                        pass
                # Spread the chaos over the run: the remaining actions over the expected remaining time.
                next_action = time.time() + random.uniform(1.0, 2.5)
            time.sleep(0.25)
        elapsed = time.time() - start

        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

        q = lambda sql: int(try_psql(url, sql))  # noqa: E731
        total = q("SELECT count(*) FROM bitfleet.jobs")
        final = q("SELECT count(*) FROM bitfleet.jobs WHERE state IN ('succeeded', 'dead', 'cancelled')")
        succeeded = q("SELECT count(*) FROM bitfleet.jobs WHERE state = 'succeeded'")
        dead = q("SELECT count(*) FROM bitfleet.jobs WHERE state = 'dead'")
        results = q("SELECT count(*) FROM bitfleet.results")
        costs = q("SELECT count(*) FROM bitfleet.job_costs")
        duplicates = q("""SELECT
            (SELECT count(*) FROM (SELECT job_id FROM bitfleet.results GROUP BY job_id HAVING count(*) > 1) a)
          + (SELECT count(*) FROM (SELECT job_id FROM bitfleet.job_costs GROUP BY job_id HAVING count(*) > 1) b)
          + (SELECT count(*) FROM bitfleet.results r JOIN bitfleet.jobs j ON j.id = r.job_id WHERE j.state <> 'succeeded')
          + (SELECT count(*) FROM bitfleet.job_costs c JOIN bitfleet.jobs j ON j.id = c.job_id WHERE j.state <> 'succeeded')""")
        missing = q("""SELECT count(*) FROM bitfleet.jobs j WHERE j.state = 'succeeded' AND
            (NOT EXISTS (SELECT 1 FROM bitfleet.results r WHERE r.job_id = j.id)
             OR NOT EXISTS (SELECT 1 FROM bitfleet.job_costs c WHERE c.job_id = j.id))""")
        lease_rescues = q("SELECT count(*) FROM bitfleet.jobs, jsonb_array_elements(errors) e WHERE e->>'phase' = 'lease'")
        attempts = q("SELECT coalesce(sum(attempt), 0) FROM bitfleet.jobs")
        lost = (enqueued - total) + (total - final) + missing
        summary = {
            "jobs": enqueued, "succeeded": succeeded, "dead": dead, "final": final, "lost": lost,
            "duplicates": duplicates, "results": results, "cost_rows": costs, "kills": len(kills),
            "backend_terminations": terminations, "postgres_restarts": int(restarted),
            "lease_rescues": lease_rescues, "attempts": attempts, "recoveries_s": recoveries,
            "unrecovered_kills": len(pending_recoveries),
            "max_recovery_s": max(recoveries) if recoveries else None, "lease_s": args.lease,
            "seconds": round(elapsed, 1),
        }
        print(f"jobs {enqueued}: {succeeded} succeeded, {dead} dead (out of attempts), {total - final} not final")
        print(f"chaos: {len(kills)} kill -9, {terminations} backend terminations, {int(restarted)} PostgreSQL restart, "
              f"{lease_rescues} lease rescues, {attempts} attempts in {elapsed:.1f} s")
        print(f"results {results}, cost rows {costs}, lost {lost}, duplicates {duplicates}")
        print(f"recovery after kills holding jobs (s): {recoveries} (max {summary['max_recovery_s']}, lease {args.lease} s)")
        ok = lost == 0 and duplicates == 0 and results == succeeded and costs == succeeded and not pending_recoveries
        print("PASS" if ok else "FAIL")
        if args.json:
            print(json.dumps(summary))
        return 0 if ok else 1
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
        subprocess.run([os.path.join(ROOT, "Ops/pg.sh"), "remove", work + "/pg"], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
