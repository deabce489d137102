"""deploy_lib.runs: ``--param`` parsing, choosing the deployment a name means, and
``invoke run FLOW --worker`` failing when the flow run fails (e2e, session server)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke as run_invoke

from deploy_lib import pipeline
from deploy_lib.errors import EXIT_VALIDATION, InputError, RunFailed
from deploy_lib.runs import parameter_problems, parse_params, pick_deployment
from deploy_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


# -- parse_params -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        pytest.param(["rows=10"], {"rows": 10}, id="an integer is read as JSON"),
        pytest.param(["ratio=0.5"], {"ratio": 0.5}, id="a float is read as JSON"),
        pytest.param(
            ["shout=true", "quiet=false"],
            {"shout": True, "quiet": False},
            id="true and false become booleans",
        ),
        pytest.param(["nickname=null"], {"nickname": None}, id="null becomes None"),
        pytest.param(
            ['tags=["a", "b"]', 'scores={"alice": 1}'],
            {"tags": ["a", "b"], "scores": {"alice": 1}},
            id="lists and objects are read as JSON",
        ),
        pytest.param(["name=world"], {"name": "world"}, id="a bare word stays a string"),
        pytest.param(
            ["day=2024-01-31"], {"day": "2024-01-31"}, id="a date is no JSON and stays a string"
        ),
        pytest.param(['code="42"'], {"code": "42"}, id="JSON quotes keep a number a string"),
        pytest.param(
            ["greeting=Hello, you"], {"greeting": "Hello, you"}, id="spaces and commas are kept"
        ),
        pytest.param(["expr=a=b"], {"expr": "a=b"}, id="only the first equals sign splits"),
        pytest.param(["name="], {"name": ""}, id="an empty value is an empty string"),
        pytest.param([" rows =3"], {"rows": 3}, id="spaces around the key are dropped"),
        pytest.param(["rows=1", "rows=2"], {"rows": 2}, id="the last of a repeated key wins"),
        pytest.param([], {}, id="no items give no parameters"),
    ],
)
def test_parse_params(items: list[str], expected: dict[str, Any]) -> None:
    assert parse_params(items) == expected


@pytest.mark.parametrize(
    "item",
    [
        pytest.param("rows", id="an item without an equals sign"),
        pytest.param("=5", id="an item without a key"),
        pytest.param("  =5", id="an item whose key is blank"),
    ],
)
def test_parse_params_rejects_an_item_that_is_not_key_equals_value(item: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_params(["rows=1", item])
    assert str(caught.value) == f"--param {item!r}: expected KEY=VALUE"
    assert caught.value.exit_code == EXIT_VALIDATION


# -- pick_deployment --------------------------------------------------------------------


def live(flow: str, name: str, runtime: str = "python") -> dict[str, Any]:
    return {"id": f"{flow}/{name}", "flow_name": flow, "name": name, "tags": [f"runtime:{runtime}"]}


LIVE = [
    live("hello", "hello"),
    live("table-report", "table-report-python"),
    live("table-report", "table-report-docker", "docker"),
    live("etl", "nightly"),
    live("etl", "hourly"),
    live("archive", "nightly"),
    live("greeter", "daily-etl"),
    live("daily-etl", "daily-etl-python"),
]


@pytest.mark.parametrize(
    ("target", "chosen"),
    [
        pytest.param("hello/hello", "hello/hello", id="flow/deployment names one exactly"),
        pytest.param("etl/nightly", "etl/nightly", id="flow/deployment tells same names apart"),
        pytest.param(
            "table-report-docker",
            "table-report/table-report-docker",
            id="a deployment name alone",
        ),
        pytest.param(
            "table-report",
            "table-report/table-report-python",
            id="a flow name with both types means its python deployment",
        ),
        pytest.param(
            "daily-etl",
            "greeter/daily-etl",
            id="a deployment name wins over a flow name",
        ),
        pytest.param("hourly", "etl/hourly", id="a deployment name unique among flows"),
    ],
)
def test_pick_deployment_finds_what_a_name_means(target: str, chosen: str) -> None:
    assert pick_deployment(LIVE, target)["id"] == chosen


@pytest.mark.parametrize(
    ("target", "listed"),
    [
        pytest.param("etl", "etl/hourly, etl/nightly", id="a flow with two python deployments"),
        pytest.param(
            "nightly", "archive/nightly, etl/nightly", id="a deployment name used by two flows"
        ),
    ],
)
def test_pick_deployment_refuses_an_ambiguous_name_and_lists_the_candidates(
    target: str, listed: str
) -> None:
    with pytest.raises(InputError) as caught:
        pick_deployment(LIVE, target)
    assert str(caught.value) == (
        f"{target!r} names several deployments: {listed}; use flow/deployment"
    )


def test_pick_deployment_lists_what_is_deployed_when_nothing_matches() -> None:
    deployed = [live("hello", "hello"), live("etl", "nightly")]
    with pytest.raises(InputError) as caught:
        pick_deployment(deployed, "helo")
    assert str(caught.value) == (
        "no deployment named 'helo' in this environment; deployed: etl/nightly, hello/hello"
    )


def test_pick_deployment_says_to_deploy_first_when_nothing_is_deployed() -> None:
    with pytest.raises(InputError, match=r"deployed: none \(run `invoke deploy` first\)"):
        pick_deployment([], "hello")


# -- invoke run --worker (e2e) ----------------------------------------------------------

RUN_ENV = "runs"
FAILING_FLOW = '''"""Fails on purpose, with the reason it is given."""

from prefect import flow


@flow(name="fail-on-purpose")
def fail_on_purpose(reason: str = "no reason given") -> None:
    raise RuntimeError(reason)
'''
# An environment of its own, so these deployments never show up in another module's
# plan for development (a prune there would delete them).
RUN_SETTINGS = f"""
[{RUN_ENV}]
deployment_types = ["python"]

