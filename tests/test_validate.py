"""validate_specs: one test per rule (key path and message), collection, flattening, format."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, make_project

from deploy_lib import pipeline
from deploy_lib.api import bundled_job_template, bundled_job_templates
from deploy_lib.errors import EXIT_VALIDATION, ValidationFailed
from deploy_lib.models import DeploymentSpec, FlowMetadata, GitInfo, Parameter, Problem
from deploy_lib.report import report_json, summarize
from deploy_lib.settings import load_settings
from deploy_lib.validate import (
    default_job_variable_problems,
    ensure_valid,
    format_problems,
    validate_specs,
)

PY_TEMPLATE = "templates/python_deployment.yaml"
DOCKER_TEMPLATE = "templates/docker_deployment.yaml"

ETL = FlowMetadata(
    name="etl",
    function="etl",
    path="flows/etl.py",
    parameters=(
        Parameter("day", "str"),
        Parameter("rows", "int", 100, required=False),
        Parameter("debug", "bool", False, required=False),
        Parameter("columns", "list[str] | None", None, required=False),
    ),
    dockerfile="flows/Dockerfile",
)
REPORT = FlowMetadata(
    name="report",
    function="report",
    path="flows/reports/weekly.py",
    parameters=(Parameter("options", None, kind="var_keyword", required=False),),
)
FLOWS = [ETL, REPORT]


TEMPLATES = bundled_job_templates()


def _body(flow: FlowMetadata = ETL, type_: str = "python", **changes: Any) -> dict[str, Any]:
    """A valid body as build renders it; ``changes`` replace top-level keys."""
    if type_ == "docker":
        job_variables: dict[str, Any] = {
            "image": f"registry.staging.internal/deploy-lib/{flow.name}:abc1234",
            "image_pull_policy": "IfNotPresent",
            "env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "INFO"},
            "mem_limit": "2g",
            "memswap_limit": "4g",
        }
        directory = "/opt/prefect/app"
    else:
        job_variables = {
            "env": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "INFO"},
            "working_dir": "/srv/project",
        }
        directory = "/srv/project"
    body: dict[str, Any] = {
        "name": f"{flow.name}-{type_}",
        "flow_name": flow.name,
        "entrypoint": flow.entrypoint,
        "description": "Daily ETL",
        "version": "0123456789ab",
        "work_pool_name": f"staging-{type_}-pool",
        "work_queue_name": "default",
        "tags": [f"runtime:{type_}", "env:staging", "managed-by:deploy-lib"],
        "parameters": {"day": "monday"} if flow is ETL else {},
        "parameter_openapi_schema": {"title": "Parameters", "type": "object", "properties": {}},
        "job_variables": job_variables,
        "pull_steps": [
            {"prefect.deployments.steps.set_working_directory": {"directory": directory}}
        ],
        "schedules": [],
        "concurrency_limit": 5,
        "paused": False,
        "enforce_parameter_schema": True,
    }
    body.update(changes)
    return body


def _spec(
    body: Mapping[str, Any],
    type_: str = "python",
    flow: FlowMetadata = ETL,
    sources: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    source = DOCKER_TEMPLATE if type_ == "docker" else PY_TEMPLATE
    return DeploymentSpec(type_, "staging", flow, body, source, dict(sources or {}))


def _problems(*specs: DeploymentSpec, **kwargs: Any) -> list[Problem]:
    kwargs.setdefault("templates", TEMPLATES)
    return validate_specs(list(specs), FLOWS, **kwargs)


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def _by_key(problems: list[Problem]) -> dict[str | None, str]:
    keys = [p.key for p in problems]
    assert len(keys) == len(set(keys)), [str(p) for p in problems]
    return {p.key: p.message for p in problems}


def _schedule(schedule: dict[str, Any], active: Any = True) -> list[dict[str, Any]]:
    return [{"schedule": schedule, "active": active}]


# --------------------------------------------------------------------- valid input


def test_valid_python_and_docker_bodies_have_no_problems() -> None:
    specs = [
        _spec(_body()),
        _spec(_body(type_="docker"), "docker"),
        _spec(_body(REPORT), flow=REPORT),
    ]
    assert _problems(*specs) == []


def test_module_form_entrypoint_and_schedules_of_each_kind_are_accepted() -> None:
    schedules = [
        {"schedule": {"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin"}, "active": True},
        {"schedule": {"interval": 3600.0, "timezone": "UTC"}, "active": False},
        {
            "schedule": {"rrule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "America/New_York"},
            "active": True,
        },
    ]
    body = _body(entrypoint="flows.etl:etl", schedules=schedules, concurrency_limit=None)
    assert _problems(_spec(body)) == []


# ------------------------------------------------------------------ strict schema


def test_unknown_top_level_key_lists_the_allowed_keys() -> None:
    problem = _only(_problems(_spec(_body(work_pool="typo"))))
    assert problem.key == "work_pool"
    assert problem.message == (
        "unknown key (allowed: concurrency_limit, concurrency_options, description, enforce_parameter_schema, "
        "entrypoint, flow_name, job_variables, name, parameter_openapi_schema, parameters, "
        "paused, pull_steps, schedules, tags, version, work_pool_name, work_queue_name)"
    )
    assert problem.deployment == "etl-python"
    assert problem.source == PY_TEMPLATE


def test_unknown_nested_key_lists_the_keys_allowed_there() -> None:
    body = _body()
    body["job_variables"]["image"] = "python:3.11"  # a docker variable on a process pool
    body["schedules"] = [{"schedule": {"cron": "0 6 * * *"}, "active": True, "enabled": True}]
    found = _by_key(_problems(_spec(body)))
    assert found == {
        "job_variables.image": (
            "unknown key (allowed: command, env, labels, name, stream_output, working_dir)"
        ),
        "schedules.0.enabled": "unknown key (allowed: active, parameters, schedule, slug)",
    }


def test_missing_required_keys_top_level_and_nested() -> None:
    body = _body(schedules=[{"schedule": {"cron": "0 6 * * *"}}])
    del body["paused"]
    del body["work_pool_name"]
    assert _by_key(_problems(_spec(body))) == {
        "paused": "required key is missing",
        "work_pool_name": "required key is missing",
        "schedules.0.active": "required key is missing",
    }


def test_docker_body_without_an_image() -> None:
    body = _body(type_="docker")
    del body["job_variables"]["image"]
    problem = _only(_problems(_spec(body, "docker")))
    assert (problem.key, problem.message) == ("job_variables.image", "required key is missing")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("paused", "yes", "must be true or false (got string 'yes')"),
        ("enforce_parameter_schema", 1, "must be true or false (got integer 1)"),
        ("parameters", ["day"], "must be a mapping (got list ['day'])"),
        ("job_variables", "env=1", "must be a mapping (got string 'env=1')"),
        ("tags", "env:staging", "must be a list (got string 'env:staging')"),
        ("schedules", {"cron": "0 6 * * *"}, "must be a list (got mapping {'cron': '0 6 * * *'})"),
        ("version", 3, "must be a string (got integer 3)"),
        ("work_pool_name", "", "must not be empty"),
        ("work_pool_name", None, "must not be null"),
    ],
)
def test_wrong_types(key: str, value: Any, message: str) -> None:
    problem = _only(_problems(_spec(_body(**{key: value}))))
    assert (problem.key, problem.message) == (key, message)


def test_nullable_keys_accept_null() -> None:
    body = _body(description=None, version=None, work_queue_name=None, concurrency_limit=None)
    assert _problems(_spec(body)) == []


def test_name_with_a_character_prefect_refuses() -> None:
    problem = _only(_problems(_spec(_body(name="etl/python"))))
    assert problem.key == "name"
    assert problem.message == "must be a name without any of / % & < > (got 'etl/python')"
    assert problem.deployment == "etl/python"


def test_malformed_entrypoint() -> None:
    problem = _only(_problems(_spec(_body(entrypoint="flows/etl.py"))))
    assert problem.key == "entrypoint"
    assert problem.message == (
        "must be path/to/file.py:function or package.module:function (got 'flows/etl.py')"
    )


def test_tags_must_be_strings() -> None:
    problems = _problems(_spec(_body(tags=["env:staging", 3, ""])))
    assert _by_key(problems) == {
        "tags.1": "must be a string (got integer 3)",
        "tags.2": "must not be empty",
    }


def test_env_value_must_be_a_string() -> None:
    body = _body()
    body["job_variables"]["env"]["PREFECT_FLOWS_DEFAULT_RETRIES"] = 3
    body["job_variables"]["env"]["2FAST"] = "x"
    assert _by_key(_problems(_spec(body))) == {
        "job_variables.env.PREFECT_FLOWS_DEFAULT_RETRIES": (
            "must be a string: a worker sets environment variables as text, so quote it "
            "(got integer 3)"
        ),
        "job_variables.env.2FAST": (
            "key name must be an environment variable name (letters, digits and _, not "
            "starting with a digit) (got '2FAST')"
        ),
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1 (got 0)"),
        (-1, "must be at least 1 (got -1)"),
        ("x", "must be an integer (got string 'x')"),
        (True, "must be an integer (got boolean True)"),
        (2.5, "must be an integer (got number 2.5)"),
    ],
)
def test_concurrency_limit_must_be_a_positive_integer(value: Any, message: str) -> None:
    problem = _only(_problems(_spec(_body(concurrency_limit=value))))
    assert (problem.key, problem.message) == ("concurrency_limit", message)


def test_problem_names_the_settings_key_a_value_came_from() -> None:
    spec = _spec(
        _body(concurrency_limit=0), sources={"concurrency_limit": "resources.concurrency_limit"}
    )
    problem = _only(_problems(spec))
    assert (
        problem.message == "must be at least 1 (got 0); settings key 'resources.concurrency_limit'"
    )
    assert problem.source == PY_TEMPLATE


@pytest.mark.parametrize(
    ("image", "why"),
    [
        (
            "registry.staging.internal/Deploy-Lib/etl:abc",
            "the repository path must be lowercase",
        ),
        ("registry.staging.internal/deploy-lib/etl: abc", "it contains whitespace"),
        (
            "registry.staging.internal/deploy-lib/etl:",
            "expected [registry[:port]/]path[:tag][@digest], e.g. "
            "registry.example.com:5000/team/flow:1.0",
        ),
        (
            "registry:notaport/etl",
            "expected [registry[:port]/]path[:tag][@digest], e.g. "
            "registry.example.com:5000/team/flow:1.0",
        ),
    ],
)
def test_bad_image_reference(image: str, why: str) -> None:
    body = _body(type_="docker")
    body["job_variables"]["image"] = image
    problem = _only(_problems(_spec(body, "docker")))
    assert problem.key == "job_variables.image"
    assert problem.message == f"is not a valid docker image reference ({why}; got {image!r})"
    assert problem.source == DOCKER_TEMPLATE


def test_docker_sizes_and_pull_policy() -> None:
    body = _body(type_="docker")
    body["job_variables"].update(mem_limit="2 GB", image_pull_policy="Sometimes")
    assert _by_key(_problems(_spec(body, "docker"))) == {
        "job_variables.mem_limit": (
            "must be a size such as 512m or 2g (a number of bytes with an optional b, k, m or g) "
            "(got '2 GB')"
        ),
        "job_variables.image_pull_policy": (
            "must be one of: IfNotPresent, Always, IfPossible, Never (got 'Sometimes')"
        ),
    }


def test_pull_steps_are_single_key_steps_with_their_required_inputs() -> None:
    steps = [
        {"prefect.deployments.steps.set_working_directory": {"directory": ""}},
        {"a.b": {}, "c.d": {}},
        {"git_clone": {"repository": "x"}},
    ]
    assert _by_key(_problems(_spec(_body(pull_steps=steps)))) == {
        "pull_steps.0.prefect.deployments.steps.set_working_directory.directory": (
            "step set_working_directory needs 'directory', a non-empty string"
        ),
        "pull_steps.1": "must be one step per item: {step.function.name: {inputs}} (got 2 keys)",
        "pull_steps.2.git_clone": (
            "key name must be a dotted step function name such as "
            "prefect.deployments.steps.git_clone (got 'git_clone')"
        ),
    }


# ---------------------------------------------------------------------- schedules


def test_bad_cron() -> None:
    problem = _only(_problems(_spec(_body(schedules=_schedule({"cron": "61 * * * *"})))))
    assert problem.key == "schedules.0.schedule.cron"
    assert problem.message == 'Invalid cron string: "61 * * * *"'


def test_bad_timezone_in_a_cron_and_an_interval_schedule() -> None:
    schedules = [
        {"schedule": {"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "active": True},
        {"schedule": {"interval": 60.0, "timezone": "Europe/Atlantis"}, "active": True},
    ]
    found = _by_key(_problems(_spec(_body(schedules=schedules))))
    assert found == {
        "schedules.0.schedule.timezone": (
            'Invalid timezone: "Mars/Olympus" (specify in IANA tzdata format, for example, '
            "America/New_York)"
        ),
        "schedules.1.schedule.timezone": (
            'Invalid timezone: "Europe/Atlantis" (specify in IANA tzdata format, for example, '
            "America/New_York)"
        ),
    }


@pytest.mark.parametrize(("interval", "shown"), [(0.0, "0.0"), (0, "0"), (-30.0, "-30.0")])
def test_interval_must_be_positive(interval: float, shown: str) -> None:
    problem = _only(_problems(_spec(_body(schedules=_schedule({"interval": interval})))))
    assert problem.key == "schedules.0.schedule.interval"
    assert problem.message == f"must be a positive number of seconds (got {shown})"


def test_interval_must_be_a_number() -> None:
    problem = _only(_problems(_spec(_body(schedules=_schedule({"interval": "1h"})))))
    assert problem.key == "schedules.0.schedule.interval"
    assert problem.message == "must be a number of seconds (got string '1h')"


def test_schedule_needs_exactly_one_of_cron_interval_rrule() -> None:
    schedules = [
        {"schedule": {"cron": "0 6 * * *", "interval": 60.0}, "active": True},
        {"schedule": {"timezone": "UTC"}, "active": True},
    ]
    assert _by_key(_problems(_spec(_body(schedules=schedules)))) == {
        "schedules.0.schedule": "needs exactly one of cron, interval or rrule; found cron and interval",
        "schedules.1.schedule": "needs exactly one of cron, interval or rrule",
    }


def test_bad_rrule() -> None:
    problem = _only(_problems(_spec(_body(schedules=_schedule({"rrule": "FREQ=SOMETIMES"})))))
    assert problem.key == "schedules.0.schedule.rrule"
    assert problem.message == "Invalid RRule string \"FREQ=SOMETIMES\": invalid 'FREQ': SOMETIMES"


def test_field_of_another_schedule_kind_is_rejected_by_prefects_model() -> None:
    schedule = _schedule({"rrule": "FREQ=DAILY", "day_or": False})
    problem = _only(_problems(_spec(_body(schedules=schedule))))
    assert problem.key == "schedules.0.schedule.day_or"
    assert problem.message == "not allowed in a rrule schedule (allowed: rrule, timezone)"


def test_schedule_active_must_be_a_boolean() -> None:
    problem = _only(_problems(_spec(_body(schedules=_schedule({"cron": "0 6 * * *"}, "yes")))))
    assert (problem.key, problem.message) == (
        "schedules.0.active",
        "must be true or false (got string 'yes')",
    )


def test_validation_without_schedules_never_imports_prefect() -> None:
    code = textwrap.dedent(
        """
        import sys
        from deploy_lib.models import DeploymentSpec, FlowMetadata
        from deploy_lib.validate import validate_specs
        flow = FlowMetadata(name="f", function="f", path="f.py")
        body = {"name": "f", "concurrency_limit": 0, "schedules": []}
        problems = validate_specs([DeploymentSpec("python", "dev", flow, body)], [flow])
        assert problems, problems
        print(sorted(m for m in sys.modules if m.split(".")[0] == "prefect"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------- cross checks


def test_entrypoint_file_that_is_not_a_flow_file() -> None:
    problem = _only(_problems(_spec(_body(entrypoint="flows/missing.py:main"))))
    assert problem.key == "entrypoint"
    assert problem.message == (
        "no discovered flow at 'flows/missing.py:main' (flows/missing.py is not a flow file "
        "under the flow roots)"
    )


def test_entrypoint_typo_suggests_the_closest_flows() -> None:
    problem = _only(_problems(_spec(_body(entrypoint="flows/etls.py:etl"))))
    assert problem.message == (
        "no discovered flow at 'flows/etls.py:etl' (flows/etls.py is not a flow file under "
        "the flow roots); did you mean flows/etl.py:etl?"
    )


def test_entrypoint_names_a_missing_function_in_a_flow_file() -> None:
    problem = _only(_problems(_spec(_body(entrypoint="flows.etl:extract"))))
    assert problem.key == "entrypoint"
    assert problem.message == "flows/etl.py has no flow 'extract'; flows in that file: etl"


def test_entrypoint_names_a_function_that_is_not_a_flow() -> None:
    functions = {"flows/etl.py": ("helper",), "flows/util.py": ("slugify",)}
    first = _only(_problems(_spec(_body(entrypoint="flows/etl.py:helper")), functions=functions))
    second = _only(_problems(_spec(_body(entrypoint="flows.util:slugify")), functions=functions))
    assert first.message == (
        "helper() in flows/etl.py is not a flow: decorate it with @flow (from prefect import flow)"
    )
    assert second.message == (
        "slugify() in flows/util.py is not a flow: decorate it with @flow (from prefect import flow)"
    )


def test_entrypoint_pointing_at_a_flow_with_problems() -> None:
    broken = FlowMetadata(
        name="broken", function="broken", path="flows/broken.py", problems=("flow name is empty",)
    )
    body = _body(broken, name="broken-python", parameters={})
    problems = validate_specs([_spec(body, flow=broken)], [broken], templates=TEMPLATES)
    assert _only(problems).message == (
        "points at flow 'broken', which has problems: flow name is empty"
    )


def test_flow_name_must_match_the_flow_at_the_entrypoint() -> None:
    problem = _only(_problems(_spec(_body(flow_name="daily"))))
    assert (problem.key, problem.message) == (
        "flow_name",
        "is 'daily', but the flow at flows/etl.py:etl is named 'etl'",
    )


def test_unknown_parameter_names_its_settings_key() -> None:
    spec = _spec(
        _body(parameters={"day": "monday", "limit": 5}),
        sources={"parameters.limit": "flows.etl.parameters.limit"},
    )
    problem = _only(_problems(spec))
    assert problem.key == "parameters.limit"
    assert problem.message == (
        "unknown parameter 'limit': flow 'etl' accepts day, rows, debug, columns"
    )
    assert problem.source == "settings key 'flows.etl.parameters.limit'"


def test_any_parameter_is_accepted_by_a_flow_taking_kwargs() -> None:
    body = _body(REPORT, parameters={"anything": 1, "else": [2]})
    assert _problems(_spec(body, flow=REPORT)) == []


def test_a_required_parameter_without_a_value_is_no_problem_each_run_passes_it() -> None:
    assert _problems(_spec(_body(parameters={"rows": 5}))) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("rows", "many", "parameter 'rows' of flow 'etl' expects int, got string 'many'"),
        ("rows", True, "parameter 'rows' of flow 'etl' expects int, got boolean True"),
        ("debug", "yes", "parameter 'debug' of flow 'etl' expects bool, got string 'yes'"),
        (
            "columns",
            ["a", 1],
            "parameter 'columns' of flow 'etl' expects list[str] | None, got list ['a', 1]",
        ),
    ],
)
def test_wrong_parameter_type(name: str, value: Any, message: str) -> None:
    spec = _spec(
        _body(parameters={"day": "monday", name: value}),
        sources={f"parameters.{name}": f"parameters.{name}"},
    )
    problem = _only(_problems(spec))
    assert (problem.key, problem.message) == (f"parameters.{name}", message)
    assert problem.source == f"settings key 'parameters.{name}'"


