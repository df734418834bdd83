"""Shared fixtures: a throw-away xiqa project (real git + real DVC) in a temporary folder."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def project_env(root: Path) -> dict[str, str]:
    """Environment for a stage / CLI subprocess: our venv first, the embedded store."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("XIQA_PROJECT", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONHASHSEED"] = "0"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "xiqa-test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@xiqa.local"
    return env


def run(root: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        **kw: Any) -> subprocess.CompletedProcess:
    """Run a command in ``root`` with :func:`project_env` (plus ``env``); on failure show its output."""
    proc = subprocess.run(list(args), cwd=root, env={**project_env(root), **(env or {})}, text=True,
                          capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


# the stand-in start of a test project (when no ImageNet weights are given): the real pretrain
# stage, on a pretext small enough to cost a few seconds per architecture
TINY_PRETRAIN = {"classes": 2, "per_class": 4, "image_size": 32, "epochs": 1, "batch_size": 4}


def with_grid_archs(merged: dict, override: dict) -> dict:
    """``merged`` with ``grid.archs`` (the pretrain stage's cells) derived from its
    ``grid.models`` when ``override`` changed the models but named no archs."""
    grid = override.get("grid", {})
    if "models" in grid and "archs" not in grid:
        merged["grid"]["archs"] = list(dict.fromkeys(m["arch"] for m in merged["grid"]["models"]))
    return merged


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a git + DVC repository holding a copy of this project's pipeline, with
    ``params.yaml`` = the repository's ``base`` params file (``params.yaml``, or e.g.
    ``params-paper.yaml``) deep-merged with ``params`` (a dict). Returns the project root."""

    def factory(params: dict | None = None, name: str = "project", base: str = "params.yaml") -> Path:
        root = tmp_path / name
        root.mkdir()
        for item in ("dvc.yaml", ".dvcignore", ".gitignore"):
            shutil.copy2(REPO / item, root / item)
        for folder in ("xiqa", "pipelines"):
            shutil.copytree(REPO / folder, root / folder,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        defaults = yaml.safe_load((REPO / base).read_text())
        merged = with_grid_archs(deep_merge(deep_merge(defaults, {"pretrain": TINY_PRETRAIN}), params or {}),
                                 params or {})
        (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
        run(root, "git", "init", "-q")
        run(root, str(BIN / "dvc"), "init", "-q")
        shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # dvc.yaml's plot template
        run(root, "git", "add", "-A")
        run(root, "git", "commit", "-qm", "init")
        return root

    return factory


_TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID",
                 "XIQA_PROJECT", "XIQA_TRACKING_RETRY_S", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")  # the last two: set by ensure_store for a server


@pytest.fixture(autouse=True)
def _no_external_tracking() -> Iterator[None]:
    """Tests never talk to a tracking server the developer may have configured, and none leaks
    into the next test: ``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, which
    ``monkeypatch.delenv`` of an unset variable would not undo (a later session fixture then
    built its store in the previous test's project)."""
    saved = {k: os.environ.pop(k) for k in _TRACKING_ENV if k in os.environ}
    yield
    for key in _TRACKING_ENV:
        os.environ.pop(key, None)
    os.environ.update(saved)
    # MLflow also keeps process globals that a later test of the same worker inherits:
    # ``set_experiment``'s active experiment (a ``start_run(run_id=...)`` in another experiment is
    # then refused). ``set_tracking_uri`` / ``set_registry_uri``'s globals (``ensure_store`` sets
    # both) stay, as module fixtures set them for their tests: a client of another store names
    # both URIs (``MlflowClient(url, registry_uri=url)``), or it searches the last project's registry
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is not None:
        while fluent.active_run() is not None:
            fluent.end_run()
        fluent._active_experiment_id = None


# --------------------------------------------------------------------------- team tracking server
SERVER_SCRIPT = REPO / "deploy" / "tracking-server.sh"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 (held open together, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class Server:
    """A running ``deploy/tracking-server.sh``: PostgreSQL, served artifacts, basic auth."""

    url: str
    user: str
    password: str
    folder: Path
    secret_key: str = ""

    @property
    def env(self) -> dict[str, str]:
        """What a client (a stage, ``xiqa``, a test) needs to use it."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": self.user,
                "MLFLOW_TRACKING_PASSWORD": self.password}

    def pids(self) -> list[int]:
        """The server's processes: PostgreSQL's postmaster and ``mlflow server`` with all their
        children (workers, uvicorn, PostgreSQL's backends)."""
        import psutil

        roots = [int((self.folder / "mlflow.pid").read_text())]
        postmaster = self.folder / "postgres" / "postmaster.pid"
        if postmaster.is_file():
            roots.append(int(postmaster.read_text().split()[0]))
        found = []
        for pid in roots:
            try:
                parent = psutil.Process(pid)
                found += [parent.pid, *(c.pid for c in parent.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        return found


def listening(pids: list[int]) -> list[tuple[str, int, str]]:
    """``(address, port, "<process name> <pid>")`` of every socket one of ``pids`` listens on."""
    import psutil

    wanted, found = set(pids), []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid in wanted and conn.status == psutil.CONN_LISTEN:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                name = "?"
            found.append((conn.laddr.ip, conn.laddr.port, f"{name} {conn.pid}"))
    return sorted(found)


def beyond_loopback(sockets: list[tuple[str, int, str]]) -> list[str]:
    """``"<process name> <pid> <address>:<port>"`` for each of ``sockets`` (:func:`listening`'s
    tuples) at a non-loopback address (``*``, 0.0.0.0, ``::``, an external interface);
    127.0.0.0/8, ::1 and ::ffff:127.0.0.1 (where Ray's gRPC servers bind) are loopback."""
    import ipaddress

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip.split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    return [f"{who} {ip}:{port}" for ip, port, who in sockets if not loopback(ip)]


def listening_beyond_loopback(pids: list[int]) -> list[str]:
    """:func:`beyond_loopback` of what ``pids`` listen on now."""
    return beyond_loopback(listening(pids))


@contextmanager
def tracking_server(password: str | None = None, restore: Path | None = None, **settings: str) -> Iterator[Server]:
    """Start the team server with the repository's own script on free ports, in a fresh folder
    (world-traversable: as root, PostgreSQL runs as the ``postgres`` user), with ``settings``
    added to its environment (``restore``: first restore that backup into the folder; then pass
    the backed-up server's admin ``password``); check that nothing of it listens beyond
    127.0.0.1; stop and delete it after. Fails, never skips, when it cannot start."""
    folder = Path(tempfile.mkdtemp(prefix="xiqa-server-"))
    folder.chmod(0o755)
    password = password or secrets.token_urlsafe(16)  # per server: the repository holds no password
    secret_key = secrets.token_hex(16)
    mlflow_port, pg_port = free_ports(2)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "XIQA_SERVER_PORT": str(mlflow_port), "XIQA_PG_PORT": str(pg_port),
           "XIQA_SERVER_AUTH": "1", "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
           "MLFLOW_AUTH_ADMIN_PASSWORD": password, "XIQA_SERVER_WORKERS": "2", **settings}
    if restore is not None:
        restored = subprocess.run(["bash", str(SERVER_SCRIPT), "restore", str(folder), str(restore)], env=env,
                                  text=True, capture_output=True, timeout=300)
        if restored.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.fail(f"restore failed (exit {restored.returncode}): {restored.stderr.strip()[-3000:]}",
                        pytrace=False)
    start = subprocess.run(["bash", str(SERVER_SCRIPT), "start", str(folder)], env=env, text=True,
                           capture_output=True, timeout=300)
    try:
        if start.returncode != 0:
            pytest.fail(f"the tracking server did not start (deploy/tracking-server.sh exited "
                        f"{start.returncode}): {start.stderr.strip()[-3000:]}", pytrace=False)
        server = Server(start.stdout.strip().splitlines()[-1], "admin", password, folder, secret_key)
        ports = {port for _, port, _ in listening(server.pids())}
        assert {mlflow_port, pg_port} <= ports, f"{sorted(ports)}: not the server's ports"
        beyond = listening_beyond_loopback(server.pids())
        assert not beyond, f"the test server listens beyond 127.0.0.1: {beyond}"
        yield server
    finally:
        subprocess.run(["bash", str(SERVER_SCRIPT), "stop", str(folder)], env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the files that hold a ``slow`` test first, each file's tests in their own order (the
    sort is stable). `make test` hands whole files to two workers (``--dist loadfile``); xdist's
    default queue puts the files with the most tests first, so the one-test end-to-end files ran
    last and were the suite's tail. pyproject's ``--no-loadscope-reorder`` keeps this order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