[{RUN_ENV}.work_pool]
python = "runs-e2e-pool"
"""


@pytest.fixture
def failing_project(
    tmp_path: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A project whose only flow raises, deployed to env ``runs`` on the session server."""
    root = tmp_path / "project"
    (root / "flows").mkdir(parents=True)
    (root / "flows" / "fail_on_purpose.py").write_text(FAILING_FLOW)
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy2(REPO / "tasks.py", root / "tasks.py")
    (root / "settings.toml").write_text((REPO / "settings.toml").read_text() + RUN_SETTINGS)
    for name in [n for n in os.environ if n.startswith("DEPLOY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DEPLOY_API_URL", prefect_server)
    settings = load_settings(RUN_ENV, root)
    pipeline.pools(settings, create=True)
    outcome = pipeline.deploy(pipeline.prepare(settings))
    assert outcome.result is not None and not outcome.result.failed, outcome.result
    yield root


def invoke(root: Path, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return run_invoke(root, *args, env=env, timeout=240)


@pytest.mark.e2e
@pytest.mark.slow
def test_invoke_run_with_a_worker_exits_non_zero_when_the_flow_run_fails(
    failing_project: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    reason = "planned failure 42"

    proc = invoke(
        failing_project,
        "run",
        "fail-on-purpose",
        "--env",
        RUN_ENV,
        "--worker",
        "--timeout",
        "180",
        "--param",
        f"reason={reason}",
        env=env,
    )

    log = failing_project / ".prefect" / "worker.log"
    worker_log = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    assert proc.returncode == 1, proc.stdout + proc.stderr + worker_log
    assert "of fail-on-purpose/fail-on-purpose ended Failed" in proc.stderr, proc.stderr
    assert reason in proc.stderr, "the run got the --param value, and its failure says so"
    assert "Traceback" not in proc.stdout + proc.stderr
    # The run's states were shown as they came (those a poll sees: fast ones may pass).
    assert "flow run of fail-on-purpose: Scheduled" in proc.stderr
    assert "flow run of fail-on-purpose: Failed" in proc.stderr


# -- parameters checked before a run exists --------------------------------------------

SCHEMA_DEPLOYMENT = {
    "flow_name": "hello",
    "name": "hello",
    "parameters": {},
    "parameter_openapi_schema": {
        "title": "Parameters",
        "type": "object",
        "properties": {
            "name": {"title": "name", "position": 0, "type": "string", "default": "world"},
            "times": {"title": "times", "position": 1, "type": "integer", "default": 1},
            "source": {"title": "source", "position": 2, "type": "string"},
        },
        "required": ["source"],
    },
}


@pytest.mark.parametrize(
    ("parameters", "problems"),
    [
        ({"source": "s3"}, []),
        ({"source": "s3", "times": "abc"}, ["parameter times: 'abc' is not of type 'integer'"]),
        (
            {"source": "s3", "nosuch": 1},
            ["unknown parameter(s) 'nosuch'; the flow takes name, times, source"],
        ),
        ({}, ["'source' is a required property"]),
    ],
    ids=["fine", "a value of the wrong type", "a name the flow does not take", "a required one missing"],
)
def test_run_parameters_are_judged_by_the_deployments_schema(
    parameters: dict[str, Any], problems: list[str]
) -> None:
    assert parameter_problems(SCHEMA_DEPLOYMENT, parameters) == problems


def test_a_deployment_without_a_schema_or_with_kwargs_takes_any_name() -> None:
    assert parameter_problems({"parameter_openapi_schema": {}}, {"x": 1}) == []
    kwargs = {
        "parameter_openapi_schema": {
            "type": "object",
            "properties": {
                "kwargs": {"title": "kwargs", "type": "object", "additionalProperties": True, "default": {}}
            },
        }
    }
    assert parameter_problems(kwargs, {"anything": 1}) == []


@pytest.mark.e2e
def test_a_bad_parameter_creates_no_run_and_a_timeout_cancels_the_run(
    failing_project: Path, prefect_server: str
) -> None:
    import asyncio

    from deploy_lib.api import PrefectApi

    settings = load_settings(RUN_ENV, failing_project)
    with pytest.raises(InputError, match="no flow run of fail-on-purpose/fail-on-purpose was created: "
                       "unknown parameter"):
        pipeline.run_flow(settings, "fail-on-purpose", {"nosuch": 1}, timeout=5)
    with pytest.raises(InputError, match=r"parameter reason: 5 is not of type 'string'"):
        pipeline.run_flow(settings, "fail-on-purpose", {"reason": 5}, timeout=5)

    # No worker polls the pool: the run stays Scheduled, and at the timeout it is
    # cancelled rather than left for a worker to start minutes later.
    seen: list[str] = []
    with pytest.raises(RunFailed) as late:
        pipeline.run_flow(settings, "fail-on-purpose", timeout=2, on_state=seen.append)
    assert "did not finish within 2 s" in str(late.value) and "it was cancelled" in str(late.value)
    assert seen and seen[0] == "Scheduled"
    run_id = getattr(late.value, "flow_run_id", "")

    async def state() -> str:
        async with PrefectApi(prefect_server) as api:
            run = await api.read_flow_run(run_id)
            return str(run["state"]["type"])

    assert asyncio.run(state()) == "CANCELLED"