def test_parameters_of_unknown_annotations_are_not_type_checked() -> None:
    flow = FlowMetadata(
        name="etl", function="etl", path="flows/etl.py", parameters=(Parameter("cfg", "Config"),)
    )
    body = _body(flow, parameters={"cfg": "anything"})
    assert validate_specs([_spec(body, flow=flow)], [flow], templates=TEMPLATES) == []


def test_two_flows_may_share_a_deployment_name() -> None:
    first = _spec(_body(name="nightly"))
    second = _spec(_body(REPORT, "docker", name="nightly"), "docker", REPORT)
    assert validate_specs([first, second], FLOWS, templates=TEMPLATES) == []


def test_two_deployments_of_one_flow_with_one_name_are_a_problem_naming_both() -> None:
    first = _spec(_body(name="nightly"))
    second = _spec(_body(name="nightly", type_="docker"), "docker")
    problem = _only(validate_specs([first, second], FLOWS, templates=TEMPLATES))
    assert (problem.deployment, problem.key) == ("etl/nightly", "name")
    assert problem.message.startswith(
        "deployment 'etl/nightly' is used by 2 deployments: flows/etl.py:etl (docker, "
        "templates/docker_deployment.yaml); flows/etl.py:etl (python, "
        "templates/python_deployment.yaml); each deployment of a flow needs its own name"
    )
    assert problem.source == f"{DOCKER_TEMPLATE}, {PY_TEMPLATE}"


