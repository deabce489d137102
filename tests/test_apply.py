"""apply.py: writing a plan with bounded concurrency, past failures, only what changed.

The unit tests give apply_plan a small in-memory object with the API module's async
methods (our own interface, not Prefect's client); the e2e test at the end uses a real
local Prefect server.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from deploy_lib import pipeline
from deploy_lib.api import PrefectApi
from deploy_lib.apply import (
    CREATED,
    DELETED,
    FAILED,
    NOT_STARTED,
    SKIPPED,
    UNCHANGED_STATUS,
    UPDATED,
    ApplyResult,
    Result,
    apply_plan,
)
from deploy_lib.errors import ApiServerError, ApiUnprocessable, PartialFailure, SettingsError
from deploy_lib.models import MANAGED_BY_TAG, DeploymentSpec, FlowMetadata
from deploy_lib.plan import make_plan

ENV = "development"


def body(flow: str, name: str | None = None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name or f"{flow}-python",
        "flow_name": flow,
        "entrypoint": f"flows/{flow}.py:main",
        "description": None,
        "version": None,
        "work_pool_name": "default-agent-pool",
        "work_queue_name": "default",
        "tags": [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"],
        "parameters": {},
        "parameter_openapi_schema": {"type": "object", "properties": {}},
        "job_variables": {"env": {"PYTHONPATH": "."}},
        "pull_steps": None,
        "schedules": [],
        "concurrency_limit": None,
        "paused": False,
        "enforce_parameter_schema": True,
    }
    data.update(overrides)
    return data


def spec(data: dict[str, Any]) -> DeploymentSpec:
    flow = FlowMetadata(
        name=data["flow_name"], function="main", path=f"flows/{data['flow_name']}.py"
    )
    return DeploymentSpec(type="python", env=ENV, flow=flow, body=data)


class FakeApi:
    """Records every call, holds deployments in memory, counts requests in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, Any]] = []
        self.deployments: dict[str, dict[str, Any]] = {}
        self.fail_upsert: dict[str, Exception | list[Exception]] = {}
        self.fail_flow: dict[str, Exception | list[Exception]] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def add_live(self, data: Mapping[str, Any], id_: str) -> dict[str, Any]:
        item = copy.deepcopy(dict(data))
        item["id"] = id_
        self.deployments[id_] = item
        return item

    async def _request(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1

    async def ensure_flow(self, name: str) -> str:
        await self._request("ensure_flow", name)
        failure = self.fail_flow.get(name)
        if isinstance(failure, list):
            if failure:
                raise failure.pop(0)
        elif failure is not None:
            raise failure
        return f"flow-{name}"

    async def upsert_deployment(self, data: Mapping[str, Any]) -> tuple[str, bool]:
        await self._request("upsert_deployment", data)
        failure = self.fail_upsert.get(data["name"])
        if isinstance(failure, list):  # fail once per listed error, then succeed
            if failure:
                raise failure.pop(0)
        elif failure is not None:
            raise failure
        for id_, item in self.deployments.items():
            if (item["flow_name"], item["name"]) == (data["flow_name"], data["name"]):
                self.deployments[id_] = {**copy.deepcopy(dict(data)), "id": id_}
                return id_, False
        id_ = f"id-{len(self.deployments) + 1}"
        self.add_live(data, id_)
        return id_, True

    async def delete_deployment(self, deployment_id: str, *, deployment: str | None = None) -> bool:
        await self._request("delete_deployment", deployment_id)
        return self.deployments.pop(deployment_id, None) is not None

    async def read_deployment_by_name(self, flow_name: str, name: str) -> dict[str, Any] | None:
        await self._request("read_deployment_by_name", f"{flow_name}/{name}")
        for item in self.deployments.values():
            if (item["flow_name"], item["name"]) == (flow_name, name):
                found = copy.deepcopy(item)
                del found["flow_name"]  # the server's answer has only the flow id
                return found
        return None

    async def find_deployments(self, pairs: Any) -> dict[str, dict[str, Any]]:
        await self._request("find_deployments", sorted(pairs))
        wanted = {f"{flow}/{name}" for flow, name in pairs}
        return {
            key: copy.deepcopy(item)
            for item in self.deployments.values()
            if (key := f"{item['flow_name']}/{item['name']}") in wanted
        }

    def names(self, call: str) -> list[Any]:
        return [
            arg if call != "upsert_deployment" else arg["name"]
            for name, arg in self.calls
            if name == call
        ]


def apply(
    api: FakeApi,
    specs: list[DeploymentSpec],
    *,
    concurrency: int = 4,
    prune: bool = False,
    **kw: Any,
) -> ApplyResult:
    live = list(api.deployments.values())
    plan = make_plan(specs, live, ENV)
    return asyncio.run(apply_plan(api, plan, concurrency=concurrency, prune=prune, **kw))


def by_name(result: ApplyResult) -> dict[str, Result]:
    return {r.deployment: r for r in result.results}


def test_concurrency_is_bounded_by_the_semaphore() -> None:
    api = FakeApi(delay=0.01)
    specs = [spec(body(f"flow-{i:02d}")) for i in range(12)]

    result = apply(api, specs, concurrency=3)

    assert api.max_in_flight == 3
    assert [r.status for r in result.results] == [CREATED] * 12


def test_one_at_a_time_when_concurrency_is_one() -> None:
    api = FakeApi(delay=0.005)

    apply(api, [spec(body(f"flow-{i}")) for i in range(4)], concurrency=1)

    assert api.max_in_flight == 1


def test_a_failing_deployment_does_not_stop_the_others() -> None:
    api = FakeApi(delay=0.001)
    api.fail_upsert["flow-2-python"] = ApiUnprocessable(
        "job_variables: unknown key 'cpu'", status=422, deployment="flow-2/flow-2-python"
    )
    specs = [spec(body(f"flow-{i}")) for i in range(5)]

    result = apply(api, specs, concurrency=2)

    statuses = {name: r.status for name, r in by_name(result).items()}
    assert statuses == {
        "flow-0/flow-0-python": CREATED,
        "flow-1/flow-1-python": CREATED,
        "flow-2/flow-2-python": FAILED,
        "flow-3/flow-3-python": CREATED,
        "flow-4/flow-4-python": CREATED,
    }
    failed = result.failed
    assert [r.deployment for r in failed] == ["flow-2/flow-2-python"]
    assert "HTTP 422" in (failed[0].error or "")
    assert "unknown key 'cpu'" in (failed[0].error or "")
    assert len(api.deployments) == 4
    assert result.counts[FAILED] == 1 and result.counts[CREATED] == 4

    with pytest.raises(PartialFailure) as caught:
        result.raise_if_failed()
    assert caught.value.exit_code == 4
    assert "1 of 5 deployment(s) failed in env 'development'; the other 4 were applied" in str(
        caught.value
    )
    assert "flow-2/flow-2-python: HTTP 422" in str(caught.value)


def busy(name: str) -> ApiServerError:
    return ApiServerError("Service Unavailable after 4 attempts", status=503, deployment=name)


def test_a_write_the_server_was_too_busy_for_gets_one_more_try_reported_once() -> None:
    api = FakeApi(delay=0.001)
    api.fail_upsert["flow-1-python"] = [busy("flow-1/flow-1-python")]
    api.fail_upsert["flow-3-python"] = [busy("flow-3/flow-3-python")]
    seen: list[Result] = []

    result = apply(api, [spec(body(f"flow-{i}")) for i in range(5)], on_result=seen.append)

    assert [r.status for r in result.results] == [CREATED] * 5
    assert sorted(r.deployment for r in seen) == sorted(r.deployment for r in result.results)
    assert len(api.names("upsert_deployment")) == 7
    assert api.names("upsert_deployment")[-2:] == ["flow-1-python", "flow-3-python"]


def test_the_second_try_stops_at_the_first_write_that_fails_again() -> None:
    api = FakeApi()
    for i in range(4):
        api.fail_upsert[f"flow-{i}-python"] = busy(f"flow-{i}/flow-{i}-python")

    result = apply(api, [spec(body(f"flow-{i}")) for i in range(4)])

    assert len(api.names("upsert_deployment")) == 5, "four writes, then one retry only"
    assert [r.status for r in result.results] == [FAILED] * 4
    assert all("HTTP 503" in (r.error or "") for r in result.results)


def test_a_flow_the_server_was_too_busy_to_ensure_is_ensured_again() -> None:
    api = FakeApi(delay=0.001)
    api.fail_flow["etl"] = [busy("etl")]

    result = apply(api, [spec(body("etl", name=f"etl-{i}")) for i in range(3)])

    assert api.names("ensure_flow") == ["etl", "etl"]
    assert [r.status for r in result.results] == [CREATED] * 3


def test_a_rejected_write_is_not_tried_again() -> None:
    api = FakeApi()
    api.fail_upsert["flow-0-python"] = ApiUnprocessable("bad", status=422)

    result = apply(api, [spec(body("flow-0"))])

    assert api.names("upsert_deployment") == ["flow-0-python"]
    assert result.results[0].status == FAILED


def test_a_transport_error_is_recorded_as_a_failure_of_that_deployment() -> None:
    api = FakeApi()
    api.fail_upsert["flow-1-python"] = ConnectionResetError("connection reset")

    result = apply(api, [spec(body("flow-0")), spec(body("flow-1"))])

    assert by_name(result)["flow-1/flow-1-python"].error == "ConnectionResetError: connection reset"
    assert by_name(result)["flow-0/flow-0-python"].status == CREATED


def test_a_programming_error_is_not_swallowed_into_a_failed_result() -> None:
    api = FakeApi()
    api.fail_upsert["flow-0-python"] = TypeError("unsupported operand")

    with pytest.raises(TypeError, match="unsupported operand"):
        apply(api, [spec(body("flow-0"))])


def test_unchanged_deployments_make_no_request_at_all() -> None:
    api = FakeApi()
    for i in range(3):
        api.add_live(body(f"flow-{i}"), f"id-{i}")
    seen: list[Result] = []

    result = apply(api, [spec(body(f"flow-{i}")) for i in range(3)], on_result=seen.append)

    assert api.calls == []
    assert [(r.status, r.id) for r in result.results] == [
        (UNCHANGED_STATUS, f"id-{i}") for i in range(3)
    ]
    assert [r.deployment for r in seen] == [r.deployment for r in result.results]
    result.raise_if_failed()  # nothing failed: no exception


def test_an_update_upserts_with_the_live_schedule_state_and_reports_updated() -> None:
    api = FakeApi()
    live = body("flow-0", schedules=[{"schedule": {"cron": "0 6 * * *"}, "active": False}])
    api.add_live(live, "id-0")
    wanted = body(
        "flow-0",
        description="now described",
        schedules=[{"schedule": {"cron": "0 6 * * *"}, "active": True}],
    )

    result = apply(api, [spec(wanted)])

    assert [(r.status, r.id) for r in result.results] == [(UPDATED, "id-0")]
    ((_, sent),) = [c for c in api.calls if c[0] == "upsert_deployment"]
    assert sent["description"] == "now described"
    assert sent["schedules"] == [{"schedule": {"cron": "0 6 * * *"}, "active": False}]


def test_a_planned_create_is_reported_created_even_when_the_server_says_updated() -> None:
    api = FakeApi()
    plan = make_plan([spec(body("a"))], [], ENV)
    api.add_live(body("a"), "id-a")  # landed between planning and writing

    result = asyncio.run(apply_plan(api, plan, concurrency=1, prune=False))

    assert [(r.status, r.id) for r in result.results] == [(CREATED, "id-a")]


def test_without_prune_deletes_are_kept_and_reported_as_skipped() -> None:
    api = FakeApi()
    api.add_live(body("gone"), "id-gone")

    result = apply(api, [spec(body("kept"))], prune=False)

    assert "delete_deployment" not in [name for name, _ in api.calls]
    assert "id-gone" in api.deployments
    assert by_name(result)["gone/gone-python"].status == SKIPPED


def test_a_kept_delete_is_never_deleted_even_with_prune() -> None:
    api = FakeApi()
    api.add_live({**body("broken"), "entrypoint": "flows/broken.py:broken"}, "id-broken")
    plan = make_plan(
        [], list(api.deployments.values()), ENV, protected={"flows/broken.py": "flow file flows/broken.py has problems"}
    )

    result = asyncio.run(apply_plan(api, plan, concurrency=1, prune=True))

    assert "delete_deployment" not in [name for name, _ in api.calls]
    (kept,) = result.results
    assert (kept.status, kept.note) == (SKIPPED, "kept: flow file flows/broken.py has problems")


def test_once_stopped_no_write_is_started_and_those_in_flight_finish() -> None:
    api = FakeApi(delay=0.01)
    stop = asyncio.Event()
    seen: list[Result] = []

    def on_result(result: Result) -> None:
        seen.append(result)
        stop.set()  # the signal arrives as the first write lands

    plan = make_plan([spec(body(f"f{i}")) for i in range(6)], [], ENV)
    result = asyncio.run(
        apply_plan(api, plan, concurrency=2, prune=False, on_result=on_result, stop=stop)
    )

    statuses = [(r.status, r.note) for r in result.results]
    written = [s for s in statuses if s[0] == CREATED]
    assert 1 <= len(written) <= 2, "the first and the one beside it in flight"
    assert statuses.count((SKIPPED, NOT_STARTED)) == 6 - len(written)
    assert len(api.names("upsert_deployment")) == len(written)


def test_with_prune_only_the_planned_deletes_are_deleted() -> None:
    api = FakeApi()
    api.add_live(body("gone"), "id-gone")
    api.add_live(body("other-env", tags=[MANAGED_BY_TAG, "env:staging"]), "id-staging")
    api.add_live(body("hand-made", tags=[f"env:{ENV}"]), "id-manual")
    api.add_live(body("kept"), "id-kept")

    result = apply(api, [spec(body("kept"))], prune=True)

    assert api.names("delete_deployment") == ["id-gone"]
    assert sorted(api.deployments) == ["id-kept", "id-manual", "id-staging"]
    assert [(r.deployment, r.status, r.id) for r in result.results] == [
        ("gone/gone-python", DELETED, "id-gone"),
        ("kept/kept-python", UNCHANGED_STATUS, "id-kept"),
    ]


def test_each_flow_is_ensured_once_however_many_deployments_it_has() -> None:
    api = FakeApi(delay=0.002)
    specs = [spec(body("etl", name=f"etl-{i}")) for i in range(4)]
    specs += [spec(body("report", name=f"report-{i}")) for i in range(3)]

    result = apply(api, specs, concurrency=4)

    assert sorted(api.names("ensure_flow")) == ["etl", "report"]
    assert len(api.names("upsert_deployment")) == 7
    assert result.counts[CREATED] == 7
    first_upsert = next(i for i, (name, _) in enumerate(api.calls) if name == "upsert_deployment")
    assert api.calls[0][0] == "ensure_flow" and first_upsert > 0


def test_a_flow_that_cannot_be_ensured_fails_only_its_own_deployments() -> None:
    api = FakeApi(delay=0.001)
    api.fail_flow["etl"] = ApiUnprocessable("flow name too long", status=422)
    specs = [spec(body("etl", name=f"etl-{i}")) for i in range(3)] + [spec(body("report"))]

    result = apply(api, specs, concurrency=4)

    assert api.names("ensure_flow").count("etl") == 1
    assert {r.deployment: r.status for r in result.results} == {
        "etl/etl-0": FAILED,
        "etl/etl-1": FAILED,
        "etl/etl-2": FAILED,
        "report/report-python": CREATED,
    }
    assert all("flow name too long" in (r.error or "") for r in result.failed)


def test_on_result_is_called_once_per_deployment_with_durations() -> None:
    api = FakeApi(delay=0.01)
    api.add_live(body("same"), "id-same")
    seen: list[Result] = []

    apply(api, [spec(body("same")), spec(body("new"))], on_result=seen.append)

    assert sorted((r.deployment, r.status) for r in seen) == [
        ("new/new-python", CREATED),
        ("same/same-python", UNCHANGED_STATUS),
    ]
    created = next(r for r in seen if r.status == CREATED)
    assert created.duration >= 0.01
    assert created.to_dict()["duration_ms"] >= 10


def test_results_serialise_one_record_per_deployment() -> None:
    api = FakeApi()

    data = apply(api, [spec(body("a"))]).to_dict()

    assert data["env"] == ENV
    assert data["summary"] == {
        CREATED: 1,
        UPDATED: 0,
        UNCHANGED_STATUS: 0,
        DELETED: 0,
        SKIPPED: 0,
        FAILED: 0,
        "conflict": 0,
    }
    (record,) = data["results"]
    assert {k: record[k] for k in ("deployment", "type", "action", "status", "id", "error")} == {
        "deployment": "a/a-python",
        "type": "python",
        "action": "create",
        "status": CREATED,
        "id": "id-1",
        "error": None,
    }


def test_a_concurrency_below_one_is_a_settings_error() -> None:
    plan = make_plan([], [], ENV)

    with pytest.raises(SettingsError, match="key 'apply_concurrency': must be at least 1, got 0"):
        asyncio.run(apply_plan(FakeApi(), plan, concurrency=0, prune=False))


def test_deploy_one_returns_the_deployment_id_and_leaves_other_deployments_alone() -> None:
    api = FakeApi()
    api.add_live(body("other"), "id-other")

    first = asyncio.run(pipeline.write_one(api, spec(body("solo"))))
    again = asyncio.run(pipeline.write_one(api, spec(body("solo"))))

    assert (first.status, first.id) == (CREATED, "id-2")
    assert (again.status, again.id) == (UNCHANGED_STATUS, "id-2")
    assert "id-other" in api.deployments
    assert [name for name, _ in api.calls] == [
        "read_deployment_by_name",
        "ensure_flow",
        "upsert_deployment",
        "read_deployment_by_name",
    ]


def test_deploy_one_raises_the_deployments_own_error() -> None:
    api = FakeApi()
    api.fail_upsert["solo-python"] = ApiUnprocessable(
        "bad body", status=422, deployment="solo/solo-python"
    )

    with pytest.raises(ApiUnprocessable, match="bad body"):
        asyncio.run(pipeline.write_one(api, spec(body("solo"))))


# --- against a real local Prefect server ------------------------------------------

E2E_ENV = "apply-e2e"
E2E_POOL = "apply-e2e-pool"


def e2e_spec(flow: str, name: str, **overrides: Any) -> DeploymentSpec:
    data = body(
        flow,
        name,
        work_pool_name=E2E_POOL,
        work_queue_name=None,
        tags=[MANAGED_BY_TAG, f"env:{E2E_ENV}", "runtime:python"],
        parameters={"n": 1},
        parameter_openapi_schema={
            "type": "object",
            "properties": {"n": {"type": "integer", "title": "n", "default": 0, "position": 0}},
        },
        job_variables={"env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "INFO"}},
        pull_steps=[
            {"prefect.deployments.steps.set_working_directory": {"directory": "/srv/project"}}
        ],
        schedules=[
            {"schedule": {"cron": "0 6 * * *", "timezone": "Europe/Berlin"}, "active": True},
            {"schedule": {"interval": 3600}, "active": True},
            {"schedule": {"rrule": "FREQ=DAILY;BYHOUR=9"}, "active": True},
        ],
        concurrency_limit=2,
        **overrides,
    )
    flow_meta = FlowMetadata(name=flow, function="main", path=f"flows/{flow}.py")
    return DeploymentSpec(type="python", env=E2E_ENV, flow=flow_meta, body=data)


@pytest.mark.e2e
@pytest.mark.anyio
async def test_apply_against_a_real_server_writes_only_changes_keeps_paused_schedules_and_prunes(
    api: Any, prefect_server: str
) -> None:
    import httpx

    if await api.read_work_pool(E2E_POOL) is None:
        await api.create_work_pool(E2E_POOL, "process")
    tags = [MANAGED_BY_TAG, f"env:{E2E_ENV}"]
    specs = [e2e_spec("e2e-etl", f"etl-{i}") for i in range(3)]
    specs += [e2e_spec("e2e-report", f"report-{i}") for i in range(2)]

    first = await apply_plan(
        api, make_plan(specs, await api.list_deployments(tags), E2E_ENV), concurrency=2, prune=False
    )
    assert [r.status for r in first.results] == [CREATED] * 5, first.failed

    live = await api.list_deployments(tags)
    plan = make_plan(specs, live, E2E_ENV)
    assert [c.action for c in plan.changes] == ["unchanged"] * 5, [c.diff for c in plan.changes]
    writes = api.write_count
    again = await apply_plan(api, plan, concurrency=2, prune=False)
    assert [r.status for r in again.results] == [UNCHANGED_STATUS] * 5
    assert api.write_count == writes, "an unchanged redeploy writes nothing"
    assert {d["id"]: d["updated"] for d in await api.list_deployments(tags)} == {
        d["id"]: d["updated"] for d in live
    }

    # Someone pauses the hourly schedule of etl-0 in the UI.
    etl0 = next(d for d in live if d["name"] == "etl-0")
    hourly = next(s for s in etl0["schedules"] if "interval" in s["schedule"])
    async with httpx.AsyncClient(base_url=prefect_server) as raw:
        response = await raw.patch(
            f"/deployments/{etl0['id']}/schedules/{hourly['id']}", json={"active": False}
        )
        assert response.status_code == 204

    changed = [e2e_spec("e2e-etl", "etl-0", description="now described"), *specs[1:4]]
    plan = make_plan(changed, await api.list_deployments(tags), E2E_ENV)
    assert plan.counts == {
        "create": 0, "update": 1, "unchanged": 3, "delete": 1, "conflict": 0, "rename": 0,
    }

    kept = await apply_plan(api, plan, concurrency=2, prune=False)
    assert by_name(kept)["e2e-report/report-1"].status == SKIPPED
    assert len(await api.list_deployments(tags)) == 5

    pruned = await apply_plan(api, plan, concurrency=2, prune=True)
    assert {r.deployment: r.status for r in pruned.results} == {
        "e2e-etl/etl-0": UPDATED,
        "e2e-etl/etl-1": UNCHANGED_STATUS,
        "e2e-etl/etl-2": UNCHANGED_STATUS,
        "e2e-report/report-0": UNCHANGED_STATUS,
        "e2e-report/report-1": DELETED,
    }
    final = await api.list_deployments(tags)
    assert sorted(d["name"] for d in final) == ["etl-0", "etl-1", "etl-2", "report-0"]
    etl0_after = next(d for d in final if d["name"] == "etl-0")
    assert etl0_after["description"] == "now described"
    hourly_after = next(s for s in etl0_after["schedules"] if "interval" in s["schedule"])
    assert hourly_after["active"] is False, "the update kept the paused schedule paused"
    assert hourly_after["schedule"]["anchor_date"] == hourly["schedule"]["anchor_date"]
    assert all(s["active"] for s in etl0_after["schedules"] if s is not hourly_after)
    assert make_plan(changed, final, E2E_ENV).counts["unchanged"] == 4


def test_a_name_taken_by_another_owner_after_the_plan_is_left_alone_not_overwritten() -> None:
    api = FakeApi()
    planned = make_plan([spec(body("race"))], [], ENV, project="mine")
    # Between the plan and the write, another environment creates the same deployment.
    theirs = {**body("race"), "tags": ["managed-by:deploy-lib", "env:staging", "project:mine"]}
    api.add_live(theirs, "id-theirs")

    result = asyncio.run(
        apply_plan(api, planned, concurrency=1, prune=False, owner=("mine", ENV))
    )

    (only,) = result.results
    assert (only.status, only.id) == ("conflict", "id-theirs")
    assert "owned by project 'mine', env 'staging'" in (only.error or "")
    assert api.names("upsert_deployment") == []
    assert api.deployments["id-theirs"]["tags"] == theirs["tags"]


def test_creates_check_their_names_fifty_a_request_and_a_taken_one_is_left_alone() -> None:
    api = FakeApi()
    specs = [spec(body(f"flow-{i:03d}")) for i in range(120)]
    planned = make_plan(specs, [], ENV, project="mine")
    # After the plan, someone else takes one name of the second batch.
    theirs = {**body("flow-077"), "tags": ["team:x"]}
    api.add_live(theirs, "id-theirs")

    result = asyncio.run(apply_plan(api, planned, concurrency=4, prune=False, owner=("mine", ENV)))

    checked = [len(arg) for name, arg in api.calls if name == "find_deployments"]
    assert checked == [50, 50, 20]
    assert api.names("read_deployment_by_name") == []
    statuses = {r.deployment: r.status for r in result.results}
    assert statuses.pop("flow-077/flow-077-python") == "conflict"
    assert set(statuses.values()) == {CREATED}
    assert api.deployments["id-theirs"]["tags"] == ["team:x"]


def test_a_create_tried_again_after_a_busy_server_checks_its_own_name_just_before() -> None:
    api = FakeApi()
    api.fail_upsert["late-python"] = [ApiServerError("busy", status=503)]
    planned = make_plan([spec(body("late"))], [], ENV, project="mine")

    result = asyncio.run(apply_plan(api, planned, concurrency=1, prune=False, owner=("mine", ENV)))

    assert [r.status for r in result.results] == [CREATED]
    assert [name for name, _ in api.calls if name != "ensure_flow"] == [
        "find_deployments", "upsert_deployment", "read_deployment_by_name", "upsert_deployment",
    ]


def test_writing_one_deployment_refuses_one_that_is_not_this_projects() -> None:
    api = FakeApi()
    api.add_live({**body("solo"), "tags": ["team:x"]}, "id-by-hand")  # made in the UI

    with pytest.raises(PartialFailure, match=r"solo/solo-python: not managed by this project"):
        asyncio.run(pipeline.write_one(api, spec(body("solo")), project="mine"))

    assert api.names("upsert_deployment") == []


# -- secrets as Prefect Secret blocks, on the real server ---------------------------------

SECRET = "pw-0123456789-first"
READER = (
    "import os\nimport pathlib\n\nfrom prefect import flow\n\n\n"
    "@flow(name='secret-reader')\n"
    "def secret_reader(out: str = '') -> None:\n"
    "    pathlib.Path(out).write_text(os.environ.get('DB_PASSWORD', '<unset>'))\n"
)


def _secret_project(root: Any, server: str) -> Any:
    from helpers import make_project

    project = make_project(root, {"flows/reader.py": READER}, example_flows=False)
    text = (project / "settings.toml").read_text().replace(
        "[development]\n",
        '[development]\nproject = "secrets-e2e"\ndeployment_types = ["python"]\n',
        1,
    ).replace('python = "default-agent-pool"', 'python = "secrets-e2e-pool"')
    (project / "settings.toml").write_text(text)
    (project / ".secrets.toml").write_text(f'[development.env_vars]\nDB_PASSWORD = "{SECRET}"\n')
    (project / ".secrets.toml").chmod(0o600)
    return project


def _server_text(server: str) -> str:
    """Every deployment on the server as the API sends it, one JSON text."""
    import json

    async def go() -> str:
        async with PrefectApi(server) as api:
            listed = await api.list_deployments()
            full = [await api.read_deployment(str(d["id"])) for d in listed]
            return json.dumps([listed, full])

    return asyncio.run(go())


def _run_reader(server: str, settings: Any, out: Any, tmp: Any) -> str:
    from deploy_lib.runs import run_deployment
    from deploy_lib.server import background_worker

    async def go() -> Any:
        async with PrefectApi(server) as api:
            return await run_deployment(
                api, settings, "secret-reader", {"out": str(out)}, timeout=120
            )

    url = pipeline.api_url(settings, start=False)
    env = {"PREFECT_HOME": str(tmp / "home")}
    with background_worker(settings, url, poll_seconds=1, env=env, log_path=tmp / "w.log"):
        asyncio.run(go())
    return str(out.read_text())


def test_a_secret_env_var_lives_in_a_secret_block_that_a_real_worker_resolves(
    tmp_path: Any, deploy_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy_lib.settings import load_settings

    project = _secret_project(tmp_path / "p", deploy_server)
    monkeypatch.setenv("DEPLOY_API_URL", deploy_server)
    settings = load_settings("development", project)
    pipeline.pools(settings, create=True)
    block = "deploy-lib-secrets-e2e-development-db-password"

    first = pipeline.deploy(pipeline.prepare(settings))
    first.raise_if_failed()

    text = _server_text(deploy_server)
    assert SECRET not in text
    assert "{{ prefect.blocks.secret." + block + " }}" in text
    assert SECRET not in json_text(first.plan.to_dict())
    assert _run_reader(deploy_server, settings, tmp_path / "seen-1", tmp_path) == SECRET

    # Unchanged: nothing written, the block included.
    again = pipeline.deploy(pipeline.prepare(settings))
    assert again.plan.counts["unchanged"] == 1 and again.result is not None
    assert again.result.counts.get("unchanged") == 1

    # A new value: the plan says so without it, the block takes it, the run sees it.
    (project / ".secrets.toml").write_text('[development.env_vars]\nDB_PASSWORD = "pw-second-9876"\n')
    changed = pipeline.deploy(pipeline.prepare(load_settings("development", project)))
    update = changed.plan.changes[0]
    assert update.action == "update"
    assert [(d.path, d.new) for d in update.diff] == [("secrets.DB_PASSWORD", "secret changed")]
    assert "pw-second-9876" not in json_text(changed.plan.to_dict())
    assert "pw-second-9876" not in _server_text(deploy_server)
    assert _run_reader(deploy_server, settings, tmp_path / "seen-2", tmp_path) == "pw-second-9876"

    # The secret gone from the settings: a prune removes the block no deployment uses.
    (project / ".secrets.toml").write_text("")
    pruned = pipeline.deploy(pipeline.prepare(load_settings("development", project)), prune=True)
    pruned.raise_if_failed()
    assert pruned.secrets_removed == (block,)


def json_text(data: Any) -> str:
    import json

    return json.dumps(data, default=str)


# -- how many writes are in flight: found as the run goes ---------------------------------


def test_the_limit_starts_low_and_grows_while_the_server_keeps_up() -> None:
    from deploy_lib.apply import AdaptiveLimit

    limit = AdaptiveLimit(6, window=4)
    assert limit.limit == 2
    for _ in range(4 * 10):
        limit.record(0.05)
    assert limit.limit == limit.peak == 6  # never beyond the setting


def test_a_busy_answer_halves_the_limit_and_a_slow_window_takes_one_away() -> None:
    from deploy_lib.apply import AdaptiveLimit

    limit = AdaptiveLimit(8, start=8, window=4)
    limit.record(0.05, busy=True)
    assert limit.limit == 4
    for _ in range(4):
        limit.record(0.05)  # the best window so far; the limit grows again
    assert limit.limit == 5
    for _ in range(4):
        limit.record(0.5)  # ten times slower
    assert limit.limit == 4
    for _ in range(5):
        limit.record(0.05, busy=True)
    assert limit.limit == 1  # never below one
    assert AdaptiveLimit(1).limit == 1


def test_waiting_writes_are_let_in_first_come_first_served_one_per_free_slot() -> None:
    from deploy_lib.apply import AdaptiveLimit

    async def scenario() -> tuple[list[int], int]:
        limit = AdaptiveLimit(2, start=2)
        order: list[int] = []
        most = 0

        async def write(i: int) -> None:
            nonlocal most
            async with limit:
                order.append(i)
                most = max(most, limit._active)
                await asyncio.sleep(0)

        await asyncio.gather(*(write(i) for i in range(300)))
        assert limit._active == 0 and not limit._waiting
        return order, most

    order, most = asyncio.run(scenario())
    assert order == list(range(300)) and most == 2


def test_a_waiting_write_that_is_cancelled_takes_no_slot_and_passes_on_one_it_was_given() -> None:
    from deploy_lib.apply import AdaptiveLimit

    async def scenario() -> list[str]:
        limit = AdaptiveLimit(1, start=1)
        entered: list[str] = []

        async def write(name: str, hold: asyncio.Event) -> None:
            async with limit:
                entered.append(name)
                await hold.wait()

        first_done, never = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(write("first", first_done))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(write("cancelled while waiting", never))
        given = asyncio.ensure_future(write("cancelled once let in", never))
        last = asyncio.ensure_future(write("last", asyncio.Event()))
        await asyncio.sleep(0)
        waiting.cancel()
        first_done.set()  # frees the slot: "given" is let in ...
        await asyncio.sleep(0)
        given.cancel()  # ... and cancelled before it ran: the slot goes on to "last"
        await asyncio.gather(first, waiting, given, return_exceptions=True)
        last.cancel()
        await asyncio.gather(last, return_exceptions=True)
        assert limit._active == 0
        return entered

    assert asyncio.run(scenario()) == ["first", "last"]


async def _in_flight_peak(limit_max: int, busy_every: int) -> tuple[int, int]:
    """Run 60 writes through apply_plan on a fake API that answers 'busy' (counts a
    429) every ``busy_every`` writes; return the most in flight, and the limit's end."""
    from deploy_lib import apply as applying

    class Api:
        busy_count = 0
        in_flight = 0
        peak = 0
        writes = 0

        async def ensure_flow(self, name: str) -> str:
            return "flow-id"

        async def upsert_deployment(self, body: Mapping[str, Any]) -> tuple[str, bool]:
            Api.in_flight += 1
            Api.peak = max(Api.peak, Api.in_flight)
            Api.writes += 1
            if busy_every and Api.writes % busy_every == 0:
                Api.busy_count += 1
            await asyncio.sleep(0.002)
            Api.in_flight -= 1
            return f"id-{body['name']}", True

    specs = [spec(body(f"flow-{i}")) for i in range(60)]
    plan = make_plan(specs, [], "development")
    seen: list[Any] = []
    original = applying.AdaptiveLimit

    class Watched(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, window=4, **kwargs)
            seen.append(self)

    applying.AdaptiveLimit = Watched
    try:
        result = await applying.apply_plan(Api(), plan, concurrency=limit_max, prune=False)
    finally:
        applying.AdaptiveLimit = original
    assert not result.failed
    return Api.peak, seen[0].limit


def test_apply_grows_to_the_setting_and_backs_off_when_the_server_is_busy() -> None:
    peak, end = asyncio.run(_in_flight_peak(5, busy_every=0))
    assert peak == 5 and end == 5
    _, busy_end = asyncio.run(_in_flight_peak(5, busy_every=3))
    assert busy_end <= 2  # halved again and again
