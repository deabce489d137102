"""deploy_lib.api against a real local Prefect server (e2e) and, for the faults a healthy
server will not produce on demand, against an httpx.MockTransport at the HTTP edge."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from deploy_lib.api import (
    PrefectApi,
    bundled_job_template,
    health,
    work_pools_report,
)
from deploy_lib.errors import (
    ApiCertificateError,
    ApiConflict,
    ApiError,
    ApiForbidden,
    ApiHostUnknown,
    ApiNotFound,
    ApiServerError,
    ApiUnauthorized,
    ApiUnprocessable,
    ApiUnreachable,
    RunFailed,
)
from deploy_lib.models import LABEL_FLOW

pytestmark = pytest.mark.anyio

SECRET_KEY = "pnu_s3cr3t-api-key-value"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def deployment_body(flow: str, name: str, **overrides: Any) -> dict[str, Any]:
    """A deployment dict in the shape DeploymentSpec.body has."""
    body: dict[str, Any] = {
        "name": name,
        "flow_name": flow,
        "entrypoint": "flows/example.py:example",
        "description": "first",
        "version": "1",
        "work_pool_name": None,
        "work_queue_name": None,
        "tags": ["deploy-lib-test"],
        "parameters": {},
        "parameter_openapi_schema": {"type": "object", "properties": {}},
        "job_variables": {},
        "pull_steps": [],
        "schedules": [],
        "concurrency_limit": None,
        "paused": False,
        "enforce_parameter_schema": True,
    }
    body.update(overrides)
    return body


# -- against the real server -------------------------------------------------------


@pytest.mark.e2e
async def test_health_is_true_for_the_running_server(api: PrefectApi, prefect_server: str) -> None:
    assert await api.health() is True
    assert health(prefect_server) is True


@pytest.mark.e2e
async def test_a_proxy_in_the_environment_does_not_capture_the_local_server(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert health(prefect_server) is True
    async with PrefectApi(prefect_server) as api:
        assert await api.health() is True


@pytest.mark.e2e
async def test_ensure_flow_upserts_by_name_and_caches_the_id(
    api: PrefectApi, prefect_server: str
) -> None:
    name = unique("flow")
    first = await api.ensure_flow(name)
    sent = api.request_count
    assert await api.ensure_flow(name) == first
    assert api.request_count == sent, "the second call must come from the cache"
    async with PrefectApi(prefect_server) as other:
        assert await other.ensure_flow(name) == first


async def test_concurrent_ensure_flow_calls_send_one_request() -> None:
    sent: list[httpx.Request] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        await asyncio.sleep(0.05)  # the other calls arrive while this one is in flight
        return reply(200, {"id": "flow-id", "name": "etl"})

    transport = httpx.MockTransport(answer)
    async with PrefectApi("http://prefect.test/api", transport=transport) as api:
        ids = await asyncio.gather(*(api.ensure_flow("etl") for _ in range(5)))
    assert ids == ["flow-id"] * 5
    assert len(sent) == 1


@pytest.mark.e2e
async def test_upsert_creates_with_201_then_updates_with_200(api: PrefectApi) -> None:
    flow, name = unique("flow"), unique("dep")
    deployment_id, created = await api.upsert_deployment(deployment_body(flow, name))
    assert created is True
    again_id, created = await api.upsert_deployment(
        deployment_body(flow, name, description="second", version="2")
    )
    assert (again_id, created) == (deployment_id, False)
    live = await api.read_deployment(deployment_id)
    assert (live["description"], live["version"]) == ("second", "2")
    by_name = await api.read_deployment_by_name(flow, name)
    assert by_name is not None and by_name["id"] == deployment_id


@pytest.mark.e2e
async def test_upsert_sends_every_field_of_the_deployment_dict(api: PrefectApi) -> None:
    pool = unique("pool")
    await api.create_work_pool(pool, "process")
    flow, name = unique("flow"), unique("dep")
    body = deployment_body(
        flow,
        name,
        work_pool_name=pool,
        work_queue_name="default",
        parameters={"debug": True},
        parameter_openapi_schema={
            "type": "object",
            "properties": {"debug": {"type": "boolean", "default": False}},
        },
        job_variables={"env": {"PYTHONPATH": "."}},
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/app"}}],
        schedules=[
            {
                "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
                "active": False,
                "slug": "nightly",
            },
            {"schedule": {"interval": 3600}, "active": True, "slug": "hourly"},
        ],
        concurrency_limit=2,
        paused=True,
    )
    deployment_id, _ = await api.upsert_deployment(body)
    live = await api.read_deployment(deployment_id)

    assert live["work_pool_name"] == pool and live["work_queue_name"] == "default"
    assert live["parameters"] == {"debug": True}
    assert live["job_variables"] == {"env": {"PYTHONPATH": "."}}
    assert live["pull_steps"] == body["pull_steps"]
    # The server keeps the limit as a global concurrency limit; `concurrency_limit` reads null.
    assert live["global_concurrency_limit"]["limit"] == 2 and live["paused"] is True
    schedules = {s["slug"]: s for s in live["schedules"]}
    assert schedules["nightly"]["active"] is False
    assert schedules["nightly"]["schedule"]["cron"] == "0 3 * * *"
    assert schedules["hourly"]["schedule"]["interval"] == 3600.0


@pytest.mark.e2e
async def test_update_deployment_patches_fields_and_keeps_schedule_active_state(
    api: PrefectApi,
) -> None:
    flow, name = unique("flow"), unique("dep")
    schedule = {"schedule": {"cron": "0 1 * * *"}, "active": True, "slug": "daily"}
    deployment_id, _ = await api.upsert_deployment(
        deployment_body(flow, name, schedules=[schedule])
    )
    # Someone pauses the schedule in the UI ...
    await api.update_deployment(deployment_id, {"schedules": [{"slug": "daily", "active": False}]})
    # ... and our update changes the description and the cron, leaving `active` out.
    await api.update_deployment(
        deployment_id,
        {
            "description": "patched",
            "schedules": [{"slug": "daily", "schedule": {"cron": "0 2 * * *"}}],
        },
    )
    live = await api.read_deployment(deployment_id)
    assert live["description"] == "patched"
    (only,) = live["schedules"]
    assert only["schedule"]["cron"] == "0 2 * * *"
    assert only["active"] is False


@pytest.mark.e2e
async def test_read_deployment_by_name_is_none_when_missing(api: PrefectApi) -> None:
    assert await api.read_deployment_by_name(unique("flow"), "nope") is None


@pytest.mark.e2e
async def test_delete_deployment_then_reading_it_is_not_found(api: PrefectApi) -> None:
    deployment_id, _ = await api.upsert_deployment(deployment_body(unique("flow"), "doomed"))
    assert await api.delete_deployment(deployment_id) is True
    assert await api.delete_deployment(deployment_id) is False
    with pytest.raises(ApiNotFound, match="Deployment not found"):
        await api.read_deployment(deployment_id)


@pytest.mark.e2e
async def test_list_deployments_requires_all_tags_and_names_the_flow(api: PrefectApi) -> None:
    env_tag, other = unique("env"), unique("other")
    flow = unique("flow")
    await api.upsert_deployment(deployment_body(flow, "both", tags=[env_tag, other]))
    await api.upsert_deployment(deployment_body(flow, "one", tags=[env_tag]))

    listed = await api.list_deployments([env_tag, other])

    assert [(d["flow_name"], d["name"]) for d in listed] == [(flow, "both")]
    assert {d["name"] for d in await api.list_deployments([env_tag])} == {"both", "one"}


@pytest.mark.e2e
async def test_find_deployments_answers_for_the_flow_and_name_pairs_asked_only(
    api: PrefectApi,
) -> None:
    one, two = unique("find-one"), unique("find-two")
    made = {
        f"{flow}/{name}": (await api.upsert_deployment(deployment_body(flow, name)))[0]
        for flow, name in [(one, "daily"), (one, "hourly"), (two, "daily")]
    }

    found = await api.find_deployments([(one, "daily"), (two, "hourly"), (two, "nope")])

    assert {key: d["id"] for key, d in found.items()} == {f"{one}/daily": made[f"{one}/daily"]}
    assert found[f"{one}/daily"]["flow_name"] == one
    assert await api.find_deployments([]) == {}


@pytest.mark.e2e
@pytest.mark.slow
async def test_list_deployments_returns_all_500_across_pages(api: PrefectApi) -> None:
    # Five flows with the same 100 deployment names: the server sorts by name only, so
    # pages full of ties must still neither skip nor repeat a deployment.
    tag = unique("bulk")
    flows = [unique("bulk-flow") for _ in range(5)]
    wanted = {(flow, f"dep-{i:03d}") for flow in flows for i in range(100)}
    gate = asyncio.Semaphore(4)

    async def create(flow: str, name: str) -> None:
        async with gate:
            await api.upsert_deployment(deployment_body(flow, name, tags=[tag]))

    await asyncio.gather(*(create(flow, name) for flow, name in sorted(wanted)))
    sent = api.request_count

    listed = await api.list_deployments([tag])

    assert len(listed) == 500
    assert {(d["flow_name"], d["name"]) for d in listed} == wanted
    assert len({d["id"] for d in listed}) == 500
    # A count and 3 pages (and at most one more, for what ties made the pages skip); the
    # flows' names come from the label each upsert recorded: no flow is read.
    assert api.request_count - sent in (4, 5)


@pytest.mark.e2e
async def test_create_and_read_process_and_docker_work_pools(api: PrefectApi) -> None:
    process, docker = unique("proc-pool"), unique("docker-pool")
    made = await api.create_work_pool(process, "process")
    await api.create_work_pool(docker, "docker")

    read = await api.read_work_pool(process)
    assert read is not None and read["type"] == "process" and read["id"] == made["id"]
    assert "working_dir" in read["base_job_template"]["variables"]["properties"]
    read_docker = await api.read_work_pool(docker)
    assert read_docker is not None and read_docker["type"] == "docker"
    docker_vars = read_docker["base_job_template"]["variables"]["properties"]
    assert {"image", "mem_limit", "memswap_limit"} <= set(docker_vars)
    assert {process, docker} <= {p["name"] for p in await api.list_work_pools()}
    assert await api.list_workers(process) == []
    queue = await api.read_work_queue(process, "default")
    assert queue is not None and queue["name"] == "default"
    assert await api.read_work_queue(process, "no-such-queue") is None
    assert await api.read_work_pool(unique("missing-pool")) is None


@pytest.mark.e2e
async def test_creating_an_existing_work_pool_is_a_conflict(api: PrefectApi) -> None:
    name = unique("pool")
    await api.create_work_pool(name, "process")
    with pytest.raises(ApiConflict, match="already exists") as caught:
        await api.create_work_pool(name, "process")
    assert caught.value.status == 409


@pytest.mark.e2e
async def test_reserved_work_pool_name_is_forbidden(api: PrefectApi) -> None:
    with pytest.raises(ApiForbidden, match="reserved for internal use") as caught:
        await api.create_work_pool(unique("prefect"), "process")
    assert "lacks permission" in str(caught.value)


@pytest.mark.e2e
async def test_work_pools_report_creates_the_missing_pools_with_the_right_type(
    api: PrefectApi,
) -> None:
    wrong = unique("wrong-type")
    await api.create_work_pool(wrong, "docker")
    pools = {"python": unique("py-pool"), "docker": unique("dk-pool")}

    before = await work_pools_report(api, pools)
    assert [(r["exists"], r["type"]) for r in before] == [(False, None), (False, None)]

    after = await work_pools_report(api, pools, create=True)
    assert [(r["type"], r["created"], r["type_ok"]) for r in after] == [
        ("process", True, True),
        ("docker", True, True),
    ]
    (mismatch,) = await work_pools_report(api, {"python": wrong})
    assert (mismatch["type"], mismatch["type_ok"]) == ("docker", False)
    assert mismatch["workers_online"] == 0


@pytest.mark.e2e
async def test_upsert_into_a_missing_work_pool_is_not_found_naming_pool_and_deployment(
    api: PrefectApi,
) -> None:
    pool, flow = unique("absent-pool"), unique("flow")
    with pytest.raises(ApiNotFound) as caught:
        await api.upsert_deployment(deployment_body(flow, "d", work_pool_name=pool))
    message = str(caught.value)
    assert f'Work pool "{pool}" not found' in message
    assert f"for deployment '{flow}/d'" in message
    assert "/deployments/" in message and caught.value.status == 404


@pytest.mark.e2e
async def test_bad_body_is_unprocessable_with_each_field_named(api: PrefectApi) -> None:
    body = deployment_body(unique("flow"), "bad", bogus_field=1, concurrency_limit=-3)
    with pytest.raises(ApiUnprocessable) as caught:
        await api.upsert_deployment(body)
    message = str(caught.value)
    assert "HTTP 422" in message
    assert "bogus_field: Extra inputs are not permitted" in message
    assert "concurrency_limit:" in message and "(got -3)" in message


@pytest.mark.e2e
async def test_flow_run_is_created_and_waiting_without_a_worker_times_out(
    api: PrefectApi,
) -> None:
    deployment_id, _ = await api.upsert_deployment(
        deployment_body(
            unique("flow"),
            "runnable",
            parameters={"n": 1},
            enforce_parameter_schema=False,
        )
    )
    # With a key, a busy SQLite server's 503 is retried (the run is created once).
    run = await api.create_flow_run(deployment_id, {"n": 2}, idempotency_key=unique("run"))
    assert run["deployment_id"] == deployment_id and run["parameters"] == {"n": 2}
    assert (await api.read_flow_run(run["id"]))["state"]["type"] == "SCHEDULED"
    started = time.monotonic()
    with pytest.raises(
        RunFailed, match=r"did not finish within 0.5 s; its state is still Scheduled"
    ):
        await api.wait_flow_run(run["id"], timeout=0.5, poll=0.1)
    assert time.monotonic() - started < 5


@pytest.mark.e2e
async def test_flow_run_with_an_idempotency_key_is_created_once(api: PrefectApi) -> None:
    deployment_id, _ = await api.upsert_deployment(deployment_body(unique("flow"), "once"))
    key = unique("run")
    first = await api.create_flow_run(deployment_id, idempotency_key=key)
    second = await api.create_flow_run(deployment_id, idempotency_key=key)
    assert first["id"] == second["id"]


# -- at the HTTP edge ------------------------------------------------------------------


class Recorder:
    """A MockTransport handler that answers from a script and records every request."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer()
        return answer

    def api(self, **options: Any) -> PrefectApi:
        options.setdefault("backoff", 0.01)
        options.setdefault("backoff_cap", 0.05)
        return PrefectApi(
            "http://prefect.test/api",
            options.pop("api_key", ""),
            transport=httpx.MockTransport(self),
            **options,
        )