# -------------------------------------------------- collection, flattening, format


def _broken_pair() -> list[DeploymentSpec]:
    docker = _body(type_="docker", concurrency_limit=0)
    docker["job_variables"]["env"]["RETRIES"] = 2
    schedules = [{"schedule": {"cron": "0 6 * * *"}, "active": True} for _ in range(11)]
    schedules[2]["schedule"]["cron"] = "bad"
    schedules[10]["schedule"]["cron"] = "worse"
    python = _body(schedules=schedules, parameters={"day": 1})
    return [_spec(python), _spec(docker, "docker")]


def test_every_problem_of_every_deployment_is_collected_in_order() -> None:
    problems = _problems(*reversed(_broken_pair()))
    assert [(p.deployment, p.key) for p in problems] == [
        ("etl-docker", "concurrency_limit"),
        ("etl-docker", "job_variables.env.RETRIES"),
        ("etl-python", "parameters.day"),
        ("etl-python", "schedules.2.schedule.cron"),
        ("etl-python", "schedules.10.schedule.cron"),
    ]
    assert problems == _problems(*_broken_pair())


def test_problems_of_a_shared_value_are_reported_for_each_deployment() -> None:
    env = {"PYTHONPATH": 1}
    first = _body(job_variables={"env": env, "working_dir": "/srv"})
    second = _body(REPORT, job_variables={"env": env, "working_dir": "/srv"})
    problems = _problems(_spec(first), _spec(second, flow=REPORT))
    assert [(p.deployment, p.key) for p in problems] == [
        ("etl-python", "job_variables.env.PYTHONPATH"),
        ("report-python", "job_variables.env.PYTHONPATH"),
    ]


