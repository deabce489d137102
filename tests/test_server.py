"""deploy_lib.server: the embedded local Prefect server, resolving an environment's API,
and the worker command.  The e2e tests share the session's server (see conftest.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy_lib.api import Probe, health, server_home
from deploy_lib.errors import ServerError, SettingsError
from deploy_lib.models import Settings
from deploy_lib.server import (
    LocalServer,
    ServerStatus,
    _free_port,
    resolve_api_url,
    worker_command,
)

PROBE = Probe()


def settings(root: Path, **data: Any) -> Settings:
    base: dict[str, Any] = {
        "api_url": "",
        "work_pool": {"python": "dev-pool", "docker": "dev-docker"},
    }
    base.update(data)
    return Settings(env="development", root=root, data=base)


def write_record(root: Path, pid: int, port: int = 4999) -> Path:
    home = root / ".prefect"
    home.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "port": port, "url": f"http://127.0.0.1:{port}/api", "started_at": "x"}
    path = home / "server.json"
    path.write_text(json.dumps(record))
    return path


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not a Prefect server."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- the session's server ----------------------------------------------------------


@pytest.mark.e2e
def test_start_again_returns_the_running_server_without_a_new_process(
    local_server: LocalServer, prefect_server_root: Path
) -> None:
    before = local_server.status()
    assert before is not None
    started = time.monotonic()
    url = LocalServer(prefect_server_root, probe=PROBE).start()
    assert time.monotonic() - started < 5
    after = local_server.status()
    assert url == before.url and after is not None and after.pid == before.pid


@pytest.mark.e2e
def test_status_reports_the_recorded_server_as_healthy(
    local_server: LocalServer, prefect_server_root: Path, prefect_server: str
) -> None:
    status = local_server.status()
    assert isinstance(status, ServerStatus)
    assert status.healthy is True
    assert status.url == prefect_server == f"http://127.0.0.1:{status.port}/api"
    assert dt.datetime.fromisoformat(status.started_at).tzinfo is not None
    record = json.loads((prefect_server_root / ".prefect" / "server.json").read_text())
    assert record == {
        **{k: v for k, v in status.to_dict().items() if k not in ("healthy", "ui_url")},
        "ui": False,  # the session's server runs without the UI
    }
    assert status.ui_url is None
    assert local_server.url == prefect_server


@pytest.mark.e2e
def test_server_keeps_its_home_and_database_under_the_project(
    prefect_server: str, prefect_server_root: Path
) -> None:
    home = prefect_server_root / ".prefect"
    assert server_home(prefect_server) == str(home)
    assert (home / "prefect.db").is_file()
    assert (home / "server.log").is_file()
    assert health(prefect_server) is True


@pytest.mark.e2e
def test_resolve_api_url_uses_the_running_local_server_when_api_url_is_empty(
    prefect_server: str, prefect_server_root: Path
) -> None:
    assert resolve_api_url(settings(prefect_server_root), probe=PROBE, start=False) == prefect_server


@pytest.mark.e2e
def test_worker_command_targets_the_python_pool_on_the_environments_api(
    prefect_server: str, prefect_server_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_KEY", "stale-key-from-the-shell")
    command, env = worker_command(settings(prefect_server_root), prefect_server, run_once=True)
    assert command[0] == sys.executable
    assert command[1:] == [
        "-m", "prefect", "worker", "start", "--pool", "dev-pool", "--type", "process", "--run-once",
    ]  # fmt: skip
    assert env["PREFECT_API_URL"] == prefect_server
    assert "PREFECT_API_KEY" not in env

    keyed = settings(prefect_server_root, api_key="cloud-key-1234")
    _, env = worker_command(keyed, prefect_server, env={"PREFECT_WORKER_QUERY_SECONDS": "1"})
    assert env["PREFECT_API_KEY"] == "cloud-key-1234"
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "1"


@pytest.mark.e2e
@pytest.mark.slow
def test_full_lifecycle_start_status_stop_on_a_second_project(
    tmp_path: Path,
    prefect_server: str,  # started, so its database exists to be copied
    prefect_server_root: Path,
    bystander: subprocess.Popen[bytes],
) -> None:
    # Seed the database from the session's server so the migrations need not run again.
    (tmp_path / ".prefect").mkdir()
    source = sqlite3.connect(prefect_server_root / ".prefect" / "prefect.db")
    target = sqlite3.connect(tmp_path / ".prefect" / "prefect.db")
    with source, target:
        source.backup(target)
    source.close()
    target.close()
    server = LocalServer(tmp_path, probe=PROBE, preferred_port=0)

    said: list[str] = []
    url = server.start(timeout=180, on_start=said.append)
    status = server.status()
    assert status is not None and status.healthy and status.url == url
    # A real Prefect: its UI answers beside the API, and its scheduler is on.
    assert status.ui_url == url.removesuffix("/api")
    page = httpx.get(status.ui_url, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert server.server_env()["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] == "true"
    assert said == [
        f"starting the local Prefect server at {url} (state under {tmp_path / '.prefect'}); "
        "it keeps running: invoke server.stop"
    ]
    assert server_home(url) == str(tmp_path / ".prefect")
    again: list[str] = []
    assert LocalServer(tmp_path, probe=PROBE).start(on_start=again.append) == url, (
        "a second start finds the running server"
    )
    assert again == [], "nothing is started, so nothing is said"

    assert server.stop() is True
    assert pid_gone(status.pid)
    assert not (tmp_path / ".prefect" / "server.json").exists()
    assert server.status() is None and server.url is None
    assert health(url, timeout=0.5) is False
    assert server.stop() is False
    assert bystander.poll() is None, "only the recorded pid is signalled"


# -- records, pids and failures ----------------------------------------------------


def test_stale_record_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = write_record(tmp_path, dead.pid)
    server = LocalServer(tmp_path, probe=PROBE)
    assert server.status() is None
    assert not record.exists()
    write_record(tmp_path, dead.pid)
    assert server.url is None
    write_record(tmp_path, dead.pid)
    assert server.stop() is False
    assert not record.exists()


def test_stop_leaves_a_recycled_pid_alone(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    record = write_record(tmp_path, bystander.pid)
    assert LocalServer(tmp_path, probe=PROBE).stop() is False
    time.sleep(0.2)
    assert bystander.poll() is None, "a process that is not our server is never signalled"
    assert not record.exists()


def test_corrupt_record_is_treated_as_no_server(tmp_path: Path) -> None:
    record = write_record(tmp_path, 1)
    record.write_text("{not json")
    assert LocalServer(tmp_path, probe=PROBE).status() is None
    assert not record.exists()


def test_stop_without_a_server_creates_nothing(tmp_path: Path) -> None:
    assert LocalServer(tmp_path, probe=PROBE).stop() is False
    assert not (tmp_path / ".prefect").exists()


def test_resolve_api_url_prefers_the_configured_url_and_starts_nothing(tmp_path: Path) -> None:
    remote = settings(tmp_path, api_url="https://prefect.example.com/api/")
    assert resolve_api_url(remote, probe=PROBE) == "https://prefect.example.com/api"
    assert not (tmp_path / ".prefect").exists()


def test_resolve_api_url_without_a_running_local_server_says_how_to_start_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(ServerError) as caught:
        resolve_api_url(settings(tmp_path), probe=PROBE, start=False)
    message = str(caught.value)
    assert "environment 'development' sets no api_url" in message
    assert str(tmp_path.resolve() / ".prefect") in message and "invoke server.start" in message


def test_worker_command_needs_a_python_pool_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"key 'work_pool\.python': no work pool name"):
        worker_command(settings(tmp_path, work_pool={}), "http://127.0.0.1:9/api")


def test_server_env_isolates_the_server_in_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:4200/api")
    monkeypatch.setenv("PREFECT_API_KEY", "not-for-the-server")
    server = LocalServer(tmp_path, probe=PROBE, env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"})
    env = server.server_env()
    assert env["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        f"sqlite+aiosqlite:///{tmp_path.resolve() / '.prefect' / 'prefect.db'}"
    )
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED"] == "true"
    assert env["PREFECT_SERVER_UI_ENABLED"] == env["PREFECT_UI_ENABLED"] == "true"
    assert env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] == "false", "env= overrides"
    without_ui = LocalServer(tmp_path, probe=PROBE, ui=False).server_env()
    assert without_ui["PREFECT_SERVER_UI_ENABLED"] == "false"
    assert "PREFECT_API_URL" not in env and "PREFECT_API_KEY" not in env
    assert server.command(4321)[-4:] == ["--host", "127.0.0.1", "--port", "4321"]


def test_free_port_prefers_the_given_port_and_avoids_a_busy_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        other = _free_port(taken)
        assert other != taken and other > 0
    assert _free_port(taken) == taken


def test_start_that_times_out_stops_the_process_and_says_so(tmp_path: Path) -> None:
    server = LocalServer(tmp_path, probe=PROBE, preferred_port=0)
    with pytest.raises(ServerError) as caught:
        server.start(timeout=0.5)
    message = str(caught.value)
    assert re.search(
        r"\(pid \d+\) did not answer http://127\.0\.0\.1:\d+/api/health within 0\.5 s", message
    )
    pid = int(re.search(r"pid (\d+)", message).group(1))  # type: ignore[union-attr]
    assert pid_gone(pid)
    assert not (tmp_path / ".prefect" / "server.json").exists()
    assert server.status() is None


@pytest.mark.slow
def test_server_that_exits_during_startup_quotes_the_end_of_its_log(tmp_path: Path) -> None:
    server = LocalServer(
        tmp_path, probe=PROBE, preferred_port=0, env={"PREFECT_SERVER_LOGGING_LEVEL": "NOT-A-LEVEL"}
    )
    with pytest.raises(ServerError) as caught:
        server.start(timeout=120)
    message = str(caught.value)
    assert "exited during startup with exit code 1" in message
    assert f"last lines of {tmp_path.resolve() / '.prefect' / 'server.log'}" in message
    assert "NOT-A-LEVEL" in message
    assert not (tmp_path / ".prefect" / "server.json").exists()


# -- the local server on PostgreSQL ---------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_a_private_postgres_cluster_starts_once_takes_connections_and_stops(tmp_path: Path) -> None:
    import asyncio

    import asyncpg
    from helpers import ensure_postgres_installed

    from deploy_lib.server import LocalPostgres

    ensure_postgres_installed()
    cluster = LocalPostgres(tmp_path / "project", fast=True)
    url = cluster.start()
    try:
        assert re.fullmatch(r"postgresql\+asyncpg://prefect@127\.0\.0\.1:\d+/prefect", url)
        assert cluster.start() == url == cluster.url  # already running: the same one

        async def select_one() -> Any:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return await conn.fetchval("select 1")
            finally:
                await conn.close()

        assert asyncio.run(select_one()) == 1
    finally:
        assert cluster.stop() is True
    assert cluster.stop() is False
    assert cluster.url is None
    shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.slow
def test_server_start_with_postgres_runs_prefect_on_its_own_cluster(tmp_path: Path) -> None:
    from helpers import ensure_postgres_installed, invoke, make_project

    ensure_postgres_installed()
    root = make_project(tmp_path / "project")
    try:
        started = invoke(root, "server.start", "--no-ui", "--database", "postgres", timeout=240)
        assert started.returncode == 0, started.stderr
        assert ", healthy, on postgres" in started.stdout
        status = json.loads(invoke(root, "server.status", "--json").stdout)
        assert status["database"] == "postgres" and status["healthy"] is True
        assert health(status["url"])
    finally:
        stopped = invoke(root, "server.stop")
    assert stopped.stdout.strip() == "local Prefect server stopped"
    from deploy_lib.server import LocalPostgres

    assert LocalPostgres(root).url is None  # its cluster stopped with it
    shutil.rmtree(LocalPostgres(root).base, ignore_errors=True)
    bad = invoke(root, "server.start", "--database", "mysql")
    assert bad.returncode == 3 and "unknown local database 'mysql'" in bad.stderr
    assert "Traceback" not in bad.stderr