def reply(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        pytest.param(401, ApiUnauthorized, "check api_key", id="401 is unauthorized"),
        pytest.param(403, ApiForbidden, "lacks permission", id="403 is forbidden"),
        pytest.param(404, ApiNotFound, "check the name", id="404 is not found"),
        pytest.param(409, ApiConflict, "another object", id="409 is a conflict"),
        pytest.param(422, ApiUnprocessable, "rejected the request", id="422 is unprocessable"),
    ],
)
async def test_client_errors_map_to_their_error_with_detail_and_hint(
    status: int, error: type[ApiError], hint: str
) -> None:
    recorder = Recorder(reply(status, {"detail": f"server says {status}"}))
    async with recorder.api() as api:
        with pytest.raises(error) as caught:
            await api.read_deployment("abc")
    message = str(caught.value)
    assert message.startswith(f"HTTP {status} from http://prefect.test/api/deployments/abc")
    assert f"server says {status}" in message and hint in message
    assert len(recorder.requests) == 1, "client errors are never retried"


async def test_503_that_clears_is_retried_and_succeeds() -> None:
    recorder = Recorder(
        reply(503, {"exception_message": "Service Unavailable"}), reply(200, {"id": "d1"})
    )
    async with recorder.api() as api:
        assert (await api.read_deployment("d1"))["id"] == "d1"
    assert len(recorder.requests) == 2