def test_format_problems_groups_by_deployment() -> None:
    text = format_problems(_problems(*_broken_pair()))
    assert text == textwrap.dedent(
        """\
        deployment 'etl-docker' (templates/docker_deployment.yaml):
          concurrency_limit: must be at least 1 (got 0)
          job_variables.env.RETRIES: must be a string: a worker sets environment variables as text, so quote it (got integer 2)
        deployment 'etl-python':
          parameters.day: parameter 'day' of flow 'etl' expects str, got integer 1 [from settings key 'parameters.day' or 'flows.etl.parameters.day']
          schedules.2.schedule.cron: Invalid cron string: "bad" [from templates/python_deployment.yaml]
          schedules.10.schedule.cron: Invalid cron string: "worse" [from templates/python_deployment.yaml]"""
    )


def test_format_problems_puts_problems_without_a_deployment_first() -> None:
    problems = [
        Problem("must be at least 1", deployment="a", key="concurrency_limit", source="t.yaml"),
        Problem("not valid Python", path="flows/x.py", line=3),
    ]
    assert format_problems(problems) == (
        "general:\n"
        "  flows/x.py:3: not valid Python\n"
        "deployment 'a' (t.yaml):\n"
        "  concurrency_limit: must be at least 1"
    )


def test_ensure_valid_raises_once_with_every_problem_grouped() -> None:
    specs = _broken_pair()
    with pytest.raises(ValidationFailed) as caught:
        ensure_valid(specs, FLOWS, templates=TEMPLATES)
    error = caught.value
    assert error.exit_code == EXIT_VALIDATION
    assert len(error.problems) == 5
    assert str(error).splitlines()[0] == (
        "validation failed: 5 problem(s) in 2 deployment(s); nothing was written"
    )
    assert str(error).split("\n", 1)[1] == format_problems(error.problems)
    ensure_valid([_spec(_body())], FLOWS, templates=TEMPLATES)


