"""Shared fixtures.

``prefect_server`` starts ONE real local Prefect server for the whole test session (a
fresh SQLite server needs 10-25 s to become healthy) and yields its API URL; ``api`` is
a PrefectApi connected to it.  Every test that uses one of them (directly or through
another fixture) is marked ``e2e`` here, so ``pytest -m "not e2e"`` is the fast lane
that needs no server.  Async tests run on asyncio through anyio's pytest plugin: mark
them ``@pytest.mark.anyio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import local_server as make_local_server

from deploy_lib.api import PrefectApi
from deploy_lib.models import MANAGED_BY_TAG
from deploy_lib.server import LocalServer

# A test that needs any of these needs the session's Prefect server.
SERVER_FIXTURES = frozenset({"prefect_server_root", "local_server", "prefect_server", "api"})

# The session server's URL once it has started (None before): modules share it.
_STARTED: dict[str, str] = {}


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
    _STARTED["url"] = server.start(timeout=180)
    try:
        yield server
    finally:
        server.stop()


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
    url = _STARTED.get("url")
    if url is None:
        return

    async def clean() -> None:
        async with PrefectApi(url, max_writes=1) as client:
            for item in await client.list_deployments([MANAGED_BY_TAG]):
                await client.delete_deployment(str(item["id"]))

    asyncio.run(clean())