async def test_503_that_persists_gives_up_after_bounded_attempts_and_time() -> None:
    recorder = Recorder(reply(503, {"exception_message": "Service Unavailable"}))
    started = time.monotonic()
    async with recorder.api(retries=3, backoff=0.05, backoff_cap=0.2) as api:
        with pytest.raises(ApiServerError) as caught:
            await api.list_deployments(["x"])
    elapsed = time.monotonic() - started
    assert len(recorder.requests) == 4
    assert elapsed < 1.5, elapsed
    message = str(caught.value)
    assert "HTTP 503" in message and "Service Unavailable after 4 attempts" in message
    assert "kept failing after bounded retries" in message


async def test_429_honours_retry_after_up_to_the_cap() -> None:
    recorder = Recorder(
        reply(429, {"detail": "slow down"}, **{"Retry-After": "3600"}), reply(200, {"id": "x"})
    )
    started = time.monotonic()
    async with recorder.api(backoff_cap=0.2) as api:
        assert (await api.read_flow_run("x"))["id"] == "x"
    elapsed = time.monotonic() - started
    assert len(recorder.requests) == 2
    assert 0.2 <= elapsed < 2, "an hour-long Retry-After waits only backoff_cap"


async def test_health_is_false_on_429_without_retrying() -> None:
    recorder = Recorder(reply(429, {"detail": "slow down"}, **{"Retry-After": "1"}))
    async with recorder.api() as api:
        assert await api.health() is False
    assert len(recorder.requests) == 1


