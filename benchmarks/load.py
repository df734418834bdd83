"""Load on the team tracking server (SPEC 8.1, issue 25): client processes each log runs and
metrics in batches against ``deploy/tracking-server.sh`` (PostgreSQL, served artifacts) on
127.0.0.1, optionally with the ``mlflow server`` process killed and started again half-way.

Prints throughput, p50 / p99 latency of ``log_batch``, every retry, and the row counts in
PostgreSQL against what was sent (lost = sent - stored; the target is 0).

    python benchmarks/load.py                       # 8 clients x 5,000 metrics, 20 runs each
    python benchmarks/load.py --restart             # the same, the server restarted half-way

Every loop is bounded: a fixed number of calls per client, at most ``--retries`` retries per call
(backoff 0.5 s doubling to 8 s), and ``--timeout`` seconds for the whole benchmark. MLflow's own
HTTP retries are switched off in the clients, so each retry is counted here.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "tracking-server.sh"


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _call(fn, retries: int, deadline: float, log: list[str], what: str):
    """``fn()`` with at most ``retries`` retries (backoff 0.5 s doubling to 8 s) before ``deadline``."""
    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as err:  # a benchmark counts every failure, then re-raises the last
            if attempt == retries or time.monotonic() + delay > deadline:
                raise
            log.append(f"{what}: retry {attempt + 1} after {type(err).__name__}")
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def client(index: int, url: str, experiment_id: str, runs: int, metrics: int, batch: int,
           retries: int, deadline: float, done: mp.Value, out: mp.Queue) -> None:
    """One client: ``runs`` runs, ``metrics`` metrics in all (spread over the runs), in batches."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # every retry is ours, and counted
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "30"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient(url)
    latencies: list[float] = []
    log: list[str] = []
    per_run = metrics // runs
    sent = 0
    try:
        for r in range(runs):
            name = f"c{index}-r{r}"
            run = _call(lambda name=name: c.create_run(experiment_id, run_name=name), retries, deadline, log,
                        f"client {index} create_run")
            run_id = run.info.run_id
            now = int(time.time() * 1000)
            for start in range(0, per_run, batch):
                chunk = [Metric(f"m{(start + i) % 10}", float(start + i), now, start + i)
                         for i in range(min(batch, per_run - start))]
                t0 = time.perf_counter()
                _call(lambda chunk=chunk, run_id=run_id: c.log_batch(run_id, metrics=chunk), retries, deadline, log,
                      f"client {index} log_batch")
                latencies.append(time.perf_counter() - t0)
                sent += len(chunk)
                with done.get_lock():
                    done.value += len(chunk)
            _call(lambda run_id=run_id: c.set_terminated(run_id, "FINISHED"), retries, deadline, log,
                  f"client {index} set_terminated")
        out.put((index, sent, latencies, log, None))
    except Exception as err:  # reported by the parent
        out.put((index, sent, latencies, log, f"{type(err).__name__}: {str(err)[:200]}"))


