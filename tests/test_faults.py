"""Faults: a server killed in the middle of a deploy, and transient failures at the HTTP
edge.

* A separate local Prefect server (its own project, since the test kills it) receives a
  deploy of 200 generated flows; its process is killed with SIGKILL part-way, restarted
  on the same database, and deploy runs again: the server ends up holding exactly the
  200 desired deployments, and a third deploy changes nothing.
* ``httpx`` transports that fail on purpose (``MockTransport``, or one that wraps the
  real transport to the session server) and two small loopback servers (one never
  answers, one trickles its answer) prove that retries are bounded in number and time
  and that every request has a timeout: nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import cli_env, invoke, local_server

from deploy_lib import pipeline
from deploy_lib.api import PrefectApi
from deploy_lib.apply import CREATED, FAILED, SKIPPED
from deploy_lib.errors import (
    ApiServerError,
    ApiUnreachable,
    DeadlinePassed,
    DeployError,
    PartialFailure,
)
from deploy_lib.models import MANAGED_BY_TAG
from deploy_lib.server import LocalServer
from deploy_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
ENV = "development"


# -- a project of generated flows ------------------------------------------------------------


def generated_project(root: Path, count: int, prefix: str) -> list[str]:
    """A project (the repository's settings.toml, templates and tasks.py) whose flows/
    holds ``count`` small generated flows named ``<prefix>-000``...; returns the names."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("settings.toml", "tasks.py"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "templates", root / "templates")
    flows = root / "flows"
    flows.mkdir()
    names = []
    for i in range(count):
        name = f"{prefix}-{i:03d}"
        (flows / f"flow_{i:03d}.py").write_text(
            "from prefect import flow\n\n\n"
            f'@flow(name="{name}")\n'
            f"def flow_{i:03d}(rows: int = {i}) -> int:\n"
            '    """A generated flow."""\n'
            "    return rows\n",
            encoding="utf-8",
        )
        names.append(name)
    return names


async def create_pool(url: str, name: str) -> None:
    async with PrefectApi(url, max_writes=1) as api:
        await api.create_work_pool(name, "process")


async def managed(url: str) -> list[dict[str, Any]]:
    async with PrefectApi(url) as api:
        return await api.list_deployments([MANAGED_BY_TAG, f"env:{ENV}"])


# -- (a) the server killed in the middle of deploying 200 deployments ------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A local server of its own (the test kills it), under the generated project."""
    server = local_server(tmp_path / "project", preferred_port=0)
    yield server
    server.stop()


@pytest.mark.e2e
@pytest.mark.slow
def test_a_server_killed_mid_deploy_converges_on_the_next_run(
    tmp_path: Path, own_server: LocalServer
) -> None:
    root = tmp_path / "project"
    names = generated_project(root, 200, "killed")
    url = own_server.start(timeout=180)
    pool = "faults-process"
    asyncio.run(create_pool(url, pool))
    # api_url stays empty: the project's own embedded server, which is own_server.
    extra_env = {"DEPLOY_WORK_POOL__PYTHON": pool, "DEPLOY_DEPLOYMENT_TYPES": '["python"]'}
    env = cli_env(extra_env)

    def deploy(*extra: str) -> subprocess.CompletedProcess[str]:
        return invoke(root, "deploy", *extra, env=extra_env, timeout=600)

    first = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Kill the server once some deployments exist, while the rest are being written.
        deadline = time.monotonic() + 300
        while len(asyncio.run(managed(url))) < 30:
            assert first.poll() is None, f"deploy ended before the kill: {first.communicate()[0]}"
            assert time.monotonic() < deadline, "no deployments appeared"
            time.sleep(0.2)
        status = own_server.status()
        assert status is not None
        os.kill(status.pid, signal.SIGKILL)
        output, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode in (1, 4), output
    assert "Traceback" not in output
    assert "could not be reached" in output or "cannot connect" in output, output

    # Restart on the same .prefect/ database, then deploy again.
    url = local_server(root, preferred_port=0).start(timeout=180)
    survived = {d["flow_name"] for d in asyncio.run(managed(url))}
    assert 30 <= len(survived) < 200, "the kill must land in the middle of the deploy"
    second = deploy()
    assert second.returncode == 0, second.stdout + second.stderr

    final = asyncio.run(managed(url))
    pairs = [(d["flow_name"], d["name"]) for d in final]
    assert len(pairs) == len(set(pairs)) == 200, "no duplicates"
    assert sorted(pairs) == sorted((name, name) for name in names), "nothing missing"

    third = deploy("--json")
    assert third.returncode == 0, third.stdout + third.stderr
    summary = json.loads(third.stdout)["summary"]
    assert summary["unchanged"] == 200
    assert summary["created"] == summary["updated"] == summary["failed"] == 0


# -- (b) transient faults at the HTTP edge ---------------------------------------------------


class Counting:
    """A MockTransport handler: ``answer(request, attempt)`` per request, counted."""

    def __init__(self, answer: Callable[[httpx.Request, int], Awaitable[httpx.Response]]) -> None:
        self.answer = answer
        self.attempts = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await self.answer(request, self.attempts)

    def api(self, **options: Any) -> PrefectApi:
        options.setdefault("backoff", 0.01)
        options.setdefault("backoff_cap", 0.05)
        return PrefectApi("http://prefect.test/api", transport=httpx.MockTransport(self), **options)


@pytest.mark.anyio
async def test_a_persisting_503_is_tried_retries_plus_one_times_then_named() -> None:
    async def busy(request: httpx.Request, attempt: int) -> httpx.Response:
        return httpx.Response(503, json={"exception_message": "Service Unavailable"})

    handler = Counting(busy)
    started = time.monotonic()
    async with handler.api(retries=4) as api:
        with pytest.raises(ApiServerError) as caught:
            await api.read_work_pool("pool-a")
    assert handler.attempts == 5
    assert time.monotonic() - started < 2
    assert "HTTP 503 from http://prefect.test/api/work_pools/pool-a" in str(caught.value)
    assert "after 5 attempts" in str(caught.value)


@pytest.mark.anyio
async def test_retrying_stops_at_the_deadline_whatever_the_retry_count() -> None:
    async def busy(request: httpx.Request, attempt: int) -> httpx.Response:
        return httpx.Response(503, text="busy")

    handler = Counting(busy)
    started = time.monotonic()
    async with handler.api(retries=1000, backoff=0.1, backoff_cap=0.1, deadline=0.8) as api:
        with pytest.raises(ApiServerError, match="busy after"):
            await api.read_work_pool("pool-a")
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, elapsed
    assert 2 <= handler.attempts <= 17


@pytest.mark.anyio
async def test_a_refused_connection_is_unreachable_after_bounded_attempts_and_time() -> None:
    async def refuse(request: httpx.Request, attempt: int) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    handler = Counting(refuse)
    started = time.monotonic()
    async with handler.api(retries=3) as api:
        with pytest.raises(ApiUnreachable) as caught:
            await api.list_deployments()
    assert handler.attempts == 4
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert "cannot connect (Connection refused) after 4 attempts" in message
    assert "is the server running?" in message


@pytest.mark.anyio
async def test_a_transport_slower_than_the_timeout_is_cut_off_every_attempt() -> None:
    """The handler sleeps far longer than the timeout: each attempt is abandoned at the
    timeout, so the call ends after (retries + 1) timeouts instead of hanging."""

    async def stall(request: httpx.Request, attempt: int) -> httpx.Response:
        await asyncio.sleep(60)
        return httpx.Response(200, json={})

    handler = Counting(stall)
    started = time.monotonic()
    async with handler.api(timeout=0.3, retries=2) as api:
        with pytest.raises(ApiUnreachable) as caught:
            await api.read_work_pool("pool-a")
    elapsed = time.monotonic() - started
    assert handler.attempts == 3
    assert 0.9 <= elapsed < 3, elapsed
    assert "no answer in time (ReadTimeout) after 3 attempts" in str(caught.value)


@pytest.mark.anyio
async def test_a_run_creation_that_timed_out_is_not_sent_twice() -> None:
    """A POST that may have reached the server is not repeated (it could start two runs)."""

    async def stall(request: httpx.Request, attempt: int) -> httpx.Response:
        await asyncio.sleep(60)
        return httpx.Response(201, json={"id": "run"})

    handler = Counting(stall)
    async with handler.api(timeout=0.3, retries=5) as api:
        with pytest.raises(ApiUnreachable, match="after 1 attempt "):
            await api.create_flow_run("deployment-id")
    assert handler.attempts == 1


class _LoopbackServer:
    """A TCP server on 127.0.0.1 in a thread; ``serve(conn, stop)`` handles each client."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]) -> None:
        self._serve = serve
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/api"
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._loop, daemon=True)
        self._accept.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client gave up: that is the point
            self._serve(conn, self._stop)

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    stop.wait(30)


def _trickle(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(65536)
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    while not stop.wait(0.05):
        conn.sendall(b" ")  # a byte well within httpx's read timeout, forever


@pytest.mark.parametrize(
    "serve",
    [
        pytest.param(_silent, id="a server that accepts and never answers"),
        pytest.param(_trickle, id="a server that trickles its answer one byte at a time"),
    ],
)
@pytest.mark.anyio
async def test_a_real_server_that_does_not_finish_its_answer_times_out(
    serve: Callable[[socket.socket, threading.Event], None],
) -> None:
    server = _LoopbackServer(serve)
    started = time.monotonic()
    try:
        async with PrefectApi(
            server.url, timeout=0.5, retries=1, backoff=0.01, backoff_cap=0.05
        ) as api:
            with pytest.raises(ApiUnreachable) as caught:
                await api.read_work_pool("pool-a")
    finally:
        server.close()
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    assert "no answer in time" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)


# -- a fault-injecting transport over the session's real server ------------------------------


Policy = Callable[[httpx.Request], Awaitable[httpx.Response | None]]


class FaultTransport(httpx.AsyncBaseTransport):
    """Forwards to the real server through httpx's own transport, unless ``policy``
    answers (or raises) first.  ``writes`` counts the deployment writes that went
    through to the server, ``written`` those the server took (a 2xx answer: the shared
    SQLite server may itself answer 503 when busy, and the client then retries)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.inner = httpx.AsyncHTTPTransport()
        self.writes = 0
        self.written = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = await self.policy(request)
        if answer is not None:
            return answer
        if not is_deployment_write(request):
            return await self.inner.handle_async_request(request)
        self.writes += 1
        response = await self.inner.handle_async_request(request)
        if response.status_code < 300:
            self.written += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def is_deployment_write(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.rstrip("/").endswith("/api/deployments")


@pytest.fixture
def small_project(tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Six generated flows, prepared for the development env of the session server."""
    token = uuid.uuid4().hex[:6]
    names = generated_project(tmp_path / "project", 6, f"edge-{token}")
    pool = "faults-edge-process"

    async def ensure_pool() -> None:
        async with PrefectApi(prefect_server, max_writes=1) as api:
            if await api.read_work_pool(pool) is None:
                await api.create_work_pool(pool, "process")

    asyncio.run(ensure_pool())
    monkeypatch.setenv("DEPLOY_API_URL", prefect_server)
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", pool)
    monkeypatch.setenv("DEPLOY_DEPLOYMENT_TYPES", '["python"]')
    prepared = pipeline.prepare(load_settings(ENV, tmp_path / "project"))
    assert [s.flow.name for s in prepared.specs] == names
    yield prepared

    async def cleanup() -> None:
        async with PrefectApi(prefect_server, max_writes=1) as api:
            for item in await api.list_deployments([MANAGED_BY_TAG, f"env:{ENV}"]):
                if item["flow_name"] in names:
                    await api.delete_deployment(item["id"])

    asyncio.run(cleanup())


@pytest.mark.e2e
def test_every_first_write_answered_503_still_deploys_everything(
    small_project: Any, prefect_server: str
) -> None:
    seen: set[str] = set()
    injected = 0

    async def first_write_busy(request: httpx.Request) -> httpx.Response | None:
        nonlocal injected
        if is_deployment_write(request):
            name = json.loads(request.content)["name"]
            if name not in seen:
                seen.add(name)
                injected += 1
                return httpx.Response(503, json={"exception_message": "database is locked"})
        return None

    transport = FaultTransport(first_write_busy)

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(
            prefect_server, max_writes=1, backoff=0.01, backoff_cap=0.05, transport=transport
        ) as api:
            return await pipeline.deploy_prepared(api, small_project, concurrency=3)

    outcome = asyncio.run(go())
    assert outcome.result is not None
    assert [r.status for r in outcome.result.results] == [CREATED] * 6
    assert injected == 6 and transport.written == 6, "each write: one 503, one success"
    outcome.result.raise_if_failed()


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_apply_starts_no_more_writes_and_says_how_far_it_got(
    small_project: Any, prefect_server: str, signum: signal.Signals
) -> None:
    """The signal arrives while the first write is on its way: it lands, nothing more is
    started, and the outcome says so, with the exit code of the signal."""

    async def signal_on_first_write(request: httpx.Request) -> httpx.Response | None:
        if is_deployment_write(request) and transport.writes == 0:
            os.kill(os.getpid(), signum)
        return None

    transport = FaultTransport(signal_on_first_write)
    before = signal.getsignal(signum)

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(prefect_server, max_writes=1, transport=transport) as api:
            return await pipeline.deploy_prepared(api, small_project, concurrency=1)

    outcome = asyncio.run(go())
    assert outcome.result is not None
    assert [r.status for r in outcome.result.results] == [CREATED] + [SKIPPED] * 5
    assert transport.written == 1
    stopped = outcome.interruption()
    assert stopped is not None
    assert stopped.exit_code == (143 if signum == signal.SIGTERM else 130)
    assert str(stopped).startswith(
        f"interrupted by {signum.name} after 1 of 6 write(s); the rest were not started"
    )
    assert signal.getsignal(signum) == before, "the handler in place before is back"
    live = {d["flow_name"] for d in asyncio.run(managed(prefect_server))}
    assert len(live & {s.flow.name for s in small_project.specs}) == 1


@pytest.mark.e2e
def test_a_deadline_that_passes_mid_apply_starts_no_more_writes_and_exits_4(
    small_project: Any, prefect_server: str
) -> None:
    """Each write takes half a second; the deadline comes after about three."""

    async def slow_writes(request: httpx.Request) -> httpx.Response | None:
        if is_deployment_write(request):
            await asyncio.sleep(0.5)
        return None

    transport = FaultTransport(slow_writes)

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(prefect_server, max_writes=1, transport=transport) as api:
            until = time.monotonic() + 1.5
            return await pipeline.deploy_prepared(
                api, small_project, concurrency=1, deadline=until
            )

    outcome = asyncio.run(go())
    assert outcome.result is not None
    statuses = [r.status for r in outcome.result.results]
    done = statuses.count(CREATED)
    assert 1 <= done <= 5 and statuses == [CREATED] * done + [SKIPPED] * (6 - done)
    stopped = outcome.interruption()
    assert stopped is not None and stopped.exit_code == 4
    assert str(stopped).startswith(f"the deadline passed after {done} of 6 write(s)")


@pytest.mark.e2e
def test_a_deadline_passed_before_the_apply_writes_nothing(
    small_project: Any, prefect_server: str
) -> None:
    transport = FaultTransport(lambda request: asyncio.sleep(0, None))

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(prefect_server, max_writes=1, transport=transport) as api:
            return await pipeline.deploy_prepared(
                api, small_project, deadline=time.monotonic() - 1
            )

    with pytest.raises(DeadlinePassed, match="before the first write; nothing was written"):
        asyncio.run(go())
    assert transport.writes == 0


@pytest.mark.e2e
def test_a_server_that_goes_away_mid_apply_fails_the_rest_quickly(
    small_project: Any, prefect_server: str
) -> None:
    """After two deployments are written the server stops answering: the writes in flight
    use up their bounded retries, the others are not attempted, and the error says both."""
    refused = 0

    async def gone_after_two(request: httpx.Request) -> httpx.Response | None:
        nonlocal refused
        # Counted by what the server took: a busy SQLite server may answer a write 503
        # first (the client retries), and that attempt must not count as one of the two.
        if transport.written >= 2:
            refused += 1
            raise httpx.ConnectError("Connection refused", request=request)
        return None

    transport = FaultTransport(gone_after_two)

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(
            prefect_server,
            max_writes=1,
            retries=3,
            backoff=0.01,
            backoff_cap=0.05,
            transport=transport,
        ) as api:
            return await pipeline.deploy_prepared(api, small_project, concurrency=1)

    started = time.monotonic()
    outcome = asyncio.run(go())
    assert time.monotonic() - started < 10
    assert outcome.result is not None
    statuses = [r.status for r in outcome.result.results]
    assert statuses == [CREATED, CREATED] + [FAILED] * 4
    assert refused == 4, "one write tried retries + 1 times; the other three never sent"
    errors = [r.error or "" for r in outcome.result.failed]
    assert "cannot connect (Connection refused) after 4 attempts" in errors[0]
    assert all(
        e.startswith("not attempted: the Prefect API could not be reached") for e in errors[1:]
    )
    with pytest.raises(PartialFailure) as caught:
        outcome.result.raise_if_failed()
    assert caught.value.exit_code == 4
    assert "4 of 6 deployment(s) failed in env 'development'; the other 2 were applied" in str(
        caught.value
    )


@pytest.mark.e2e
def test_when_every_write_fails_nothing_is_partial_and_the_exit_code_is_1(
    small_project: Any, prefect_server: str
) -> None:
    async def always_busy(request: httpx.Request) -> httpx.Response | None:
        if is_deployment_write(request):
            return httpx.Response(503, json={"exception_message": "Service Unavailable"})
        return None

    transport = FaultTransport(always_busy)

    async def go() -> pipeline.DeployOutcome:
        async with PrefectApi(
            prefect_server,
            max_writes=1,
            retries=1,
            backoff=0.01,
            backoff_cap=0.05,
            transport=transport,
        ) as api:
            return await pipeline.deploy_prepared(api, small_project, concurrency=2)

    outcome = asyncio.run(go())
    assert outcome.result is not None
    assert outcome.result.counts[FAILED] == 6
    with pytest.raises(DeployError) as caught:
        outcome.result.raise_if_failed()
    assert not isinstance(caught.value, PartialFailure)
    assert caught.value.exit_code == 1
    assert "6 of 6 deployment(s) failed in env 'development'; nothing was written" in str(
        caught.value
    )
    assert "HTTP 503" in str(caught.value)