async def test_deadline_stops_retrying_before_the_attempts_run_out() -> None:
    recorder = Recorder(reply(502, {"detail": "bad gateway"}))
    started = time.monotonic()
    async with recorder.api(retries=10, backoff=0.2, backoff_cap=0.2, deadline=0.5) as api:
        with pytest.raises(ApiServerError, match=r"bad gateway after [2-5] attempts"):
            await api.read_deployment("x")
    assert time.monotonic() - started < 1.0
    assert 2 <= len(recorder.requests) <= 5


async def test_a_connection_the_server_closed_is_replaced_without_using_a_retry() -> None:
    # The server closes a kept-alive connection after every 5xx it sends.
    recorder = Recorder(
        httpx.ReadError("closed"), httpx.RemoteProtocolError("closed"), reply(200, {"id": "d"})
    )
    async with recorder.api(retries=0) as api:
        assert (await api.read_deployment("d"))["id"] == "d"
    assert len(recorder.requests) == 3
    broken = Recorder(httpx.ReadError("closed"))
    async with broken.api(retries=1) as api:
        with pytest.raises(ApiUnreachable, match="ReadError: closed after 2 attempts"):
            await api.read_deployment("d")
    assert len(broken.requests) == 4, "two reconnects, then the counted attempts"


async def test_creating_a_flow_run_is_not_repeated_after_a_5xx() -> None:
    recorder = Recorder(
        reply(503, {"exception_message": "Service Unavailable"}), reply(201, {"id": "run"})
    )
    async with recorder.api() as api:
        with pytest.raises(ApiServerError, match="after 1 attempt "):
            await api.create_flow_run("dep-id", {"a": 1})
    assert len(recorder.requests) == 1


