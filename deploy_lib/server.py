"""The project's embedded local Prefect server, the worker process, and which API an
environment talks to.

An environment with an empty ``api_url`` uses a Prefect server that runs on 127.0.0.1
with its state under ``<project>/.prefect/``:

    .prefect/server.json   {pid, port, url, started_at} of the running server
    .prefect/server.log    the server's stdout and stderr
    .prefect/prefect.db    its SQLite database (plus PREFECT_HOME files)
    .prefect/postgres/     or, with ``database="postgres"``, its PostgreSQL cluster

``LocalServer.start`` runs ``python -m prefect server start`` in its own session, records
its pid and waits for ``/api/health``; ``stop`` signals only that recorded pid, and only
while it still is a Prefect server on the recorded port.  A record whose process is gone
is removed when next read.  The scheduler and late-runs services are off: this server
exists to receive deployments and run them on demand, and scheduled runs would compete
with on-demand ones for the single SQLite writer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from deploy_lib.errors import ServerError, SettingsError
from deploy_lib.models import Settings

HOST = "127.0.0.1"
PREFERRED_PORT = 4200
HOME_DIR = ".prefect"
STATE_FILE = "server.json"
LOG_FILE = "server.log"
LOCK_FILE = "server.lock"
DB_FILE = "prefect.db"
LOG_TAIL_LINES = 20
# The databases the local server can run on: SQLite (a file under .prefect/) or a
# PostgreSQL cluster of the project's own.
DATABASES = ("sqlite", "postgres")

# Environment of the server process, besides PREFECT_HOME and the database URL: a real
# Prefect, whose scheduler turns schedules into runs and whose UI shows them.
SERVER_SETTINGS: Mapping[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "true",
}
_UI_SETTINGS = ("PREFECT_UI_ENABLED", "PREFECT_SERVER_UI_ENABLED")
# Inherited settings that would point the server somewhere else or at another profile.
_DROPPED_ENV = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")


@dataclass(frozen=True)
class ServerStatus:
    """What ``server.json`` records about the running server, plus whether it answers."""

    pid: int
    port: int
    url: str
    started_at: str
    healthy: bool
    # Where Prefect's UI answers (None when the server was started without it).
    ui_url: str | None = None
    # What it stores its data in: "sqlite" or "postgres".
    database: str = "sqlite"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The local servers this process started: running on purpose after their LocalServer is
# gone (see LocalServer._launch).
_DETACHED: list[subprocess.Popen[bytes]] = []


class Probe(Protocol):
    """How a starting server is polled over HTTP (``api.Probe``: one quick GET each, no
    retries).  Handed in, so this module runs processes and never speaks HTTP itself."""

    def health(self, url: str, timeout: float = 2.0) -> bool: ...

    def home(self, url: str) -> str | None: ...


class LocalServer:
    """The embedded Prefect server of the project at ``root``.

    ``env`` adds to (or overrides) the server's environment, for example
    ``{"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}``; ``ui=False`` starts it
    without Prefect's UI.  ``database="postgres"`` runs it on the project's own
    PostgreSQL cluster (``LocalPostgres``, started with it and stopped with it) instead
    of SQLite."""

    def __init__(
        self,
        root: Path | str,
        *,
        probe: Probe,
        env: Mapping[str, str] | None = None,
        preferred_port: int = PREFERRED_PORT,
        ui: bool = True,
        database: str = "sqlite",
        fast_database: bool = False,
    ) -> None:
        if database not in DATABASES:
            raise SettingsError(
                f"unknown local database {database!r}; choose one of: {', '.join(DATABASES)}",
                key="local_database",
            )
        self.database = database
        self.fast_database = fast_database
        self._database_url: str | None = None
        self.root = Path(root).resolve()
        self.home = self.root / HOME_DIR
        self.state_path = self.home / STATE_FILE
        self.log_path = self.home / LOG_FILE
        self.db_path = self.home / DB_FILE
        self.preferred_port = preferred_port
        self.probe = probe
        self._extra_env = dict(env or {})
        self.ui = ui
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalServer({str(self.root)!r})"

    @property
    def url(self) -> str | None:
        """The API URL of the running server, or None when none is recorded."""
        record = self._live_record()
        return record["url"] if record else None

    def start(
        self, timeout: float = 60.0, *, on_start: Callable[[str], None] | None = None
    ) -> str:
        """Start the server unless it already runs; return its API URL.  ``on_start``
        hears, before the wait, that a server is being started (it can take a while).

        Waits up to ``timeout`` seconds for ``/api/health`` (a fresh database takes the
        longest: its migrations run first).  ServerError, quoting the end of the log, when
        the server exits early or stays unhealthy; the process is then stopped."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self._lock():
            record = self._live_record()
            if record is not None:
                url = str(record["url"])
                try:
                    if not (self.probe.health(url) and self._is_ours(url)):
                        self._wait_healthy(record["pid"], url, timeout)
                    return url
                except _PortTaken:  # ours never got its port: replace it
                    self._terminate(record["pid"], grace=5.0)
                    self._remove_state()
            if self.database == "postgres":
                self._database_url = LocalPostgres(self.root, fast=self.fast_database).start(
                    timeout=timeout
                )
            try:
                port = _free_port(self.preferred_port)
                if on_start is not None:
                    on_start(
                        f"starting the local Prefect server at http://{HOST}:{port}/api "
                        f"(state under {self.home}); it keeps running: invoke server.stop"
                    )
                return self._launch(port, timeout)
            except _PortTaken:
                pass  # taken between the check and the bind: once more on another port
            try:
                return self._launch(_free_port(0), timeout)
            except _PortTaken as exc:
                raise ServerError(self._failure("could not bind its port", exc.port)) from None

    def stop(self, grace: float = 10.0) -> bool:
        """Stop the recorded server: SIGTERM, then SIGKILL after ``grace`` seconds.

        Signals only the recorded pid, and only while it is still a Prefect server on the
        recorded port (a recycled pid is left alone).  Removes ``server.json``.  Returns
        True when a running server was stopped, False when there was none."""
        if not self.home.is_dir():
            return False
        with self._lock():
            record = self._live_record()
            if record is None:
                return False
            self._terminate(record["pid"], grace=grace)
            self._remove_state()
            if record.get("database") == "postgres":
                LocalPostgres(self.root).stop()
            return True

    def recorded_database(self) -> str | None:
        """What the recorded server stores its data in ("sqlite" or "postgres"), read
        from ``server.json`` alone (no request); None when none is recorded."""
        record = self._read_state()
        return str(record.get("database") or "sqlite") if record else None

    def status(self) -> ServerStatus | None:
        """The recorded server and whether ``/api/health`` answers; None when it is not
        running (a stale record is removed)."""
        record = self._live_record()
        if record is None:
            return None
        return ServerStatus(
            pid=record["pid"],
            port=record["port"],
            url=record["url"],
            started_at=record["started_at"],
            healthy=self.probe.health(record["url"]) and self._is_ours(record["url"]),
            ui_url=f"http://{HOST}:{record['port']}" if record.get("ui") else None,
            database=str(record.get("database") or "sqlite"),
        )

    def server_env(self) -> dict[str, str]:
        """The environment the server process runs with."""
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env["PREFECT_HOME"] = str(self.home)
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = (
            self._database_url or f"sqlite+aiosqlite:///{self.db_path}"
        )
        env.update(SERVER_SETTINGS)
        env.update(dict.fromkeys(_UI_SETTINGS, "true" if self.ui else "false"))
        env.update(self._extra_env)
        return env

    def command(self, port: int) -> list[str]:
        """The command line that starts the server on ``port``."""
        return [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            HOST,
            "--port",
            str(port),
        ]

    # -- internals -------------------------------------------------------------------

    def _launch(self, port: int, timeout: float) -> str:
        """Spawn the server on ``port`` and wait until it is healthy; return its URL."""
        url = f"http://{HOST}:{port}/api"
        pid = self._spawn(port)
        try:
            self._wait_healthy(pid, url, timeout)
        except (_PortTaken, ServerError):
            self._terminate(pid, grace=5.0)
            self._remove_state()
            raise
        if self._proc is not None:
            # The server outlives this object by design (stop() finds it by its recorded
            # pid); keeping the handle stops Python warning that it is still running.
            _DETACHED.append(self._proc)
        return url

    def _spawn(self, port: int) -> int:
        try:
            with open(self.log_path, "wb") as log:
                proc = subprocess.Popen(
                    self.command(port),
                    cwd=self.root,
                    env=self.server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            raise ServerError(f"cannot start the local Prefect server: {exc}") from exc
        self._proc = proc
        self._write_state(
            {
                "pid": proc.pid,
                "port": port,
                "url": f"http://{HOST}:{port}/api",
                "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "ui": self.server_env().get("PREFECT_SERVER_UI_ENABLED") == "true",
                "database": self.database,
            }
        )
        return proc.pid

    def _wait_healthy(self, pid: int, url: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            if not self._alive(pid):
                port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
                tail = self._log_tail()
                if "already in use" in tail:
                    raise _PortTaken(port)
                raise ServerError(self._failure("exited during startup", port))
            if self.probe.health(url, timeout=2.0):
                if self._is_ours(url):
                    return
                # Another server took the port between our check and our bind.
                raise _PortTaken(int(url.rsplit(":", 1)[1].split("/", 1)[0]))
            if time.monotonic() >= end:
                raise ServerError(
                    f"the local Prefect server (pid {pid}) did not answer {url}/health "
                    f"within {timeout:g} s; {self._tail_text()}"
                )
            time.sleep(0.25)

    def _is_ours(self, url: str) -> bool:
        """False when the server answering at ``url`` keeps its state in another
        PREFECT_HOME (it took the port first); True when it is ours or cannot say."""
        home = self.probe.home(url)
        return home is None or Path(home).resolve() == self.home

    def _failure(self, what: str, port: int) -> str:
        code = self._proc.returncode if self._proc is not None else None
        exit_text = f" with exit code {code}" if code is not None else ""
        return f"the local Prefect server on port {port} {what}{exit_text}; {self._tail_text()}"

    def _tail_text(self) -> str:
        tail = self._log_tail()
        if not tail:
            return f"its log {self.log_path} is empty"
        return f"last lines of {self.log_path}:\n{tail}"

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _terminate(self, pid: int, *, grace: float) -> None:
        """SIGTERM ``pid``, SIGKILL it after ``grace`` seconds; wait until it is gone."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError as exc:
                raise ServerError(
                    f"not allowed to stop the local Prefect server (pid {pid})"
                ) from exc
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if not self._alive(pid):
                    return
                time.sleep(0.05)
        raise ServerError(f"the local Prefect server (pid {pid}) survived SIGKILL")

    def _alive(self, pid: int) -> bool:
        for proc in [self._proc, *_DETACHED]:
            if proc is not None and proc.pid == pid:
                if proc.poll() is None:  # polling a child of ours also reaps it
                    return True
                if proc in _DETACHED:
                    _DETACHED.remove(proc)
                return False
        return _pid_alive(pid)

    def _live_record(self) -> dict[str, Any] | None:
        """The recorded server if its process still runs as a Prefect server on the
        recorded port; otherwise None, and the stale record is removed."""
        record = self._read_state()
        if record is None:
            return None
        pid, port = record["pid"], record["port"]
        if self._alive(pid) and _is_prefect_server(pid, port):
            return record
        self._remove_state()
        return None

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._remove_state()
            return None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("pid"), int)
            and isinstance(data.get("port"), int)
            and isinstance(data.get("url"), str)
        ):
            self._remove_state()
            return None
        data.setdefault("started_at", "")
        return data

    def _write_state(self, record: Mapping[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dict(record), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_path)

    def _remove_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop of this project's server across processes."""
        with open(self.home / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _PortTaken(Exception):
    """The chosen port was taken between picking it and the server binding it."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.port = port


def resolve_api_url(
    settings: Settings,
    *,
    probe: Probe,
    start: bool = True,
    timeout: float = 60.0,
    on_start: Callable[[str], None] | None = None,
) -> str:
    """The Prefect API URL an environment talks to.

    ``settings.api_url`` when set; otherwise the project's embedded LocalServer, which is
    started when ``start`` is true.  ServerError when it is needed but not running."""
    url = settings.api_url.strip()
    if url:
        return url.rstrip("/")
    server = LocalServer(Path(settings.root), probe=probe)
    if start:
        return server.start(timeout=timeout, on_start=on_start)
    status = server.status()
    if status is None or not status.healthy:
        raise ServerError(
            f"environment {settings.env!r} sets no api_url, so it uses the local Prefect "
            f"server under {server.home}, which is not running; start it with "
            "`invoke server.start` or set api_url"
        )
    return status.url


def worker_command(
    settings: Settings,
    api_url: str,
    *,
    run_once: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a process worker for the environment's python
    work pool (``work_pool.python``), pointed at ``api_url`` (see ``resolve_api_url``)."""
    pool = settings.work_pool("python")
    if not pool:
        raise SettingsError("no work pool name for python deployments", key="work_pool.python")
    command = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
    ]
    if run_once:
        command.append("--run-once")
    worker_env = dict(os.environ)
    worker_env["PREFECT_API_URL"] = api_url
    api_key = settings.api_key
    if api_key:
        worker_env["PREFECT_API_KEY"] = api_key
    else:
        worker_env.pop("PREFECT_API_KEY", None)
    worker_env.update(env or {})
    return command, worker_env


def run_worker(
    settings: Settings,
    api_url: str,
    *,
    run_once: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run a process worker in the foreground until it exits; return its exit code.

    Ctrl-C and SIGTERM reach the worker as SIGINT (it stops promptly on SIGINT only)."""
    command, worker_env = worker_command(settings, api_url, run_once=run_once, env=env)
    proc = subprocess.Popen(command, cwd=Path(settings.root), env=worker_env)

    def forward(signum: int, frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        forward(signal.SIGINT, None)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there on 127.0.0.1, else a free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ServerError(f"no free TCP port on {HOST}")


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaping our own dead children)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []
    except OSError:
        return []
    else:
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return out.split()


def _is_prefect_server(pid: int, port: int) -> bool:
    """True when ``pid`` runs ``prefect server start`` on ``port`` (not a recycled pid)."""
    args = _command_line(pid)
    if not any(arg == "prefect" or arg.endswith("/prefect") for arg in args):
        return False
    joined = " ".join(args)
    return "server start" in joined and f"--port {port}" in joined


@contextlib.contextmanager
def background_worker(
    settings: Settings,
    api_url: str,
    *,
    log_path: Path | None = None,
    poll_seconds: int = 2,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A process worker for the environment's python pool, running for the ``with``
    block and stopped with SIGINT (the signal it obeys promptly) afterwards.

    The worker, and every flow run it starts, sees this process's environment plus
    ``env``.  Its output goes to ``log_path`` (default ``<root>/.prefect/worker.log``).
    """
    command, worker_env = worker_command(
        settings, api_url, env={"PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds), **(env or {})}
    )
    log = log_path or Path(settings.root) / ".prefect" / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=Path(settings.root), env=worker_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)



def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- a private PostgreSQL cluster for the local server ------------------------------------

POSTGRES_STATE = "postgres.json"
POSTGRES_USER = "prefect"
POSTGRES_DB = "prefect"
# The system account PostgreSQL runs as when this process is root (it refuses root).
POSTGRES_SYSTEM_USER = "postgres"
INSTALL_HINT = "install it from the system's packages: apt-get install -y postgresql"


class LocalPostgres:
    """A PostgreSQL cluster of the project's own: ``initdb`` once, then ``pg_ctl start``
    on 127.0.0.1 only, on a free port, with trust authentication for the ``prefect``
    user (nothing listens beyond loopback).  ``start`` returns the
    ``postgresql+asyncpg://`` URL a Prefect server takes; ``stop`` stops it.

    The cluster lives in ``<project>/.prefect/postgres/`` (``data/`` and ``postgres.log``;
    ``.prefect/postgres.json`` records its port).  PostgreSQL refuses to run as root: as
    root the cluster is the ``postgres`` account's, in a folder under the system's
    temporary directory named after the project (that account cannot enter a folder
    only root may), and each command runs through ``runuser``.  ``fast`` trades
    durability for speed (no fsync), for tests and benchmarks."""

    def __init__(self, root: Path | str, *, fast: bool = False) -> None:
        self.root = Path(root).resolve()
        self.home = self.root / HOME_DIR
        self.state_path = self.home / POSTGRES_STATE
        self.fast = fast
        self.as_root = os.geteuid() == 0
        if self.as_root:
            digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
            self.base = Path(tempfile.gettempdir()) / f"deploy-lib-postgres-{digest}"
        else:
            self.base = self.home / "postgres"
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"

    def __repr__(self) -> str:
        return f"LocalPostgres({str(self.root)!r})"

    @property
    def url(self) -> str | None:
        """The database URL of the running cluster, or None."""
        state = self._state()
        return _postgres_url(int(state["port"])) if state and self._running() else None

    def start(self, timeout: float = 60.0) -> str:
        """Initialise (once) and start the cluster unless it runs; its database URL.
        ServerError naming what failed (PostgreSQL missing, initdb, start), with the end
        of its log."""
        self.home.mkdir(parents=True, exist_ok=True)
        state = self._state()
        if state is not None and self._running():
            return _postgres_url(int(state["port"]))
        bindir = postgres_bindir()
        self._prepare_base()
        if not (self.data / "PG_VERSION").is_file():
            self._run(
                [str(bindir / "initdb"), "-D", str(self.data), "-U", POSTGRES_USER,
                 "-A", "trust", "-E", "UTF8", "--no-sync"],
                "initdb",
            )
        port = _free_port(0)
        # TCP on loopback only; no Unix socket (a deep project path is too long for one).
        options = f"-p {port} -c listen_addresses={HOST} -c unix_socket_directories=''"
        if self.fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            [str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w",
             "-t", str(int(timeout)), "-o", options, "start"],
            "start",
        )
        self.state_path.write_text(json.dumps({"port": port, "data": str(self.data)}))
        done = self._run(
            [str(bindir / "createdb"), "-h", HOST, "-p", str(port), "-U", POSTGRES_USER,
             POSTGRES_DB],
            "create the database",
            check=False,
        )
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise ServerError(f"cannot create database {POSTGRES_DB!r}: {done.stderr.strip()}")
        return _postgres_url(port)

    def stop(self) -> bool:
        """Stop the cluster (fast shutdown); False when it was not running."""
        if not self._running():
            self.state_path.unlink(missing_ok=True)
            return False
        self._run(
            [str(postgres_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            "stop",
        )
        self.state_path.unlink(missing_ok=True)
        return True

    # -- internals -------------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("port"), int) else None

    def _running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return False
        return _pid_alive(pid)

    def _prepare_base(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.as_root:
            import pwd

            try:
                account = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            except KeyError:
                raise ServerError(
                    f"PostgreSQL refuses to run as root and there is no "
                    f"{POSTGRES_SYSTEM_USER!r} account to run it as; {INSTALL_HINT}"
                ) from None
            os.chown(self.base, account.pw_uid, account.pw_gid)

    def _run(self, command: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", POSTGRES_SYSTEM_USER, "--", *command] if self.as_root else command
        try:
            done = subprocess.run(
                full, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
                check=False, cwd=self.base,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerError(f"PostgreSQL {what} failed: {exc}") from exc
        if check and done.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
            raise ServerError(
                f"PostgreSQL {what} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}" + (f"\n{tail}" if tail else "")
            )
        return done


def postgres_bindir() -> Path:
    """Where PostgreSQL's server programs (initdb, pg_ctl) are; ServerError with how to
    install it when they are nowhere."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        if done.returncode == 0:
            candidates.append(Path(done.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for found in candidates:
        if (found / "initdb").is_file() and (found / "pg_ctl").is_file():
            return found
    raise ServerError(f"PostgreSQL's server programs (initdb, pg_ctl) are not installed; {INSTALL_HINT}")


def _postgres_url(port: int) -> str:
    return f"postgresql+asyncpg://{POSTGRES_USER}@{HOST}:{port}/{POSTGRES_DB}"