def test_summary_and_json_report() -> None:
    import json

    specs = [
        _spec(_body()),
        _spec(_body(type_="docker"), "docker"),
        _spec(_body(REPORT), flow=REPORT),
    ]
    assert summarize("staging", specs) == (
        "staging: 3 deployment(s) of 2 flow(s) are valid (1 docker, 2 python)"
    )
    problem = Problem("must be at least 1", deployment="etl-python", key="concurrency_limit")
    assert json.loads(report_json("staging", problems=[problem])) == {
        "env": "staging",
        "valid": False,
        "deployments": [],
        "problems": [
            {
                "message": "must be at least 1",
                "path": None,
                "line": None,
                "deployment": "etl-python",
                "key": "concurrency_limit",
                "source": None,
            }
        ],
        "full_names": [],
        "skipped": [],
        "warnings": [],
    }


def test_validation_does_not_change_the_bodies() -> None:
    specs = _broken_pair()
    before = copy.deepcopy([dict(s.body) for s in specs])
    _problems(*specs)
    assert [dict(s.body) for s in specs] == before


def test_a_body_that_is_not_a_mapping() -> None:
    spec = DeploymentSpec("python", "staging", ETL, ["not", "a", "mapping"], PY_TEMPLATE)  # type: ignore[arg-type]
    problem = _only(validate_specs([spec], FLOWS, templates=TEMPLATES))
    assert problem.deployment == "etl (python)"
    assert problem.message == "the deployment must be a mapping, got list"