async def test_creating_a_flow_run_is_not_repeated_when_the_answer_was_lost() -> None:
    recorder = Recorder(httpx.ReadError("closed"), reply(201, {"id": "run"}))
    async with recorder.api() as api:
        with pytest.raises(ApiUnreachable, match="after 1 attempt "):
            await api.create_flow_run("dep-id")
    assert len(recorder.requests) == 1


async def test_creating_a_flow_run_is_repeated_when_it_never_reached_the_server() -> None:
    recorder = Recorder(httpx.ConnectError("connection refused"), reply(201, {"id": "run"}))
    async with recorder.api() as api:
        assert (await api.create_flow_run("dep-id"))["id"] == "run"
    assert len(recorder.requests) == 2


async def test_creating_a_flow_run_with_an_idempotency_key_is_repeated_after_a_5xx() -> None:
    recorder = Recorder(
        reply(500, {"exception_message": "Internal Server Error"}), reply(201, {"id": "run"})
    )
    async with recorder.api() as api:
        assert (await api.create_flow_run("dep-id", idempotency_key="k1"))["id"] == "run"
    bodies = [json.loads(r.content) for r in recorder.requests]
    assert bodies == [{"parameters": {}, "idempotency_key": "k1"}] * 2


@pytest.mark.parametrize(
    ("max_writes", "expected_peak"),
    [pytest.param(None, 6, id="unlimited writes overlap"), pytest.param(1, 1, id="max_writes=1")],
)
async def test_max_writes_caps_writes_in_flight_but_not_reads(
    max_writes: int | None, expected_peak: int
) -> None:
    state = {"writes": 0, "peak": 0, "reads_during_writes": 0}

    async def answer(request: httpx.Request) -> httpx.Response:
        write = request.method != "GET"
        if write:
            state["writes"] += 1
            state["peak"] = max(state["peak"], state["writes"])
        elif state["writes"]:
            state["reads_during_writes"] += 1
        await asyncio.sleep(0.02)
        if write:
            state["writes"] -= 1
        return reply(201 if write else 200, {"id": "x"})

    transport = httpx.MockTransport(answer)
    async with PrefectApi(
        "http://prefect.test/api", max_writes=max_writes, transport=transport
    ) as api:
        await asyncio.gather(
            *(api.upsert_deployment({"name": f"d{i}", "flow_id": "f"}) for i in range(6)),
            *(api.read_deployment("x") for _ in range(3)),
        )
    assert state["peak"] == expected_peak
    assert state["reads_during_writes"] == 3


