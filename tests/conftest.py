"""Shared fixtures.

``prefect_server`` starts ONE real local Prefect server on SQLite for the whole test
session (a fresh server needs 10-25 s to become healthy) and yields its API URL; ``api``
is a PrefectApi connected to it.  ``postgres_server`` starts a second one on a private
PostgreSQL cluster (the system's PostgreSQL, installed when missing), and
``deploy_server`` is each of the two in turn: the tests that deploy, plan, prune and run
on a worker take it and run against both.  Every test that uses one of them (directly or
through another fixture) is marked ``e2e`` here, so ``pytest -m "not e2e"`` is the fast
lane that needs no server.  Async tests run on asyncio through anyio's pytest plugin:
mark them ``@pytest.mark.anyio``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import ensure_postgres_installed
from helpers import local_server as make_local_server

from deploy_lib.api import PrefectApi, health
from deploy_lib.models import MANAGED_BY_TAG
from deploy_lib.server import LocalPostgres, LocalServer

# A test that needs any of these needs the session's Prefect server.
SERVER_FIXTURES = frozenset(
    {"prefect_server_root", "local_server", "prefect_server", "api", "postgres_server",
     "deploy_server", "postgres_replica"}
)

# The session servers' URLs once each has started (by database): modules share them.
_STARTED: dict[str, str] = {}
# The PostgreSQL-backed server's database URL, for its replica.
_DATABASES: dict[str, str] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that reaches the session server through its fixtures."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def prefect_server_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project root whose ``.prefect/`` holds the session's server."""
    return tmp_path_factory.mktemp("prefect-server")


@pytest.fixture(scope="session")
def local_server(prefect_server_root: Path) -> Iterator[LocalServer]:
    """The session's running LocalServer (stopped when the session ends).  It takes any
    free port: 4200 may belong to a developer's own server or another test session."""
    # No scheduler (runs the tests did not ask for would load SQLite and the workers)
    # and no UI (nothing looks at it): test_server starts a full one of its own.
    server = make_local_server(
        prefect_server_root,
        preferred_port=0,
        ui=False,
        env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
             "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"},
    )
    _STARTED["sqlite"] = server.start(timeout=180)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API URL of a second real Prefect server, on PostgreSQL: a private cluster
    (the system's PostgreSQL, ``initdb`` in a temporary folder, loopback only, a free
    port) started for the session, as teams that outgrow SQLite run Prefect."""
    ensure_postgres_installed()
    root = tmp_path_factory.mktemp("prefect-postgres")
    server = make_local_server(
        root,
        preferred_port=0,
        ui=False,
        database="postgres",
        fast_database=True,
        env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
             "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false"},
    )
    _STARTED["postgres"] = server.start(timeout=180)
    _DATABASES["postgres"] = str(LocalPostgres(root).url)
    try:
        yield _STARTED["postgres"]
    finally:
        server.stop()
        shutil.rmtree(LocalPostgres(root).base, ignore_errors=True)  # its data: outside root as root


@pytest.fixture(scope="session")
def postgres_replica(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API URL of a second API process of the PostgreSQL-backed server: the same
    database, a port of its own, no services (a replica, as behind a load balancer)."""
    home = tmp_path_factory.mktemp("prefect-replica")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": _DATABASES["postgres"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port), "--no-services"]
    with (home / "server.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while not health(url):
            assert proc.poll() is None, (home / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the replica never became healthy"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def deploy_server(request: pytest.FixtureRequest) -> str:
    """The API URL of each real server in turn, SQLite then PostgreSQL: the tests that
    deploy, plan, prune and run on a worker take this one and run against both."""
    name = "prefect_server" if request.param == "sqlite" else "postgres_server"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def prefect_server(local_server: LocalServer) -> str:
    """The API URL (``http://127.0.0.1:PORT/api``) of the session's Prefect server."""
    url = local_server.url
    assert url is not None
    return url


@pytest.fixture
async def api(prefect_server: str) -> AsyncIterator[PrefectApi]:
    """A PrefectApi connected to the session's server (use from ``anyio`` tests), with
    one write in flight at a time as ``api.connect`` sets up for the SQLite server."""
    async with PrefectApi(prefect_server, max_writes=1) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def _no_managed_deployments_left_by_other_modules() -> None:
    """Each test module starts with no deployment managed by this tool on the shared
    server, so one module's leftovers never show up as another module's planned
    deletes.  Does nothing until some module has started the server."""
    async def clean(url: str) -> None:
        async with PrefectApi(url, max_writes=1) as client:
            for item in await client.list_deployments([MANAGED_BY_TAG]):
                await client.delete_deployment(str(item["id"]))

    for url in _STARTED.values():
        asyncio.run(clean(url))