# ----------------------------------------------------------------- invoke validate

REPO = Path(__file__).resolve().parents[1]


def _project(tmp_path: Path, extra_settings: str = "") -> Path:
    """A copy of the example project (tasks, settings, templates, flows) in tmp_path."""
    import shutil

    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in ("tasks.py", "settings.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("templates", "flows"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    if extra_settings:
        with (tmp_path / "settings.toml").open("a") as handle:
            handle.write(textwrap.dedent(extra_settings))
    return tmp_path


def _invoke(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke(project, "validate", *args, timeout=120)


def test_invoke_validate_prints_one_line_for_a_valid_environment(tmp_path: Path) -> None:
    done = _invoke(_project(tmp_path), "--env", "staging")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"staging: \d+ deployment\(s\) of \d+ flow\(s\) are valid \(\d+ docker, \d+ python\)\n",
        done.stdout,
    )


BAD_PARAMETERS = """
[staging.flows.hello.parameters]
times = "three"
volume = 11
"""


def test_invoke_validate_lists_every_problem_and_exits_3(tmp_path: Path) -> None:
    done = _invoke(_project(tmp_path, BAD_PARAMETERS), "--env", "staging")
    assert done.returncode == EXIT_VALIDATION
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-4:] == [
        "validation failed: 2 problem(s) in 1 deployment(s); nothing was written",
        "deployment 'hello':",
        "  parameters.times: parameter 'times' of flow 'hello' expects int, got string 'three'"
        " [from settings key 'flows.hello.parameters.times']",
        "  parameters.volume: unknown parameter 'volume': flow 'hello' accepts name, times, "
        "ratio, shout, nickname, mood, tags, scores, since, until, greeting"
        " [from settings key 'flows.hello.parameters.volume']",
    ]