async def test_api_key_is_sent_as_bearer_token() -> None:
    recorder = Recorder(reply(200, True))
    async with recorder.api(api_key=SECRET_KEY) as api:
        assert await api.health() is True
    assert recorder.requests[0].headers["Authorization"] == f"Bearer {SECRET_KEY}"
    no_key = Recorder(reply(200, True))
    async with no_key.api() as api:
        await api.health()
    assert "Authorization" not in no_key.requests[0].headers


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(reply(401, {"detail": f"bad token {SECRET_KEY}"}), id="401 echoing the key"),
        pytest.param(reply(403, {"detail": f"{SECRET_KEY} may not"}), id="403 echoing the key"),
        pytest.param(
            reply(
                422,
                {"exception_detail": [{"loc": ["body", "x"], "msg": "no", "input": SECRET_KEY}]},
            ),
            id="422 quoting the key as input",
        ),
        pytest.param(
            reply(503, {"exception_message": f"down for {SECRET_KEY}"}), id="503 echoing the key"
        ),
        pytest.param(
            httpx.ConnectError(f"refused {SECRET_KEY}"), id="connection error naming the key"
        ),
    ],
)
async def test_api_key_never_appears_in_an_error_message(answer: Any) -> None:
    recorder = Recorder(answer)
    async with recorder.api(api_key=SECRET_KEY, retries=1) as api:
        with pytest.raises(ApiError) as caught:
            await api.read_deployment("x")
    assert SECRET_KEY not in str(caught.value)
    assert SECRET_KEY not in repr(caught.value.args)
    assert "****" in str(caught.value)


