"""plan.py: desired specs against the server's live deployments."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import pytest

from deploy_lib.errors import ApiError, ValidationFailed
from deploy_lib.models import (
    CONFLICT,
    LABEL_FIELDS,
    LABEL_FINGERPRINT,
    LABEL_SECRET_PREFIX,
    LABEL_TRIGGERS,
    MANAGED_BY_TAG,
    RENAME,
    DeploymentSpec,
    FlowMetadata,
    matches_salted_hash,
)
from deploy_lib.plan import (
    CREATE,
    DELETE,
    UNCHANGED,
    UPDATE,
    FieldChange,
    diff_bodies,
    make_plan,
    saved_plan,
    stale_reasons,
    stamped,
)

ENV = "development"


def desired_body(
    flow: str = "daily-etl", name: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A deployment body as build.py produces it (the body LIVE_RESPONSE was made from)."""
    body: dict[str, Any] = {
        "name": name or f"{flow}-python",
        "flow_name": flow,
        "entrypoint": "flows/etl/daily.py:daily_etl",
        "description": None,
        "version": None,
        "work_pool_name": "default-agent-pool",
        "work_queue_name": "default",
        "tags": [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"],
        "parameters": {"debug": True, "cleanup": False},
        "parameter_openapi_schema": {
            "type": "object",
            "title": "Parameters",
            "properties": {
                "debug": {"type": "boolean", "title": "debug", "default": False, "position": 0},
                "cleanup": {"type": "boolean", "title": "cleanup", "default": False, "position": 1},
            },
            "required": [],
        },
        "job_variables": {"env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "DEBUG"}},
        "pull_steps": [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/srv/project"}}
        ],
        "schedules": [
            {"schedule": {"cron": "0 6 * * *", "timezone": "UTC"}, "active": True},
            {"schedule": {"interval": 3600}, "active": True},
            {
                "schedule": {
                    "interval": 600,
                    "anchor_date": "2026-01-01T01:00:00+01:00",
                    "timezone": "Europe/Berlin",
                },
                "active": True,
            },
            {"schedule": {"rrule": "FREQ=DAILY;BYHOUR=9"}, "active": True},
            {"schedule": {"cron": "0 7 * * *"}, "active": True},
        ],
        "concurrency_limit": 2,
        "paused": False,
        "enforce_parameter_schema": True,
    }
    body.update(overrides)
    return body


# What a Prefect 3.9 server answered (POST /deployments/filter) for desired_body(), with
# `flow_name` added as the API module does.  Note what the server does on its own:
# schedules in another order with ids, intervals as float seconds with an anchor_date it
# picked, a DTSTART line before the rrule, `day_or` and a null timezone on the cron,
# concurrency_limit null with the real limit in global_concurrency_limit.
LIVE_RESPONSE: dict[str, Any] = {
    "id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
    "created": "2026-11-26T06:03:26.978887Z",
    "updated": "2026-11-26T06:03:27.022000Z",
    "name": "daily-etl-python",
    "version": None,
    "description": None,
    "flow_id": "5722f73b-923f-4dee-bcc9-8cac81958151",
    "paused": False,
    "schedules": [
        {
            "id": "a073b4c1-0d3f-49ff-9ef2-1c2d16437636",
            "created": "2026-11-26T06:03:27.007575Z",
            "updated": "2026-11-26T06:03:27.007586Z",
            "deployment_id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
            "schedule": {"cron": "0 7 * * *", "timezone": None, "day_or": True},
            "active": True,
            "max_scheduled_runs": None,
            "parameters": {},
            "slug": None,
        },
        {
            "id": "be789dc4-ef6b-4cb6-875a-42dfe7ee0d37",
            "created": "2026-11-26T06:03:27.007550Z",
            "updated": "2026-11-26T06:03:27.007561Z",
            "deployment_id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
            "schedule": {
                "rrule": "DTSTART:20200101T000000\nFREQ=DAILY;BYHOUR=9",
                "timezone": "UTC",
            },
            "active": True,
            "max_scheduled_runs": None,
            "parameters": {},
            "slug": None,
        },
        {
            "id": "ec81dcaf-ff09-4825-b626-affcf648e440",
            "created": "2026-11-26T06:03:27.007524Z",
            "updated": "2026-11-26T06:03:27.007536Z",
            "deployment_id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
            "schedule": {
                "interval": 600.0,
                "anchor_date": "2026-01-01T00:00:00Z",
                "timezone": "Europe/Berlin",
            },
            "active": True,
            "max_scheduled_runs": None,
            "parameters": {},
            "slug": None,
        },
        {
            "id": "7316e88a-aa3e-481a-827a-6ff17a9462bc",
            "created": "2026-11-26T06:03:27.007498Z",
            "updated": "2026-11-26T06:03:27.007509Z",
            "deployment_id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
            "schedule": {
                "interval": 3600.0,
                "anchor_date": "2026-11-26T06:03:26.968745Z",
                "timezone": "UTC",
            },
            "active": True,
            "max_scheduled_runs": None,
            "parameters": {},
            "slug": None,
        },
        {
            "id": "b022b096-3ee1-4569-980b-42fe165b721b",
            "created": "2026-11-26T06:03:27.007395Z",
            "updated": "2026-11-26T06:03:27.007477Z",
            "deployment_id": "0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
            "schedule": {"cron": "0 6 * * *", "timezone": "UTC", "day_or": True},
            "active": True,
            "max_scheduled_runs": None,
            "parameters": {},
            "slug": None,
        },
    ],
    "concurrency_limit": None,
    "global_concurrency_limit": {
        "id": "7587b071-a212-4b05-ba35-c0e1794aa9ef",
        "created": "2026-11-26T06:03:27.020754Z",
        "updated": "2026-11-26T06:03:27.020794Z",
        "active": True,
        "name": "deployment:0557b9c9-2b95-46b4-8c69-4b9d52a855a2",
        "limit": 2,
        "active_slots": 0,
        "slot_decay_per_second": 0.0,
    },
    "concurrency_options": None,
    "job_variables": {"env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "DEBUG"}},
    "parameters": {"debug": True, "cleanup": False},
    "tags": [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"],
    "labels": {"prefect.flow.id": "5722f73b-923f-4dee-bcc9-8cac81958151"},
    "work_queue_name": "default",
    "work_queue_id": "9b6cfd44-b9b2-4280-9c0b-7b30cab786b7",
    "last_polled": None,
    "parameter_openapi_schema": {
        "type": "object",
        "title": "Parameters",
        "properties": {
            "debug": {"type": "boolean", "title": "debug", "default": False, "position": 0},
            "cleanup": {"type": "boolean", "title": "cleanup", "default": False, "position": 1},
        },
        "required": [],
    },
    "path": None,
    "pull_steps": [
        {"prefect.deployments.steps.set_working_directory": {"directory": "/srv/project"}}
    ],
    "entrypoint": "flows/etl/daily.py:daily_etl",
    "storage_document_id": None,
    "infrastructure_document_id": None,
    "created_by": None,
    "updated_by": None,
    "work_pool_name": "default-agent-pool",
    "status": "NOT_READY",
    "enforce_parameter_schema": True,
    "flow_name": "daily-etl",
}


def spec(body: dict[str, Any], type_: str = "python", env: str = ENV) -> DeploymentSpec:
    flow = FlowMetadata(name=body["flow_name"], function="main", path="flows/x.py")
    return DeploymentSpec(type=type_, env=env, flow=flow, body=body)


def live(**overrides: Any) -> dict[str, Any]:
    item = copy.deepcopy(LIVE_RESPONSE)
    item.update(overrides)
    return item


def live_named(flow: str, name: str, tags: list[str], id_: str) -> dict[str, Any]:
    return live(flow_name=flow, name=name, tags=tags, id=id_)


def test_redeploy_of_the_captured_server_response_is_unchanged() -> None:
    plan = make_plan([spec(desired_body())], [live()], ENV)

    (change,) = plan.changes
    assert change.action == UNCHANGED
    assert change.diff == ()
    assert change.live_id == LIVE_RESPONSE["id"]
    assert change.body is None
    assert not plan.has_changes


@pytest.mark.parametrize(
    ("desired_overrides", "live_overrides"),
    [
        pytest.param(
            {"tags": ["runtime:python", f"env:{ENV}", MANAGED_BY_TAG, "runtime:python"]},
            {},
            id="tags in another order and repeated",
        ),
        pytest.param(
            {"description": ""}, {"description": None}, id="an empty description equals none"
        ),
        pytest.param({"version": None}, {"version": ""}, id="an empty version equals none"),
        pytest.param(
            {"work_queue_name": None}, {}, id="no work queue means the pool's default queue"
        ),
        pytest.param(
            {"parameter_openapi_schema": None},
            {"parameter_openapi_schema": {"type": "object", "properties": {}}},
            id="no parameter schema equals the server's default schema",
        ),
        pytest.param(
            {"pull_steps": []}, {"pull_steps": None}, id="no pull steps equals null pull steps"
        ),
        pytest.param(
            {"job_variables": None}, {"job_variables": {}}, id="null job variables equal empty ones"
        ),
        pytest.param(
            {"concurrency_limit": None},
            {"global_concurrency_limit": None},
            id="no concurrency limit on either side",
        ),
        pytest.param(
            {"schedules": [{"schedule": {"cron": "0 6 * * *"}, "active": True}]},
            {
                "schedules": [
                    {
                        "id": "s1",
                        "schedule": {"cron": "0 6 * * *", "timezone": "UTC", "day_or": True},
                        "active": True,
                        "parameters": {},
                        "slug": None,
                    }
                ]
            },
            id="a cron without timezone equals UTC",
        ),
        pytest.param(
            {"schedules": [{"schedule": {"interval": 90, "timezone": "UTC"}, "active": True}]},
            {
                "schedules": [
                    {
                        "id": "s1",
                        "schedule": {
                            "interval": 90.0,
                            "anchor_date": "2026-11-26T06:03:26Z",
                            "timezone": "UTC",
                        },
                        "active": True,
                        "parameters": {},
                        "slug": None,
                    }
                ]
            },
            id="an integer interval equals the server's float seconds and picked anchor",
        ),
        pytest.param(
            {
                "schedules": [
                    {
                        "schedule": {"interval": 60, "anchor_date": "2026-01-01T00:00:00"},
                        "active": True,
                    }
                ]
            },
            {
                "schedules": [
                    {
                        "id": "s1",
                        "schedule": {
                            "interval": 60.0,
                            "anchor_date": "2026-01-01T00:00:00Z",
                            "timezone": "UTC",
                        },
                        "active": True,
                        "parameters": {},
                        "slug": None,
                    }
                ]
            },
            id="a naive anchor date is read in the schedule's zone",
        ),
        pytest.param(
            {"schedules": [{"schedule": {"rrule": "FREQ=MINUTELY;INTERVAL=15"}, "active": True}]},
            {
                "schedules": [
                    {
                        "id": "s1",
                        "schedule": {
                            "rrule": "DTSTART:20261126T060000\nFREQ=MINUTELY;INTERVAL=15",
                            "timezone": "UTC",
                        },
                        "active": True,
                        "parameters": {},
                        "slug": None,
                    }
                ]
            },
            id="the DTSTART the server puts before an rrule is not a change",
        ),
        pytest.param(
            {"parameters": {"ratio": 1}},
            {"parameters": {"ratio": 1.0}},
            id="an integer parameter equals its float form",
        ),
    ],
)
def test_server_side_defaults_do_not_count_as_changes(
    desired_overrides: dict[str, Any], live_overrides: dict[str, Any]
) -> None:
    plan = make_plan([spec(desired_body(**desired_overrides))], [live(**live_overrides)], ENV)

    assert [c.action for c in plan.changes] == [UNCHANGED], plan.changes[0].diff


def test_a_desired_deployment_missing_on_the_server_is_a_create() -> None:
    other_flow_same_name = live(flow_name="other-flow", entrypoint="flows/other.py:other")
    body = desired_body()

    plan = make_plan([spec(body)], [other_flow_same_name], ENV)

    create = plan.by_action(CREATE)
    assert [c.deployment for c in create] == ["daily-etl/daily-etl-python"]
    written = dict(create[0].body or {})
    labels = written.pop("labels")
    assert written == body  # the body as built, plus the fingerprint of what is written
    assert set(labels) == {LABEL_FINGERPRINT, LABEL_FIELDS}
    assert create[0].live_id is None
    assert create[0].type == "python"
    assert plan.has_changes


def test_an_update_lists_each_changed_field_by_dotted_path() -> None:
    body = desired_body(
        job_variables={"env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "INFO", "EXTRA": "1"}},
        parameters={"debug": False, "cleanup": False},
        concurrency_limit=5,
        description="nightly load",
    )

    plan = make_plan([spec(body)], [live()], ENV)

    (change,) = plan.changes
    assert change.action == UPDATE
    assert change.live_id == LIVE_RESPONSE["id"]
    assert list(change.diff) == [
        FieldChange("description", None, "nightly load"),
        FieldChange("parameters.debug", True, False),
        FieldChange("job_variables.env.EXTRA", None, "1"),
        FieldChange("job_variables.env.PREFECT_LOGGING_LEVEL", "DEBUG", "INFO"),
        FieldChange("concurrency_limit", 2, 5),
    ]


def test_a_boolean_is_not_equal_to_the_number_one() -> None:
    diff = diff_bodies(desired_body(parameters={"debug": 1, "cleanup": False}), live())

    assert diff == [FieldChange("parameters.debug", True, 1)]


def test_an_update_keeps_each_live_schedules_active_state() -> None:
    current = live()
    current["schedules"][3]["active"] = False  # someone paused the hourly interval
    body = desired_body(description="changed")
    body["schedules"].append({"schedule": {"cron": "30 5 * * *"}, "active": True})

    plan = make_plan([spec(body)], [current], ENV)

    (change,) = plan.changes
    assert change.action == UPDATE
    assert change.body is not None
    sent = {repr(s["schedule"]): s["active"] for s in change.body["schedules"]}
    hourly = {"interval": 3600, "anchor_date": "2026-11-26T06:03:26.968745Z"}
    assert sent[repr(hourly)] is False, "the paused schedule stays paused"
    assert sent[repr({"cron": "30 5 * * *"})] is True, "a new schedule keeps its own flag"
    assert sent[repr({"cron": "0 6 * * *", "timezone": "UTC"})] is True
    assert body["schedules"][1]["schedule"] == {"interval": 3600}, "the spec is not modified"


def test_a_schedule_paused_on_the_server_alone_is_not_a_change() -> None:
    current = live()
    for schedule in current["schedules"]:
        schedule["active"] = False

    plan = make_plan([spec(desired_body())], [current], ENV)

    assert plan.changes[0].action == UNCHANGED


def test_a_changed_schedule_definition_is_an_update_of_schedules() -> None:
    body = desired_body(
        schedules=[{"schedule": {"cron": "0 8 * * *", "timezone": "UTC"}, "active": True}]
    )
    current = live(
        schedules=[
            {
                "id": "s1",
                "schedule": {"cron": "0 6 * * *", "timezone": "UTC", "day_or": True},
                "active": False,
                "parameters": {},
                "slug": None,
            }
        ]
    )

    plan = make_plan([spec(body)], [current], ENV)

    (change,) = plan.changes
    assert [fc.path for fc in change.diff] == ["schedules"]
    assert change.diff[0].old[0]["schedule"]["cron"] == "0 6 * * *"
    assert change.diff[0].new[0]["schedule"]["cron"] == "0 8 * * *"
    assert change.body is not None
    assert change.body["schedules"] == [
        {"schedule": {"cron": "0 8 * * *", "timezone": "UTC"}, "active": True}
    ]


def test_an_explicit_anchor_date_that_moved_is_an_update() -> None:
    body = desired_body(
        schedules=[
            {"schedule": {"interval": 600, "anchor_date": "2026-02-01T00:00:00Z"}, "active": True}
        ]
    )
    current = live(
        schedules=[
            {
                "id": "s1",
                "schedule": {
                    "interval": 600.0,
                    "anchor_date": "2026-01-01T00:00:00Z",
                    "timezone": "UTC",
                },
                "active": True,
                "parameters": {},
                "slug": None,
            }
        ]
    )

    assert make_plan([spec(body)], [current], ENV).changes[0].action == UPDATE


def test_a_removed_schedule_is_an_update() -> None:
    body = desired_body()
    body["schedules"] = body["schedules"][:-1]

    (change,) = make_plan([spec(body)], [live()], ENV).changes

    assert change.action == UPDATE
    assert [fc.path for fc in change.diff] == ["schedules"]
    assert len(change.diff[0].old) == 5
    assert len(change.diff[0].new) == 4


def test_only_managed_deployments_of_this_env_that_are_no_longer_desired_are_deleted() -> None:
    managed_here = live_named(
        "old-flow", "old-flow-python", [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"], "id-1"
    )
    managed_elsewhere = live_named(
        "old-flow", "old-flow-staging", [MANAGED_BY_TAG, "env:staging"], "id-2"
    )
    hand_made_here = live_named("manual", "manual", [f"env:{ENV}"], "id-3")
    untagged = live_named("manual", "other", [], "id-4")

    plan = make_plan(
        [spec(desired_body())],
        [live(), managed_here, managed_elsewhere, hand_made_here, untagged],
        ENV,
    )

    deletes = plan.by_action(DELETE)
    assert [(c.deployment, c.live_id, c.type) for c in deletes] == [
        ("old-flow/old-flow-python", "id-1", "python")
    ]
    assert deletes[0].body is None
    assert plan.counts == {CREATE: 0, UPDATE: 0, UNCHANGED: 1, DELETE: 1, CONFLICT: 0, "rename": 0}
    assert plan.has_changes


@pytest.mark.parametrize(
    ("protected", "entrypoint"),
    [
        ({"flows/old.py": "flow file flows/old.py has problems"}, "flows/old.py:old"),
        ({"flows.old": "flow file flows/old.py has problems"}, "flows.old:old"),
        ({"flows/sub/": "flows/sub could not be read"}, "flows/sub/deep/old.py:old"),
        ({"/": ". could not be read"}, "anywhere.py:old"),
    ],
    ids=["path form", "module form", "under a folder that could not be read", "the root"],
)
def test_a_delete_whose_flow_file_has_problems_is_kept_and_counts_as_no_change(
    protected: dict[str, str], entrypoint: str
) -> None:
    gone = live_named("old", "old", [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"], "id-1")
    gone["entrypoint"] = entrypoint

    plan = make_plan([spec(desired_body())], [live(), gone], ENV, protected=protected)

    (kept,) = plan.kept
    assert (kept.deployment, kept.action, kept.kept) == ("old/old", DELETE, next(iter(protected.values())))
    assert plan.by_action(DELETE) == []
    assert plan.counts[DELETE] == 0
    assert not plan.has_changes
    assert kept.to_dict()["kept"] == kept.kept


def test_a_delete_elsewhere_is_not_kept_by_a_file_with_problems() -> None:
    gone = live_named("old", "old", [MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"], "id-1")
    gone["entrypoint"] = "flows/other.py:old"
    plan = make_plan([], [gone], ENV, protected={"flows/old.py": "x", "flows/sub/": "y"})
    assert [c.deployment for c in plan.by_action(DELETE)] == ["old/old"]


def test_the_plan_is_the_same_whatever_the_input_order() -> None:
    bodies = [desired_body(flow=f"flow-{i}") for i in range(6)]
    lives = [
        live(flow_name="flow-1", name="flow-1-python", id="a"),
        live(flow_name="flow-3", name="flow-3-python", id="b", description="drifted"),
        live_named("gone", "gone-python", [MANAGED_BY_TAG, f"env:{ENV}"], "c"),
        live_named("also-gone", "also-gone-python", [MANAGED_BY_TAG, f"env:{ENV}"], "d"),
    ]
    first = make_plan([spec(b) for b in bodies], lives, ENV).to_dict()

    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(bodies)
        rng.shuffle(lives)
        assert make_plan([spec(b) for b in bodies], lives, ENV).to_dict() == first
    assert [c["deployment"] for c in first["changes"]] == sorted(
        c["deployment"] for c in first["changes"]
    )


def test_to_dict_has_env_changes_and_summary() -> None:
    body = desired_body(concurrency_limit=3)

    data = make_plan([spec(body)], [live()], ENV).to_dict()

    assert data == {
        "env": ENV,
        "changes": [
            {
                "action": UPDATE,
                "deployment": "daily-etl/daily-etl-python",
                "type": "python",
                "id": LIVE_RESPONSE["id"],
                "diff": [{"path": "concurrency_limit", "old": 2, "new": 3}],
                "drift": [],
            }
        ],
        "summary": {CREATE: 0, UPDATE: 1, UNCHANGED: 0, DELETE: 0, CONFLICT: 0, "rename": 0},
    }


def test_two_desired_deployments_with_the_same_name_are_rejected() -> None:
    with pytest.raises(ValidationFailed) as caught:
        make_plan([spec(desired_body()), spec(desired_body())], [], ENV)

    assert "deployment 'daily-etl/daily-etl-python'" in str(caught.value)
    assert "2 deployments share this flow and name" in str(caught.value)


def test_a_live_deployment_without_its_flow_name_is_an_api_error() -> None:
    item = live()
    del item["flow_name"]

    with pytest.raises(ApiError, match="has no name or flow_name"):
        make_plan([spec(desired_body())], [item], ENV)


# -- ownership, drift, renames --------------------------------------------------------------

PROJECT = "proj"


def ours_body(**overrides: Any) -> dict[str, Any]:
    """desired_body as build makes it for this project: with its project tag."""
    body = desired_body(**overrides)
    body["tags"] = [*body["tags"], f"project:{PROJECT}"]
    return body


def owned(**overrides: Any) -> dict[str, Any]:
    """LIVE_RESPONSE as this project wrote it: ownership tags and the fingerprint labels
    of the body it wrote."""
    written = stamped(ours_body())
    item = live(tags=ours_body()["tags"], labels={"prefect.flow.id": "x", **written["labels"]})
    item.update(overrides)
    return item


def test_a_same_name_deployment_that_is_not_ours_is_a_conflict_naming_its_owner() -> None:
    by_hand = live(tags=["team:x"])
    other_project = live(tags=[MANAGED_BY_TAG, "env:development", "project:other"])

    for item, owner in [
        (by_hand, "not managed by this project"),
        (other_project, "owned by project 'other', env 'development'"),
    ]:
        plan = make_plan([spec(desired_body())], [item], ENV, project=PROJECT)
        (change,) = plan.changes
        assert change.action == CONFLICT
        assert change.owner is not None and change.owner.startswith(owner)
        assert change.body is None  # nothing would be written


def test_prune_only_deletes_this_projects_deployments_in_this_env() -> None:
    mine = live_named("a", "a", [MANAGED_BY_TAG, "env:development", f"project:{PROJECT}"], "1")
    theirs = live_named("b", "b", [MANAGED_BY_TAG, "env:development", "project:other"], "2")
    other_env = live_named("c", "c", [MANAGED_BY_TAG, "env:staging", f"project:{PROJECT}"], "3")
    legacy = live_named("d", "d", [MANAGED_BY_TAG, "env:development"], "4")

    plan = make_plan([], [mine, theirs, other_env, legacy], ENV, project=PROJECT)

    assert [(c.action, c.deployment) for c in plan.changes] == [("delete", "a/a")]


def test_a_deployment_written_before_projects_is_claimed_not_a_conflict() -> None:
    legacy = live(tags=desired_body()["tags"])

    (change,) = make_plan([spec(ours_body())], [legacy], ENV, project=PROJECT).changes

    assert change.action == UPDATE
    assert [fc.path for fc in change.diff] == ["tags"]  # it gains the project tag


def test_hand_edits_since_the_last_deploy_are_named_as_drift_field_by_field() -> None:
    edited = owned(paused=True, parameters={**desired_body()["parameters"], "rows": 99})

    (change,) = make_plan([spec(ours_body())], [edited], ENV, project=PROJECT).changes

    assert change.action == UPDATE
    assert change.drift == ("parameters", "paused")
    assert {fc.path for fc in change.diff} == {"parameters.rows", "paused"}


def test_a_change_in_code_is_not_drift() -> None:
    (change,) = make_plan(
        [spec(ours_body(concurrency_limit=9))], [owned()], ENV, project=PROJECT
    ).changes

    assert change.action == UPDATE
    assert change.drift == ()


def test_the_same_entrypoint_under_a_new_name_is_one_rename() -> None:
    old = owned(name="old-name", id="id-old")

    plan = make_plan([spec(ours_body())], [old], ENV, project=PROJECT)

    (change,) = plan.changes
    assert (change.action, change.deployment, change.renamed_from, change.live_id) == (
        RENAME, "daily-etl/daily-etl-python", "daily-etl/old-name", "id-old"
    )


def test_a_saved_plan_is_stale_when_the_server_or_the_source_moved() -> None:
    plan = make_plan([spec(ours_body(concurrency_limit=9))], [owned()], ENV, project=PROJECT)
    saved = saved_plan(plan, project=PROJECT, fingerprint="f1")

    assert stale_reasons(saved, plan, project=PROJECT, fingerprint="f1") == []
    moved = make_plan(
        [spec(ours_body(concurrency_limit=9))],
        [owned(updated="2030-01-01T00:00:00Z")],
        ENV,
        project=PROJECT,
    )
    assert stale_reasons(saved, moved, project=PROJECT, fingerprint="f1") == [
        "daily-etl/daily-etl-python: changed on the server since the plan was made"
    ]
    assert stale_reasons(saved, plan, project=PROJECT, fingerprint="f2") == [
        "the flow files, settings or templates changed since the plan was made"
    ]


# -- secrets kept in Secret blocks: compared by a salted hash, never by value -------------

BLOCK = "deploy-lib-p-development-db-password"


def secret_spec(value: str) -> DeploymentSpec:
    body = desired_body()
    body["job_variables"] = {
        "env": {**body["job_variables"]["env"], "DB_PASSWORD": "{{ prefect.blocks.secret." + BLOCK + " }}"}
    }
    return replace(spec(body), secrets={"DB_PASSWORD": (BLOCK, value)})


def written_live(value: str) -> dict[str, Any]:
    """The live deployment as the first write of ``secret_spec(value)`` left it."""
    (change,) = make_plan([secret_spec(value)], [], ENV).changes
    assert change.body is not None
    return live(job_variables=change.body["job_variables"], labels=change.body["labels"])


def test_a_new_secret_is_written_to_its_block_first_and_only_its_hash_is_labelled() -> None:
    (change,) = make_plan([secret_spec("hunter2-value")], [], ENV).changes

    assert change.action == CREATE
    assert change.secret_writes == ((BLOCK, "hunter2-value"),)
    label = change.body["labels"][LABEL_SECRET_PREFIX + "DB_PASSWORD"]
    assert "hunter2" not in label and matches_salted_hash("hunter2-value", label)
    assert "hunter2" not in repr(change)


def test_an_unchanged_secret_whose_block_exists_plans_nothing() -> None:
    plan = make_plan([secret_spec("same")], [written_live("same")], ENV, secret_blocks=[BLOCK])

    (change,) = plan.changes
    assert change.action == UNCHANGED and change.secret_writes == ()


def test_a_changed_secret_is_an_update_that_says_so_without_the_value() -> None:
    plan = make_plan([secret_spec("new-one")], [written_live("old-one")], ENV, secret_blocks=[BLOCK])

    (change,) = plan.changes
    assert change.action == UPDATE
    assert change.diff == (FieldChange("secrets.DB_PASSWORD", "(stored)", "secret changed"),)
    assert change.secret_writes == ((BLOCK, "new-one"),)
    assert "new-one" not in str(plan.to_dict()) and "old-one" not in str(plan.to_dict())


def test_a_block_deleted_by_hand_is_written_again() -> None:
    plan = make_plan([secret_spec("same")], [written_live("same")], ENV, secret_blocks=[])

    (change,) = plan.changes
    assert change.action == UPDATE
    assert change.diff == (FieldChange("secrets.DB_PASSWORD", "(stored)", "secret block missing"),)
    assert change.secret_writes == ((BLOCK, "same"),)


def test_a_renamed_deployment_with_triggers_has_its_old_automations_dropped() -> None:
    old = live(
        name="old-name",
        tags=[MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"],
        labels={LABEL_TRIGGERS: "0123456789"},
    )
    plan = make_plan([spec(desired_body())], [old], ENV)

    (change,) = plan.changes
    assert change.action == RENAME and change.renamed_from == "daily-etl/old-name"
    assert change.drop_old_automations is True
    plain_old = live(name="old-name", tags=[MANAGED_BY_TAG, f"env:{ENV}", "runtime:python"])
    (plain_change,) = make_plan([spec(desired_body())], [plain_old], ENV).changes
    assert plain_change.drop_old_automations is False