def test_invoke_validate_json(tmp_path: Path) -> None:
    import json

    good = _invoke(_project(tmp_path / "good"), "--env", "production", "--json")
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert (report["env"], report["valid"], report["problems"]) == ("production", True, [])
    assert "table-report-docker" in report["deployments"]

    bad = _invoke(_project(tmp_path / "bad", BAD_PARAMETERS), "--env", "staging", "--json")
    assert bad.returncode == EXIT_VALIDATION
    report = json.loads(bad.stdout)
    assert report["valid"] is False
    assert [(p["deployment"], p["key"]) for p in report["problems"]] == [
        ("hello", "parameters.times"),
        ("hello", "parameters.volume"),
    ]


# -- job variables against Prefect's default job templates (offline) ----------------------


def offline_job_variable_problems(specs: list[DeploymentSpec]) -> list[Problem]:
    templates = {t: bundled_job_template(t) for t in ("process", "docker")}
    return default_job_variable_problems(specs, templates)


def test_a_job_variable_the_default_pool_template_lacks_names_the_variable_and_the_pool(
    tmp_path: Path,
) -> None:
    root = make_project(tmp_path / "project")
    prepared = pipeline.prepare(load_settings("staging", root), git=GitInfo(sha="0" * 40, short_sha="0" * 12))
    docker = next(s for s in prepared.specs if s.type == "docker")
    body = dict(docker.body)
    body["job_variables"] = {**body["job_variables"], "gpu_count": 1}
    odd = DeploymentSpec("docker", "staging", docker.flow, body, source=docker.source)

    assert offline_job_variable_problems(prepared.specs) == []
    (problem,) = offline_job_variable_problems([odd])
    assert problem.key == "job_variables.gpu_count"
    assert problem.deployment == "table-report/table-report-docker"
    assert problem.message.startswith(
        "job variable 'gpu_count' is not defined by the default job template of docker work "
        "pools (work pool 'staging-docker-pool'); it accepts: auto_remove, command, "
    )