async def test_422_detail_list_is_formatted_one_field_after_another() -> None:
    detail = {
        "exception_message": "Invalid request received.",
        "exception_detail": [
            {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": {}},
            {
                "type": "int_parsing",
                "loc": ["body", "schedules", 0, "schedule", "interval"],
                "msg": "Input should be a valid number",
                "input": "often",
            },
        ],
        "request_body": {"name": None, "job_variables": {"env": {"TOKEN": "do-not-print"}}},
    }
    async with Recorder(reply(422, detail)).api() as api:
        with pytest.raises(ApiUnprocessable) as caught:
            await api.upsert_deployment({"flow_id": "f", "name": "n"})
    message = str(caught.value)
    assert (
        "name: Field required; schedules.0.schedule.interval: Input should be a valid number "
        "(got 'often')" in message
    )
    assert "do-not-print" not in message, "the echoed request body is not quoted"


async def test_upsert_translates_flow_name_and_reports_created_from_the_status() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path == "/api/flows/":
            return reply(201, {"id": "flow-1", "name": "etl"})
        return reply(200, {"id": "dep-1"})

    anchor = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    body = MappingProxyType(
        deployment_body(
            "etl", "etl-python", schedules=[{"schedule": {"interval": 60, "anchor_date": anchor}}]
        )
    )
    transport = httpx.MockTransport(answer)
    async with PrefectApi("http://prefect.test/api", transport=transport) as api:
        assert await api.upsert_deployment(body) == ("dep-1", False)
    assert [str(r.url) for r in sent] == [
        "http://prefect.test/api/flows/",
        "http://prefect.test/api/deployments/",
    ]
    payload = json.loads(sent[1].content)
    assert payload["flow_id"] == "flow-1" and "flow_name" not in payload
    assert payload["schedules"][0]["schedule"]["anchor_date"] == "2024-01-01T00:00:00+00:00"
    assert api.write_count == 2


def listing_server(
    rows: Sequence[dict[str, Any]], *, shuffle_ties: bool = False
) -> tuple[Callable[[httpx.Request], httpx.Response], list[dict[str, Any]]]:
    """A stand-in for /deployments/count, /deployments/filter (offset or ids excluded)
    and /flows/filter over ``rows``; with ``shuffle_ties`` each offset page is cut from
    its own random order, as a server sorting on a column full of ties may do.  The
    second value collects every request body, with its path under ``"path"``."""
    asked: list[dict[str, Any]] = []
    randomly = random.Random(7)

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append({"path": request.url.path.rsplit("/api/", 1)[1], **body})
        if request.url.path.endswith("/flows/filter"):
            return reply(200, [{"id": i, "name": f"flow-{i}"} for i in body["flows"]["id"]["any_"]])
        if request.url.path.endswith("/deployments/count"):
            return reply(200, len(rows))
        seen = set(body["deployments"].get("id", {}).get("not_any_", []))
        order = [r for r in rows if r["id"] not in seen]
        if shuffle_ties and "offset" in body:
            randomly.shuffle(order)
        offset = body.get("offset", 0)
        return reply(200, order[offset : offset + body["limit"]])

    return answer, asked


async def test_list_deployments_counts_then_fetches_the_pages_by_offset() -> None:
    rows = [{"id": f"d{i:03d}", "name": f"n{i:03d}", "flow_id": f"f{i % 2}"} for i in range(450)]
    answer, asked = listing_server(rows)
    async with PrefectApi("http://prefect.test/api", transport=httpx.MockTransport(answer)) as api:
        listed = await api.list_deployments(["env:dev"])
    assert len(listed) == 450 and len({d["id"] for d in listed}) == 450
    assert [a["path"] for a in asked] == ["deployments/count", *["deployments/filter"] * 3, "flows/filter"]
    assert sorted(a["offset"] for a in asked if "offset" in a) == [0, 200, 400]
    assert all(a["deployments"]["tags"] == {"all_": ["env:dev"]} for a in asked[:4])
    assert {d["flow_name"] for d in listed} == {"flow-f0", "flow-f1"}


async def test_list_deployments_finds_what_unstable_offset_pages_skipped() -> None:
    # Every deployment has the same name: the server's order among ties is arbitrary, so
    # offset pages overlap and skip; the ids not yet seen are then asked for directly.
    rows = [{"id": f"d{i:03d}", "name": "same", "flow_id": "f0"} for i in range(450)]
    answer, asked = listing_server(rows, shuffle_ties=True)
    async with PrefectApi("http://prefect.test/api", transport=httpx.MockTransport(answer)) as api:
        listed = await api.list_deployments(["env:dev"])
    assert sorted(d["id"] for d in listed) == [r["id"] for r in rows]
    completions = [a for a in asked if "not_any_" in a.get("deployments", {}).get("id", {})]
    assert completions and all(a["deployments"]["tags"] == {"all_": ["env:dev"]} for a in completions)


async def test_list_deployments_takes_flow_names_from_this_tools_label() -> None:
    rows = [
        {"id": "d1", "name": "a", "flow_id": "f1", "labels": {LABEL_FLOW: "f1/etl"}},
        # Recorded for another flow id: not believed, the flow is read.
        {"id": "d2", "name": "b", "flow_id": "f2", "labels": {LABEL_FLOW: "f9/wrong"}},
        {"id": "d3", "name": "c", "flow_id": "f3"},
    ]
    answer, asked = listing_server(rows)
    async with PrefectApi("http://prefect.test/api", transport=httpx.MockTransport(answer)) as api:
        listed = await api.list_deployments()
    assert {d["id"]: d["flow_name"] for d in listed} == {"d1": "etl", "d2": "flow-f2", "d3": "flow-f3"}
    [lookup] = [a for a in asked if a["path"] == "flows/filter"]
    assert sorted(lookup["flows"]["id"]["any_"]) == ["f2", "f3"]


async def test_upsert_records_the_flow_in_a_label_beside_the_callers_labels() -> None:
    recorder = Recorder(reply(200, {"id": "f-1"}), reply(201, {"id": "d-1"}))
    async with recorder.api() as api:
        await api.upsert_deployment({**deployment_body("etl", "daily"), "labels": {"team": "data"}})
    sent = json.loads(recorder.requests[-1].content)
    assert sent["labels"] == {"team": "data", LABEL_FLOW: "f-1/etl"}


async def test_default_job_template_falls_back_to_the_copy_shipped_with_prefect() -> None:
    recorder = Recorder(reply(500, {"exception_message": "offline"}))
    async with recorder.api(retries=0) as api:
        template = await api.default_base_job_template("process")
        with pytest.raises(
            ApiNotFound, match="no default job template is known for work pool type 'warp-drive'"
        ):
            await api.default_base_job_template("warp-drive")
    assert "command" in template["job_configuration"]


# -- real sockets: refused and silent ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


async def test_connection_refused_is_unreachable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    started = time.monotonic()
    async with PrefectApi(url, SECRET_KEY, retries=2, backoff=0.01, backoff_cap=0.05) as api:
        with pytest.raises(ApiUnreachable) as caught:
            await api.read_work_pool("pool")
        assert api.request_count == 3
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert f"from {url}/work_pools/pool" in message
    assert "cannot connect" in message and "after 3 attempts" in message
    assert "is the server running?" in message and SECRET_KEY not in message


async def test_a_server_that_never_answers_times_out_within_the_bound(silent_server: str) -> None:
    started = time.monotonic()
    async with PrefectApi(silent_server, timeout=0.3, retries=1, backoff=0.01) as api:
        with pytest.raises(
            ApiUnreachable, match=r"no answer in time \(ReadTimeout\) after 2 attempts"
        ):
            await api.read_deployment("x")
    assert time.monotonic() - started < 3


def test_health_is_false_for_a_closed_port() -> None:
    assert health(f"http://127.0.0.1:{closed_port()}/api", timeout=0.5) is False


def test_bundled_job_templates_are_read_without_a_server() -> None:
    docker = bundled_job_template("docker")
    process = bundled_job_template("process")

    assert docker is not None and process is not None
    assert {"image", "env", "mem_limit", "image_pull_policy"} <= set(
        docker["variables"]["properties"]
    )
    assert {"env", "working_dir"} <= set(process["variables"]["properties"])
    assert bundled_job_template("no-such-worker") is None


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_an_error_naming_where_it_leads_and_is_never_followed(
    status: int,
) -> None:
    recorder = Recorder(reply(status, None, Location="https://login.example.com/sso"))
    async with recorder.api(api_key=SECRET_KEY) as api:
        with pytest.raises(ApiError) as caught:
            await api.delete_deployment("d1", deployment="f/d")
    message = str(caught.value)
    assert f"answered HTTP {status}, redirecting to https://login.example.com/sso" in message
    assert "redirects are not followed" in message
    assert [r.url.host for r in recorder.requests] == ["prefect.test"]  # one request, no follow


@pytest.mark.parametrize(
    ("failure", "error", "says"),
    [
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            ApiHostUnknown,
            "the host 'prefect.test' of api_url does not resolve",
        ),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            ApiCertificateError,
            "the TLS certificate of 'prefect.test' is not trusted",
        ),
    ],
    ids=["an unknown host", "an untrusted certificate"],
)
async def test_what_retrying_cannot_fix_fails_at_once_with_its_own_advice(
    failure: Exception, error: type[ApiError], says: str
) -> None:
    recorder = Recorder(failure)
    async with recorder.api(retries=5) as api:
        with pytest.raises(error) as caught:
            await api.read_deployment("d1")

    assert says in str(caught.value)
    assert "is the server running" not in str(caught.value)
    assert len(recorder.requests) == 1, "not retried"