def _restart_mlflow(folder: Path, env: dict[str, str]) -> float:
    """Kill ``mlflow server`` (its process group, as a crash would) and start it again; seconds taken."""
    t0 = time.monotonic()
    pid = int((folder / "mlflow.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    (folder / "mlflow.pid").unlink()
    subprocess.run(["bash", str(SCRIPT), "start", str(folder)], env=env, check=True, capture_output=True,
                   text=True, timeout=300)
    return time.monotonic() - t0


def _rows(folder: Path, pg_port: int) -> dict[str, int]:
    import psycopg2

    password = (folder / "pg-password").read_text().strip()
    with psycopg2.connect(host="127.0.0.1", port=pg_port, user="xiqa", password=password, dbname="mlflow") as conn:
        with conn.cursor() as cur:
            out = {}
            for name, query in (("metrics", "SELECT count(*) FROM metrics"),
                                ("runs", "SELECT count(*) FROM runs"),
                                ("finished", "SELECT count(*) FROM runs WHERE status = 'FINISHED'")):
                cur.execute(query)
                out[name] = int(cur.fetchone()[0])
    conn.close()
    return out


def main() -> None:
    """Start a server, run the clients (and the restart), count the rows, print, stop the server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--metrics", type=int, default=5000, help="metrics per client")
    parser.add_argument("--runs", type=int, default=20, help="runs per client")
    parser.add_argument("--batch", type=int, default=100, help="metrics per log_batch call")
    parser.add_argument("--workers", type=int, default=2, help="mlflow server worker processes")
    parser.add_argument("--restart", action="store_true", help="kill and restart mlflow server half-way")
    parser.add_argument("--retries", type=int, default=10, help="retries per call at most")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole benchmark")
    args = parser.parse_args()
    if args.metrics % args.runs:
        parser.error("--metrics must be a multiple of --runs")

    folder = Path(tempfile.mkdtemp(prefix="xiqa-load-"))
    folder.chmod(0o755)
    port, pg_port = _free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "XIQA_"))}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "XIQA_SERVER_PORT": str(port), "XIQA_PG_PORT": str(pg_port), "XIQA_SERVER_HOST": "127.0.0.1",
            "XIQA_SERVER_WORKERS": str(args.workers), "XIQA_PG_PASSWORD": secrets.token_hex(12)}
    started = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], env=env, capture_output=True, text=True,
                             timeout=300)
    if started.returncode != 0:
        sys.exit(f"load: the tracking server did not start: {started.stderr.strip()[-2000:]}")
    url = started.stdout.strip().splitlines()[-1]
    try:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(url).create_experiment(f"load-{secrets.token_hex(4)}")
        deadline = time.monotonic() + args.timeout
        done = mp.get_context("spawn").Value("q", 0)
        out: mp.Queue = mp.get_context("spawn").Queue()
        procs = [mp.get_context("spawn").Process(
            target=client, args=(i, url, experiment_id, args.runs, args.metrics, args.batch, args.retries, deadline,
                                 done, out)) for i in range(args.clients)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        restart_s = None
        total = args.clients * args.metrics
        if args.restart:
            while done.value < total // 2 and time.monotonic() < deadline and any(p.is_alive() for p in procs):
                time.sleep(0.05)
            restart_s = _restart_mlflow(folder, env)
        results = [out.get(timeout=max(1.0, deadline - time.monotonic() + 30)) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        wall = time.perf_counter() - t0
        rows = _rows(folder, pg_port)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)

    latencies = sorted(x for r in results for x in r[2])
    sent = sum(r[1] for r in results)
    retries = [line for r in results for line in r[3]]
    errors = [f"client {r[0]}: {r[4]}" for r in results if r[4]]
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
    print(f"load: {args.clients} clients x {args.metrics} metrics in batches of {args.batch}, {args.runs} runs each, "
          f"mlflow server with {args.workers} workers on PostgreSQL, 127.0.0.1, {os.cpu_count()} CPUs"
          + (f"; mlflow server killed and restarted half-way ({restart_s:.1f} s)" if restart_s is not None else ""))
    print(f"  wall {wall:.1f} s, {sent / wall:.0f} metrics/s, {len(latencies)} log_batch calls: "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"  sent {sent} metrics and {args.clients * args.runs} runs; PostgreSQL holds {rows['metrics']} metric rows, "
          f"{rows['runs']} runs ({rows['finished']} FINISHED); lost {sent - rows['metrics']} metrics")
    kinds = Counter(" ".join(line.split(":")[0].split()[2:]) + " after " + line.split(" after ")[-1]
                    for line in retries)
    print(f"  retried {len(retries)} times" + (": " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
                                              if retries else ""))
    for line in errors:
        print(f"  FAILED {line}")
    sys.exit(1 if errors or rows["metrics"] != sent else 0)


if __name__ == "__main__":
    main()