def test_a_template_that_adds_an_ownership_tag_is_refused_with_the_key_path() -> None:
    body = _body()
    body["tags"] = [*body["tags"], "env:production", "project:other", "project:mine"]

    problems = validate_specs([_spec(body)], FLOWS, templates=TEMPLATES)

    first = len(_body()["tags"])
    reserved = sorted((p.key, p.message.split("'")[1]) for p in problems if "is reserved" in p.message)
    assert reserved == [
        (f"tags.{first}", "env:production"),
        (f"tags.{first + 1}", "project:other"),
        (f"tags.{first + 2}", "project:mine"),
    ]


# -- verdicts remembered from the last run (validate.Passed) ------------------------------


def _judged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], str]]:
    """The (path, part) of every Cerberus run from now on."""
    import deploy_lib.validate as validating

    runs: list[tuple[tuple[str, ...], str]] = []
    real = validating._run

    def spy(kind: str, path: tuple[str, ...], part: str, document: dict[str, Any]) -> Any:
        runs.append((path, part))
        return real(kind, path, part, document)

    monkeypatch.setattr(validating, "_run", spy)
    return runs


def _validated_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: DeploymentSpec, second: DeploymentSpec
) -> tuple[list[Problem], list[tuple[tuple[str, ...], str]]]:
    from deploy_lib.validate import Passed

    passed = Passed.load(tmp_path)
    assert _problems(first, passed=passed) == []
    passed.save()
    runs = _judged(monkeypatch)
    again = Passed.load(tmp_path)
    problems = _problems(second, passed=again)
    again.save()
    return problems, runs


def test_an_unchanged_deployments_own_values_are_not_judged_again_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(_body())
    problems, runs = _validated_twice(tmp_path, monkeypatch, spec, spec)
    assert problems == []
    assert ((), "") not in runs and ((), "parameter_openapi_schema") not in runs
    # Job variables and parameters, where a secret may be, are judged every run.
    assert ((), "parameters") in runs and (("job_variables",), "env") in runs


def test_a_value_changed_since_the_last_run_is_judged_and_its_problem_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems, runs = _validated_twice(
        tmp_path, monkeypatch, _spec(_body()), _spec(_body(paused="maybe"))
    )
    assert ((), "") in runs
    assert _only(problems).key == "paused"


def test_a_failing_value_is_never_remembered_as_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy_lib.validate import Passed

    bad = _spec(_body(paused="maybe"))
    for _ in range(2):
        passed = Passed.load(tmp_path)
        assert _only(_problems(bad, passed=passed)).key == "paused"
        passed.save()


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"key": "another version", "passed": []}', '["a list"]', ""],
    ids=["corrupt", "another-key", "wrong-shape", "empty"],
)
def test_a_verdict_file_that_cannot_be_trusted_counts_as_empty_and_is_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    from deploy_lib.validate import Passed

    (tmp_path / Passed.FILE).write_text(content)
    runs = _judged(monkeypatch)
    passed = Passed.load(tmp_path)
    assert _problems(_spec(_body()), passed=passed) == []
    passed.save()
    assert ((), "") in runs
    assert json.loads((tmp_path / Passed.FILE).read_text())["passed"]


def test_the_verdict_file_holds_digests_only_and_is_private(tmp_path: Path) -> None:
    from deploy_lib.validate import Passed

    passed = Passed.load(tmp_path)
    _problems(_spec(_body(description="a description to look for")), passed=passed)
    passed.save()
    path = tmp_path / Passed.FILE
    text = path.read_text()
    assert "a description to look for" not in text and "etl" not in text
    assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in json.loads(text)["passed"])
    assert path.stat().st_mode & 0o777 == 0o600