def test_a_ca_bundle_from_the_environment_verifies_https(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import certifi

    from deploy_lib.api import _tls_verify

    bundle = tmp_path / "corp-ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())  # any real bundle will do
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))

    context = _tls_verify("https://prefect.corp/api")
    assert isinstance(context, ssl.SSLContext) and context.cert_store_stats()["x509_ca"] > 0
    assert _tls_verify("http://127.0.0.1:4200/api") is False
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert _tls_verify("https://prefect.corp/api") is True
    # The ca_bundle setting, handed in by connect, needs no environment at all.
    assert isinstance(_tls_verify("https://prefect.corp/api", str(bundle)), ssl.SSLContext)


async def test_a_web_page_instead_of_the_api_is_named_not_a_traceback() -> None:
    page = httpx.Response(200, text="<html><body>Please sign in</body></html>",
                          headers={"content-type": "text/html; charset=utf-8"})
    recorder = Recorder(page)
    async with recorder.api() as api:
        with pytest.raises(ApiError) as caught:
            await api.list_work_pools()
    message = str(caught.value)
    assert "did not answer with Prefect API JSON (got text/html; charset=utf-8:" in message
    assert "Please sign in" in message


async def test_json_of_the_wrong_shape_from_a_write_is_named() -> None:
    recorder = Recorder(reply(200, {"not": "a deployment"}))
    async with recorder.api() as api:
        with pytest.raises(ApiError, match=r"with no object id: is api_url a Prefect API\?"):
            await api.ensure_flow("f")


# -- replicas: several API processes of one server ------------------------------------------


@pytest.mark.anyio
async def test_writes_are_spread_over_replicas_and_a_replica_that_goes_away_is_passed_over(
    postgres_server: str, postgres_replica: str
) -> None:
    flow = unique("replicated")
    async with PrefectApi(postgres_server, replicas=[postgres_replica]) as api:
        ids = [
            (await api.upsert_deployment(deployment_body(flow, f"d{i}")))[0] for i in range(6)
        ]
        assert all(api.requests_by_url[u] >= 3 for u in (postgres_server, postgres_replica))
    # Every write is on the one database, whichever process took it.
    async with PrefectApi(postgres_replica) as other:
        found = await other.find_deployments([(flow, f"d{i}") for i in range(6)])
        assert {d["id"] for d in found.values()} == set(ids)
    # A replica that does not answer: each request meant for it goes to the next.
    gone = "http://127.0.0.1:9/api"  # nothing listens on the discard port
    async with PrefectApi(postgres_server, replicas=[gone], backoff=0.01) as api:
        await api.upsert_deployment(deployment_body(flow, "after-a-replica-went-away"))
        assert api.requests_by_url[gone] >= 1
