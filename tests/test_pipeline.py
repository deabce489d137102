"""The whole pipeline against a real Prefect server, with real flow runs on a real worker.

Proof that what ``deploy`` writes actually runs: every example flow is deployed to
development from a copy of this project, then run to Completed on ONE process worker
(started once for the module); ``env-report`` writes what it received inside the run
(parameters and environment variables) to a JSON file, which the tests compare with
the environment's settings.  Then the same deployments are updated to module-style
entrypoints and run again, an unchanged redeploy is shown to write nothing, the CLI's
exit codes are checked, and a removed flow is pruned.

No Prefect client is mocked: the server is the session's local server (conftest), the
worker is Prefect's own ``prefect worker start``.  The tests run in file order and share
the server's state; each one first brings the deployments to the state it needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import cli_env, make_project, write_files
from helpers import invoke as run_invoke

from deploy_lib import pipeline, report
from deploy_lib.api import PrefectApi
from deploy_lib.build import context_digest
from deploy_lib.errors import ApiError, DiscoveryError, InputError, SettingsError
from deploy_lib.models import MANAGED_BY_TAG, Settings
from deploy_lib.runs import run_deployment
from deploy_lib.server import background_worker
from deploy_lib.settings import load_settings

# Every test that uses the session server is marked e2e by conftest.

REPO = Path(__file__).resolve().parents[1]
ENV = "development"
PYTHON_DEPLOYMENTS = (
    "async-report/async-report",
    "daily-etl/daily-etl",
    "env-report/env-report",
    "hello/hello",
    "order-totals/order-totals",
    "table-report/table-report-python",
)
DOCKER_DEPLOYMENT = "table-report/table-report-docker"
ALL_DEPLOYMENTS = tuple(sorted((*PYTHON_DEPLOYMENTS, DOCKER_DEPLOYMENT)))
# The module-style entrypoint of each flow, as settings' entrypoint_style = "module" gives.
MODULE_ENTRYPOINTS = {
    "async-report": "flows.async_report:async_report",
    "daily-etl": "flows.etl.daily:daily_etl",
    "env-report": "flows.env_report:env_report",
    "hello": "flows.hello:hello",
    "order-totals": "flows.orders:order_totals",
    "table-report": "flows.containerized.table_report:table_report",
}
RUN_TIMEOUT = 180.0
# The server fields that change without a write of ours: a polling worker marks a
# deployment ready (status, last_polled, and with them updated).
VOLATILE_FIELDS = ("updated", "last_polled", "status")


# -- the project, the worker and the first deploy ---------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, deploy_server: str) -> Iterator[Path]:
    """A copy of this project (settings, templates, flows, tasks.py) whose environments
    talk to the session's server (``DEPLOY_API_URL`` for the whole module)."""
    root = tmp_path_factory.mktemp("pipeline-project")
    shutil.copy2(REPO / "settings.toml", root / "settings.toml")
    shutil.copy2(REPO / "tasks.py", root / "tasks.py")
    for folder in ("templates", "flows"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DEPLOY_")]:
            patch.delenv(name)  # a developer's own DEPLOY_ENV etc. must not steer the tests
        patch.setenv("DEPLOY_API_URL", deploy_server)
        yield root


@dataclass(frozen=True)
class Worker:
    proc: subprocess.Popen[bytes]
    reports: Path  # DEPLOY_REPORT_DIR of every flow run: env-report writes there
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def pools(project: Path) -> list[dict[str, Any]]:
    """The development work pools (process and docker), created on the server."""
    return pipeline.pools(load_settings(ENV, project), create=True)


@pytest.fixture(scope="class")
def worker(
    project: Path, pools: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """ONE real process worker for the development python pool, polling every second,
    for the tests of one class (so it does not compete for the CPU afterwards)."""
    scratch = tmp_path_factory.mktemp("pipeline-worker")
    reports = scratch / "reports"
    env = {"DEPLOY_REPORT_DIR": str(reports), "PREFECT_HOME": str(scratch / "prefect-home")}
    log = scratch / "worker.log"
    settings = load_settings(ENV, project)
    url = pipeline.api_url(settings, start=False)
    with background_worker(settings, url, poll_seconds=1, env=env, log_path=log) as proc:
        yield Worker(proc, reports, log)


@pytest.fixture(scope="module")
def first_deploy(project: Path, pools: list[dict[str, Any]]) -> pipeline.DeployOutcome:
    """The first deploy of every example flow (both types) to development."""
    return pipeline.deploy(pipeline.prepare(load_settings(ENV, project)))


# -- helpers ----------------------------------------------------------------------------


def live_deployments(url: str) -> dict[str, dict[str, Any]]:
    """The deployments this tool manages in development, by ``flow/name``."""

    async def listing() -> list[dict[str, Any]]:
        async with PrefectApi(url) as api:
            return await api.list_deployments([MANAGED_BY_TAG, f"env:{ENV}"])

    return {f"{d['flow_name']}/{d['name']}": d for d in asyncio.run(listing())}


def statuses(outcome: pipeline.DeployOutcome) -> dict[str, str]:
    assert outcome.result is not None
    return {r.deployment: r.status for r in outcome.result.results}


def ids(outcome: pipeline.DeployOutcome) -> dict[str, str | None]:
    assert outcome.result is not None
    return {r.deployment: r.id for r in outcome.result.results}


def deploy_path_style(project: Path) -> pipeline.DeployOutcome:
    """Bring the server back to the project as it is (whatever an earlier test left)."""
    outcome = pipeline.deploy(pipeline.prepare(load_settings(ENV, project)))
    assert outcome.result is not None and not outcome.result.failed, outcome.result
    return outcome


def run_flows(
    url: str, settings: Settings, targets: Sequence[str], worker: Worker
) -> dict[str, dict[str, Any]]:
    """Run each deployment at once (the one worker takes them all) and wait for each to
    end; fails the test, with the worker's log, unless every run is Completed."""

    async def run_all() -> list[Any]:
        async with PrefectApi(url, max_writes=1) as api:
            results: list[Any] = await asyncio.gather(
                *(run_deployment(api, settings, t, timeout=RUN_TIMEOUT) for t in targets),
                return_exceptions=True,
            )
        return results

    outcomes = dict(zip(targets, asyncio.run(run_all()), strict=True))
    failed = {t: str(o) for t, o in outcomes.items() if isinstance(o, BaseException)}
    assert not failed, f"{failed}\n--- worker log ---\n{worker.tail()}"
    return outcomes


def env_report(worker: Worker, flow_run_id: str) -> dict[str, Any]:
    """What env-report wrote from inside its run (``DEPLOY_REPORT_DIR/<id>.json``)."""
    path = worker.reports / f"{flow_run_id}.json"
    assert path.is_file(), f"env-report wrote no {path.name}\n{worker.tail()}"
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def expected_parameters(settings: Settings) -> dict[str, Any]:
    wanted = {k: settings.get(f"parameters.{k}") for k in ("cleanup", "use_distributed", "debug")}
    # env-report's own defaults are all False: a True here proves the value arrived.
    assert any(wanted.values()), "development should set one parameter away from the default"
    return {**wanted, "extra_vars": []}


def expected_env_vars(settings: Settings) -> dict[str, str]:
    return {
        "PYTHONPATH": str(settings.get("env_vars.PYTHONPATH")),
        "PREFECT_LOGGING_LEVEL": str(settings.get("env_vars.PREFECT_LOGGING_LEVEL")),
        "PREFECT_FLOWS_DEFAULT_RETRIES": str(settings.get("retries.retries")),
        "PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS": str(
            settings.get("retries.retry_delay_seconds")
        ),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(settings.get("health.heartbeat_frequency")),
        "DEPLOY_ENV_NAME": ENV,
    }


def assert_env_report(report: Mapping[str, Any], settings: Settings, project: Path) -> None:
    assert report["deployment_name"] == "env-report"
    assert report["parameters"] == expected_parameters(settings)
    seen, wanted = dict(report["env"]), expected_env_vars(settings)
    # Prefect's process worker puts the run's workspace in front of the PYTHONPATH the
    # job sets; the configured entries follow it unchanged.
    configured = wanted.pop("PYTHONPATH").split(os.pathsep)
    assert seen.pop("PYTHONPATH").split(os.pathsep)[-len(configured) :] == configured
    assert seen == wanted
    # development's own values, not [default]'s: the environment layer reached the run
    assert report["env"]["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    assert report["env"]["PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS"] == "5"
    # the set_working_directory pull step put the run in the project
    assert Path(report["cwd"]).resolve() == project.resolve()


def content(deployment: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in deployment.items() if k not in VOLATILE_FIELDS}


def invoke(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` run in the project copy (its tasks.py), as a user runs it, on the
    module's server (its ``DEPLOY_API_URL``)."""
    return run_invoke(
        project, *args, env={"DEPLOY_API_URL": os.environ["DEPLOY_API_URL"], **env}, timeout=180
    )


# -- the tests --------------------------------------------------------------------------


class TestDeployedFlowsRunOnOneWorker:
    """Path-style entrypoints first, then the same deployments updated to module style."""

    def test_every_example_flow_is_deployed_and_runs_to_completed_on_a_process_worker(
        self,
        project: Path,
        first_deploy: pipeline.DeployOutcome,
        worker: Worker,
        deploy_server: str,
    ) -> None:
        assert first_deploy.plan.counts == {
            "create": len(ALL_DEPLOYMENTS),
            "update": 0,
            "unchanged": 0,
            "delete": 0,
            "conflict": 0,
            "rename": 0,
        }
        assert statuses(first_deploy) == dict.fromkeys(ALL_DEPLOYMENTS, "created")
        live = live_deployments(deploy_server)
        assert sorted(live) == list(ALL_DEPLOYMENTS)
        assert live["daily-etl/daily-etl"]["entrypoint"] == "flows/etl/daily.py:daily_etl"

        settings = load_settings(ENV, project)
        outcomes = run_flows(deploy_server, settings, PYTHON_DEPLOYMENTS, worker)

        assert {t: o["state"] for t, o in outcomes.items()} == dict.fromkeys(
            PYTHON_DEPLOYMENTS, "Completed"
        )
        report = env_report(worker, outcomes["env-report/env-report"]["flow_run_id"])
        assert_env_report(report, settings, project)
        assert report["deployment_id"] == live["env-report/env-report"]["id"]

    def test_module_entrypoints_update_the_same_deployments_and_run_on_the_worker(
        self,
        project: Path,
        first_deploy: pipeline.DeployOutcome,
        worker: Worker,
        deploy_server: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        deploy_path_style(project)
        monkeypatch.setenv("DEPLOY_ENTRYPOINT_STYLE", "module")
        settings = load_settings(ENV, project)
        assert settings.get("entrypoint_style") == "module"
        prepared = pipeline.prepare(settings)

        plan, _ = pipeline.plan(prepared)
        assert {c.deployment: c.action for c in plan.changes} == dict.fromkeys(
            ALL_DEPLOYMENTS, "update"
        )
        assert {c.deployment: [(f.path, f.new) for f in c.diff] for c in plan.changes} == {
            name: [("entrypoint", MODULE_ENTRYPOINTS[name.split("/")[0]])]
            for name in ALL_DEPLOYMENTS
        }

        outcome = pipeline.deploy(prepared)
        assert statuses(outcome) == dict.fromkeys(ALL_DEPLOYMENTS, "updated")
        live = live_deployments(deploy_server)
        assert {n: d["entrypoint"] for n, d in live.items()} == {
            n: MODULE_ENTRYPOINTS[n.split("/")[0]] for n in ALL_DEPLOYMENTS
        }
        assert {n: d["id"] for n, d in live.items()} == ids(first_deploy), (
            "an update keeps each deployment (and its id)"
        )

        outcomes = run_flows(deploy_server, settings, PYTHON_DEPLOYMENTS, worker)

        assert {t: o["state"] for t, o in outcomes.items()} == dict.fromkeys(
            PYTHON_DEPLOYMENTS, "Completed"
        )
        assert_env_report(
            env_report(worker, outcomes["env-report/env-report"]["flow_run_id"]), settings, project
        )


def test_a_model_parameter_is_checked_by_the_server_and_a_good_value_runs_completed(
    project: Path, first_deploy: pipeline.DeployOutcome, worker: Worker, deploy_server: str
) -> None:
    """The schema holds the pydantic models' definitions (read from source), so with
    enforce_parameter_schema the server refuses a bad order before any run exists."""
    settings = load_settings(ENV, project)
    target = "order-totals/order-totals"
    live = live_deployments(deploy_server)[target]
    assert set(live["parameter_openapi_schema"]["definitions"]) == {"Item", "Order"}
    assert live["enforce_parameter_schema"] is True
    good = {"orders": [{"id": 1, "items": [{"sku": "a-1", "quantity": 2, "price": 1.5}]}]}
    bad = {"orders": [{"id": 1, "items": [{"sku": "a-1", "quantity": "two"}]}]}

    async def run(parameters: dict[str, Any]) -> Any:
        async with PrefectApi(deploy_server, max_writes=1) as api:
            return await run_deployment(api, settings, target, parameters, timeout=RUN_TIMEOUT)

    async def create_directly(parameters: dict[str, Any]) -> Any:
        async with PrefectApi(deploy_server, max_writes=1) as api:
            return await api.create_flow_run(live["id"], parameters)

    # `invoke run` judges the value by the same schema before any run exists ...
    with pytest.raises(InputError, match=r"orders\.0\.items\.0\.quantity: 'two' is not of type"):
        asyncio.run(run(bad))
    # ... and the server itself refuses it, whoever asks.
    with pytest.raises(ApiError) as refused:
        asyncio.run(create_directly(bad))
    assert refused.value.status == 409
    assert "quantity" in str(refused.value)
    outcome = asyncio.run(run(good))
    assert outcome["state"] == "Completed", worker.tail()


def test_the_docker_deployment_is_registered_to_the_docker_pool_with_its_image(
    project: Path, first_deploy: pipeline.DeployOutcome, deploy_server: str
) -> None:
    settings = load_settings(ENV, project)
    deployment = live_deployments(deploy_server)[DOCKER_DEPLOYMENT]

    pool_name = settings.get("work_pool.docker")
    assert deployment["work_pool_name"] == pool_name

    async def read_pool() -> dict[str, Any] | None:
        async with PrefectApi(deploy_server) as api:
            return await api.read_work_pool(pool_name)

    pool = asyncio.run(read_pool())
    assert pool is not None and pool["type"] == "docker"
    # Tagged by its build context (the copy is no git repository: that does not matter),
    # and the deploy said that nobody built that image here.
    flow = pipeline.find_flow(pipeline.discover(settings), "table-report")
    assert flow is not None
    image = f"{settings.get('docker.registry')}/table-report:{context_digest(flow, project)}"
    assert deployment["job_variables"]["image"] == image
    assert any(
        "run an image this tool has not built or found" in w and image in w
        for w in first_deploy.warnings
    ), first_deploy.warnings
    assert {"runtime:docker", "env:development", MANAGED_BY_TAG} <= set(deployment["tags"])
    assert deployment["pull_steps"] == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": settings.get("docker.working_dir")
            }
        }
    ]


def test_redeploying_unchanged_deployments_reports_each_unchanged_and_writes_nothing(
    project: Path, first_deploy: pipeline.DeployOutcome, deploy_server: str
) -> None:
    deploy_path_style(project)
    prepared = pipeline.prepare(load_settings(ENV, project))
    before = live_deployments(deploy_server)

    async def redeploy() -> tuple[pipeline.DeployOutcome, int, int]:
        async with PrefectApi(deploy_server, max_writes=1) as api:
            outcome = await pipeline.deploy_prepared(api, prepared)
            return outcome, api.write_count, api.request_count

    outcome, writes, requests = asyncio.run(redeploy())

    assert statuses(outcome) == dict.fromkeys(ALL_DEPLOYMENTS, "unchanged")
    assert writes == 0
    # two pools, two queues, one listing page, one flow-name lookup: nothing per deployment
    assert requests <= 6, requests
    after = live_deployments(deploy_server)
    assert {n: content(d) for n, d in after.items()} == {n: content(d) for n, d in before.items()}


def test_plan_and_deploy_on_the_command_line_exit_with_the_documented_codes(
    project: Path, first_deploy: pipeline.DeployOutcome, deploy_server: str
) -> None:
    # Whatever the server holds now, `deploy --json` brings it to the project: one JSON
    # object, one record per deployment, each with the status the plan predicts.
    plan, _ = pipeline.plan(pipeline.prepare(load_settings(ENV, project)))
    predicted = {
        c.deployment: {"update": "updated", "unchanged": "unchanged"}[c.action]
        for c in plan.changes
    }
    deployed = invoke(project, "deploy", "--env", ENV, "--json")
    assert deployed.returncode == 0, deployed.stderr
    records = json.loads(deployed.stdout)["results"]
    assert sorted(r["deployment"] for r in records) == list(ALL_DEPLOYMENTS)
    assert {r["deployment"]: r["status"] for r in records} == predicted

    unchanged = invoke(project, "plan", "--env", ENV)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert "No changes for env 'development'" in unchanged.stdout

    # Only env-report accepts `debug`, so only it would change.
    no_debug = {"DEPLOY_PARAMETERS__DEBUG": "false"}
    pending = invoke(project, "plan", "--env", ENV, "--json", **no_debug)
    assert pending.returncode == 2, pending.stdout + pending.stderr
    changes = json.loads(pending.stdout)["changes"]
    assert {c["deployment"]: c["action"] for c in changes} == {
        **dict.fromkeys(ALL_DEPLOYMENTS, "unchanged"),
        "env-report/env-report": "update",
    }

    dry = invoke(project, "deploy", "--env", ENV, "--dry-run", **no_debug)
    assert dry.returncode == 2, dry.stderr  # plan's codes: changes are pending
    assert "env-report/env-report" in dry.stdout
    assert live_deployments(deploy_server)["env-report/env-report"]["parameters"]["debug"] is True

    applied = invoke(project, "deploy", "--env", ENV, "--json", **no_debug)
    assert applied.returncode == 0, applied.stderr
    assert {r["deployment"]: r["status"] for r in json.loads(applied.stdout)["results"]} == {
        **dict.fromkeys(ALL_DEPLOYMENTS, "unchanged"),
        "env-report/env-report": "updated",
    }
    assert live_deployments(deploy_server)["env-report/env-report"]["parameters"]["debug"] is False

    # Bad input: exit 3, the message names what is wrong, no traceback, nothing written.
    before = {n: content(d) for n, d in live_deployments(deploy_server).items()}
    bad_setting = invoke(project, "deploy", "--env", ENV, DEPLOY_ENTRYPOINT_STYLE="sideways")
    settings_file = project / "settings.toml"
    text = settings_file.read_text()
    settings_file.write_text(text + "\n[development.flows.hello]\nparameters = { volume = 11 }\n")
    try:
        bad_deployment = invoke(project, "deploy", "--env", ENV)
    finally:
        settings_file.write_text(text)

    assert bad_setting.returncode == 3, bad_setting.stdout + bad_setting.stderr
    assert "entrypoint_style" in bad_setting.stderr and "sideways" in bad_setting.stderr
    assert bad_deployment.returncode == 3, bad_deployment.stdout + bad_deployment.stderr
    assert "nothing was written" in bad_deployment.stderr
    assert "hello" in bad_deployment.stderr and "volume" in bad_deployment.stderr
    for failed in (bad_setting, bad_deployment):
        assert "Traceback" not in failed.stdout + failed.stderr
    assert {n: content(d) for n, d in live_deployments(deploy_server).items()} == before


def test_a_removed_flow_is_planned_as_a_delete_kept_without_prune_and_pruned_alone(
    project: Path, first_deploy: pipeline.DeployOutcome, deploy_server: str
) -> None:
    deploy_path_style(project)
    hello = project / "flows" / "hello.py"
    source = hello.read_text()
    hello.unlink()
    try:
        prepared = pipeline.prepare(load_settings(ENV, project))
        others = dict.fromkeys((n for n in ALL_DEPLOYMENTS if n != "hello/hello"), "unchanged")

        plan, _ = pipeline.plan(prepared)
        assert {c.deployment: c.action for c in plan.changes} == {
            **others,
            "hello/hello": "delete",
        }
        assert plan.has_changes

        kept = pipeline.deploy(prepared)
        assert statuses(kept) == {**others, "hello/hello": "skipped"}
        assert "hello/hello" in live_deployments(deploy_server)

        pruned = pipeline.deploy(prepared, prune=True)
        assert statuses(pruned) == {**others, "hello/hello": "deleted"}
        assert sorted(live_deployments(deploy_server)) == sorted(others)
    finally:
        hello.write_text(source)


# -- pools and connect -------------------------------------------------------------------

SECRET_KEY = "pnu_s3cr3t-api-key-value"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def reply(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status, json=body)


@pytest.mark.e2e
def test_pools_covers_the_environments_deployment_types(deploy_server: str) -> None:
    pool = unique("env-pool")
    settings = Settings(
        env="development",
        root=".",
        data={
            "api_url": deploy_server,
            "deployment_types": ["python"],
            "work_pool": {"python": pool, "docker": "never-asked"},
        },
    )
    (missing,) = pipeline.pools(settings)
    assert (missing["name"], missing["exists"]) == (pool, False)
    assert f"{pool}" in report.format_work_pools([missing]) and "invoke pools --create" in (
        report.format_work_pools([missing])
    )
    (made,) = pipeline.pools(settings, create=True)
    assert (made["type"], made["created"]) == ("process", True)
    assert report.format_work_pools([made]).split() == [
        "python",
        pool,
        "process,",
        "created,",
        "0",
        "workers",
        "online",
    ]


def test_pools_needs_a_pool_name_per_type() -> None:
    settings = Settings(env="staging", root=".", data={"api_url": "http://x/api", "work_pool": {}})
    with pytest.raises(SettingsError, match=r"key 'work_pool\.python': no work pool name"):
        pipeline.pools(settings)


def test_a_flow_chosen_with_flow_that_has_problems_says_why(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "p",
        {"flows/bad.py": 'from prefect import flow\n\n@flow(name="a/b")\ndef bad(): ...\n'},
    )
    settings = load_settings(ENV, root)
    everything = pipeline.prepare(settings)
    assert [str(s) for s in everything.skipped] == [
        "skipped flow 'a/b' (flows/bad.py:4): flow name 'a/b' contains '/'; Prefect refuses "
        "any of / % & > < in names"
    ]
    with pytest.raises(DiscoveryError, match="flow 'a/b' has problems and gets no deployment"):
        pipeline.prepare(settings, flow_names=["a/b"])
    with pytest.raises(DiscoveryError, match=r"flow 'flows/bad.py:bad' has problems"):
        pipeline.prepare(settings, flow_names=["flows/bad.py:bad"])
    chosen = pipeline.prepare(settings, flow_names=["flows/hello.py:hello"])
    assert [s.full_name for s in chosen.specs] == ["hello/hello"]


def test_connect_uses_the_settings_url_and_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200, True)

    settings = Settings(
        env="production",
        root=".",
        data={"api_url": "https://prefect.example.com/api/", "api_key": SECRET_KEY},
    )

    async def check() -> bool:
        async with pipeline.connect(settings, transport=httpx.MockTransport(answer)) as api:
            return await api.health()

    assert asyncio.run(check()) is True
    assert str(seen[0].url) == "https://prefect.example.com/api/health"
    assert seen[0].headers["Authorization"] == f"Bearer {SECRET_KEY}"


def test_connect_trusts_the_ca_bundle_setting_and_names_one_that_is_missing(
    tmp_path: Path, mocker: Any
) -> None:
    import certifi

    (tmp_path / "ca.pem").write_bytes(Path(certifi.where()).read_bytes())
    made = mocker.spy(pipeline.api, "PrefectApi")
    data = {"api_url": "https://prefect.example.com/api", "ca_bundle": "ca.pem"}
    pipeline.connect(Settings(env="production", root=str(tmp_path), data=data))
    assert made.call_args.kwargs["ca_bundle"] == str(tmp_path / "ca.pem")

    missing = Settings(env="production", root=str(tmp_path), data={**data, "ca_bundle": "gone.pem"})
    with pytest.raises(SettingsError, match=r"key 'ca_bundle'.*gone\.pem is not a file"):
        pipeline.connect(missing)


# -- the layout: pipeline is the only wiring --------------------------------------------

PACKAGE = REPO / "deploy_lib"
# Every stage, and the one outside library each owns (besides the standard library).
STAGES = {
    "settings": {"dynaconf", "dotenv"},
    "discovery": set(),
    "pysource": set(),
    "parameters": set(),
    "build": set(),
    "templates": {"yaml", "jinja2"},
    "validate": {"cerberus", "pydantic", "prefect"},
    "schema": set(),
    "pools": set(),
    "plan": set(),
    "apply": set(),
    "api": {"httpx"},
    "server": set(),
    "runs": {"jsonschema"},
    "docker": set(),
    "lock": set(),
    "gitinfo": set(),
    "migrate": {"yaml"},
}
# The values and errors every stage shares.
SHARED = {"models", "errors"}
# validate reads two pure helpers of its own: the Cerberus tables (schema) and the
# annotation type check (parameters.python_type_check); discovery reads source through
# pysource (literal folding, scopes and the types annotations name); pools (what a work
# pool type's job template can say, the resources vocabulary) serves build, validate
# and the settings' checks of sizes and CPUs.
STAGE_HELPERS = {
    "validate": {"schema", "parameters", "pools"},
    "discovery": {"pysource"},
    "build": {"pools"},
    "settings": {"pools"},
}
THIRD_PARTY = {"dynaconf", "dotenv", "yaml", "jinja2", "cerberus", "pydantic", "prefect", "httpx", "rich", "invoke", "jsonschema"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The deploy_lib modules and the third-party packages ``path`` imports, at any
    depth (function-level imports included, ``TYPE_CHECKING`` blocks too)."""
    import ast

    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "deploy_lib":
                ours |= {alias.name for alias in node.names}
            elif node.module.startswith("deploy_lib."):
                ours.add(node.module.split(".")[1])
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("deploy_lib."):
                    ours.add(alias.name.split(".")[1])
                else:
                    theirs.add(alias.name.split(".")[0])
    return ours, theirs & THIRD_PARTY


def test_every_stage_imports_only_models_errors_and_its_own_library() -> None:
    for stage, owned in STAGES.items():
        ours, theirs = _imports(PACKAGE / f"{stage}.py")
        allowed = SHARED | STAGE_HELPERS.get(stage, set())
        assert ours <= allowed, f"{stage} imports {sorted(ours - allowed)}"
        assert theirs <= owned, f"{stage} imports {sorted(theirs - owned)}"


def test_models_and_errors_import_no_stage_and_the_graph_has_no_cycle() -> None:
    graph = {p.stem: _imports(p)[0] - {p.stem} for p in PACKAGE.glob("*.py")}
    assert graph["errors"] == set()
    assert graph["models"] == {"errors"}

    def visit(module: str, trail: tuple[str, ...]) -> None:
        for dep in sorted(graph.get(module, ())):
            assert dep not in trail, "import cycle: " + " -> ".join((*trail, dep))
            visit(dep, (*trail, dep))

    for module in graph:
        if module != "__init__":
            visit(module, (module,))


def test_only_the_entry_points_import_pipeline() -> None:
    importers = {p.stem for p in PACKAGE.glob("*.py") if "pipeline" in _imports(p)[0]}
    assert importers <= {"__init__", "creators"}


def test_tasks_reach_deploy_lib_only_through_pipeline_report_errors_and_models() -> None:
    ours, theirs = _imports(REPO / "tasks.py")
    assert ours <= {"pipeline", "report", "errors", "models"}, sorted(ours)
    assert theirs == {"invoke"}


def test_dynaconf_lives_in_settings_and_httpx_in_api() -> None:
    for path in PACKAGE.glob("*.py"):
        theirs = _imports(path)[1]
        if "dynaconf" in theirs:
            assert path.stem == "settings"
        if "httpx" in theirs:
            assert path.stem == "api"


# -- ownership on a shared server: projects, environments, people ---------------------------
#
# Each test makes its own project folders (the folder's name is the project) and talks to
# the session server through the command line, as a team sharing one server would.


def shared_project(root: Path, files: Mapping[str, str] | None = None, **extra: str) -> Path:
    """A copy of this project in ``root`` (its name is the project); ``files`` replace
    flows/ when given."""
    make_project(root, example_flows=files is None)
    if files is not None:
        write_files(root, files)
    return root


def cli(root: Path, *args: str, server: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_invoke(root, *args, env={"DEPLOY_API_URL": server, **env}, timeout=240)


def on_server(server: str, *tags: str) -> dict[str, dict[str, Any]]:
    """``flow/name -> deployment`` of every deployment carrying ``tags``."""

    async def go() -> list[dict[str, Any]]:
        async with PrefectApi(server, max_writes=1) as client:
            return await client.list_deployments(list(tags))

    return {f"{d['flow_name']}/{d['name']}": d for d in asyncio.run(go())}


@pytest.fixture(scope="module")
def shared_pools(deploy_server: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The work pools of development and staging on the session server."""
    root = make_project(tmp_path_factory.mktemp("pools") / "pools")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOY_API_URL", deploy_server)
        for env in ("development", "staging"):
            pipeline.pools(load_settings(env, root), create=True)


def one_flow(name: str) -> dict[str, str]:
    """A flows/ folder with one flow named ``name`` (unique per test on the shared server)."""
    function = name.replace("-", "_")
    return {
        f"flows/{function}.py": (
            f'from prefect import flow\n\n\n@flow(name="{name}")\n'
            f'def {function}(x: int = 1) -> int:\n    """One flow."""\n    return x\n'
        )
    }


def test_two_projects_on_one_server_prune_and_neither_loses_anything(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    flows = {k: v for i in range(5) for k, v in one_flow(f"alpha-{i}").items()}
    alpha = shared_project(tmp_path / "alpha", flows)
    beta = shared_project(tmp_path / "beta", one_flow("beta-solo"))

    first = cli(alpha, "deploy", "--env", ENV, server=deploy_server)
    assert first.returncode == 0, first.stdout + first.stderr
    before = on_server(deploy_server, "project:alpha")
    done = cli(beta, "deploy", "--env", ENV, "--prune", server=deploy_server)
    assert done.returncode == 0, done.stdout + done.stderr
    again = cli(alpha, "deploy", "--env", ENV, "--prune", server=deploy_server)
    assert again.returncode == 0, again.stdout + again.stderr

    assert sorted(before) == [f"alpha-{i}/alpha-{i}" for i in range(5)]
    assert {k: v["id"] for k, v in on_server(deploy_server, "project:alpha").items()} == {
        k: v["id"] for k, v in before.items()
    }
    assert list(on_server(deploy_server, "project:beta")) == ["beta-solo/beta-solo"]


def test_another_environment_on_the_same_server_is_refused_in_either_order(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    for first, second in (("development", "staging"), ("staging", "development")):
        name = f"order-{first}"
        root = shared_project(tmp_path / name, one_flow(name))
        assert cli(root, "deploy", "--env", first, server=deploy_server).returncode == 0
        owner = on_server(deploy_server, f"project:{name}")[f"{name}/{name}"]

        refused = cli(root, "deploy", "--env", second, server=deploy_server)

        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert f"owned by project '{name}', env '{first}'" in refused.stderr
        now = on_server(deploy_server, f"project:{name}")[f"{name}/{name}"]
        assert (now["id"], now["updated"], f"env:{first}" in now["tags"]) == (
            owner["id"], owner["updated"], True,
        )


def test_environments_sharing_a_server_with_env_suffix_deploy_at_the_same_time(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    flows = {k: v for i in range(3) for k, v in one_flow(f"suffixed-{i}").items()}
    root = shared_project(tmp_path / "suffixed", flows)
    env = {"DEPLOY_API_URL": deploy_server, "DEPLOY_NAMING__ENV_SUFFIX": "true"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy", "--env", name],
            cwd=root, env=cli_env(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in ("development", "staging")
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], outputs
    for name in ("development", "staging"):
        found = on_server(deploy_server, "project:suffixed", f"env:{name}")
        assert sorted(found) == [f"suffixed-{i}/suffixed-{i}-{name}" for i in range(3)]


def test_a_deployment_made_by_hand_is_a_conflict_until_adopted(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "adopting", one_flow("adopted"))

    async def by_hand() -> None:
        async with PrefectApi(deploy_server, max_writes=1) as client:
            await client.upsert_deployment({
                "name": "adopted", "flow_name": "adopted", "entrypoint": "flows/adopted.py:adopted",
                "description": "made in the UI", "work_pool_name": "default-agent-pool",
            })

    asyncio.run(by_hand())
    planned = cli(root, "plan", "--env", ENV, server=deploy_server)
    assert planned.returncode == 2
    assert "! conflict   adopted/adopted  python  (not managed by this project" in planned.stdout

    deployed = cli(root, "deploy", "--env", ENV, server=deploy_server)
    assert deployed.returncode == 4, deployed.stdout + deployed.stderr
    assert "adopted/adopted: not managed by this project" in deployed.stderr
    assert on_server(deploy_server)["adopted/adopted"]["description"] == "made in the UI"

    adopted = cli(root, "adopt", "--env", ENV, "--yes", server=deploy_server)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert 'description: "made in the UI" -> "[development] One flow."' in adopted.stdout
    assert cli(root, "plan", "--env", ENV, server=deploy_server).returncode == 0
    assert "project:adopting" in on_server(deploy_server)["adopted/adopted"]["tags"]


def test_each_kind_of_hand_edit_is_drift_and_keep_drift_keeps_it(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "drifting", one_flow("drifted"))
    scheduled = {"DEPLOY_FLOWS__drifted__SCHEDULES": '[{cron = "0 6 * * *"}]'}
    assert cli(root, "deploy", "--env", ENV, server=deploy_server, **scheduled).returncode == 0
    live = on_server(deploy_server, "project:drifting")["drifted/drifted"]

    base = deploy_server.rstrip("/")
    edits = {
        "parameters": {"x": 7},
        "paused": True,
        "job_variables": {**live["job_variables"], "stream_output": False},
        "description": "edited in the UI",
    }
    httpx.patch(f"{base}/deployments/{live['id']}", json=edits, timeout=30).raise_for_status()
    schedule = live["schedules"][0]["id"]
    httpx.patch(
        f"{base}/deployments/{live['id']}/schedules/{schedule}", json={"active": False}, timeout=30
    ).raise_for_status()

    planned = cli(root, "plan", "--env", ENV, "--json", server=deploy_server, **scheduled)
    (change,) = json.loads(planned.stdout)["changes"]
    assert change["drift"] == [
        "description", "parameters", "job_variables", "paused", "schedules.active"
    ]
    assert all(d["drift"] for d in change["diff"])

    kept = cli(root, "deploy", "--env", ENV, "--keep-drift", server=deploy_server, **scheduled)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "drift kept" in kept.stdout
    assert on_server(deploy_server, "project:drifting")["drifted/drifted"]["paused"] is True

    overwritten = cli(root, "deploy", "--env", ENV, server=deploy_server, **scheduled)
    assert overwritten.returncode == 0
    assert "overwrote changes made on the server since the last deploy" in overwritten.stderr
    now = on_server(deploy_server, "project:drifting")["drifted/drifted"]
    assert (now["paused"], now["parameters"], now["description"]) == (
        False, {}, "[development] One flow.",
    )
    assert now["schedules"][0]["active"] is False  # a paused schedule stays paused


def test_a_saved_plan_is_applied_and_refused_once_the_server_moved(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "saving", one_flow("saved"))
    saved = tmp_path / "plan.json"

    planned = cli(root, "plan", "--env", ENV, "--out", str(saved), server=deploy_server)
    assert planned.returncode == 2 and saved.stat().st_mode & 0o077 == 0
    applied = cli(root, "deploy", "--env", ENV, "--plan", str(saved), server=deploy_server)
    assert applied.returncode == 0, applied.stdout + applied.stderr

    source = root / "flows" / "saved.py"
    source.write_text(source.read_text().replace("One flow", "Changed"))
    assert cli(root, "plan", "--env", ENV, "--out", str(saved), server=deploy_server).returncode == 2
    live = on_server(deploy_server, "project:saving")["saved/saved"]
    httpx.patch(
        f"{deploy_server.rstrip('/')}/deployments/{live['id']}", json={"paused": True}, timeout=30
    ).raise_for_status()

    refused = cli(root, "deploy", "--env", ENV, "--plan", str(saved), server=deploy_server)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "saved/saved: changed on the server since the plan was made" in refused.stderr
    assert on_server(deploy_server, "project:saving")["saved/saved"]["updated"] != live["updated"]
    after = on_server(deploy_server, "project:saving")["saved/saved"]
    assert after["description"] == live["description"]  # nothing was written


def test_destroy_deletes_this_project_in_this_env_and_nothing_else(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    keep = shared_project(tmp_path / "keeper", one_flow("kept"))
    gone = shared_project(tmp_path / "goner", {**one_flow("gone"), **one_flow("gone-too")})
    for root in (keep, gone):
        assert cli(root, "deploy", "--env", ENV, server=deploy_server).returncode == 0

    refused = cli(gone, "destroy", "--env", ENV, server=deploy_server)
    assert refused.returncode == 3 and "pass --yes" in refused.stderr
    done = cli(gone, "destroy", "--env", ENV, "--yes", server=deploy_server)

    assert done.returncode == 0, done.stdout + done.stderr
    assert on_server(deploy_server, "project:goner") == {}
    assert list(on_server(deploy_server, "project:keeper")) == ["kept/kept"]


def test_the_prompt_on_a_terminal_guards_a_prune(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    import pty
    import select

    root = shared_project(tmp_path / "prompted", {**one_flow("one"), **one_flow("two")})
    assert cli(root, "deploy", "--env", ENV, server=deploy_server).returncode == 0
    (root / "flows" / "two.py").unlink()

    def answered(answer: bytes) -> tuple[int, str]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: invoke on the pseudo-terminal
            os.chdir(root)
            argv = [sys.executable, "-m", "invoke", "deploy", "--env", ENV, "--prune"]
            os.execve(sys.executable, argv, cli_env({"DEPLOY_API_URL": deploy_server}))
        seen, sent = b"", False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if b"[y/N]" in seen and not sent:
                    os.write(fd, answer)
                    sent = True
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")

    code, text = answered(b"n\n")
    assert code == 1 and "delete 1 deployment(s): two/two" in text, text
    assert "two/two" in on_server(deploy_server, "project:prompted")
    code, text = answered(b"y\n")
    assert code == 0, text
    assert list(on_server(deploy_server, "project:prompted")) == ["one/one"]


def test_a_prefect_yaml_deployed_by_prefect_is_migrated_and_adopted_to_an_empty_plan(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "migrating", one_flow("nightly"))
    (root / "prefect.yaml").write_text(
        "name: migrating\n"
        "deployments:\n"
        "  - name: nightly-run\n"
        "    entrypoint: flows/nightly.py:nightly\n"
        "    description: Runs every night\n"
        "    tags: [team-data]\n"
        "    parameters: {x: 5}\n"
        "    schedules:\n"
        "      - cron: '0 2 * * *'\n"
        "        timezone: Europe/Paris\n"
        "    work_pool:\n"
        "      name: default-agent-pool\n"
        f"    pull:\n      - prefect.deployments.steps.set_working_directory:\n"
        f"          directory: {root}\n"
    )
    environ = {k: v for k, v in cli_env().items() if not k.startswith("PREFECT_")}
    environ.update(PREFECT_API_URL=deploy_server, PREFECT_HOME=str(tmp_path / "home"))
    theirs = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr

    migrated = cli(root, "migrate", "--prefect-yaml", "prefect.yaml", "--write", server=deploy_server)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    planned = cli(root, "plan", "--env", ENV, server=deploy_server)
    assert "! conflict   nightly/nightly-run" in planned.stdout, planned.stdout
    adopted = cli(root, "adopt", "--env", ENV, "--yes", server=deploy_server)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr

    final = cli(root, "plan", "--env", ENV, server=deploy_server)
    assert final.returncode == 0, final.stdout + final.stderr
    deployment = on_server(deploy_server, "project:migrating")["nightly/nightly-run"]
    assert deployment["parameters"] == {"x": 5}
    assert "team-data" in deployment["tags"]
    assert deployment["schedules"][0]["schedule"]["cron"] == "0 2 * * *"


def test_deploy_takes_a_whole_number_of_concurrency_and_a_dry_run_says_what_is_pending(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "numbers", one_flow("numbered"))

    dry = cli(root, "deploy", "--env", ENV, "--dry-run", server=deploy_server)
    assert dry.returncode == 2, dry.stdout + dry.stderr  # as plan: changes pending
    done = cli(root, "deploy", "--env", ENV, "--concurrency", "2", server=deploy_server)
    assert done.returncode == 0, done.stdout + done.stderr
    # The environment's parameters that this flow does not take: told by validate only.
    assert "skipped for" not in done.stderr
    validated = cli(root, "validate", "--env", ENV, server=deploy_server)
    assert validated.stderr.count("skipped for 1 flow(s)") == 1, validated.stderr
    assert cli(root, "deploy", "--env", ENV, "--dry-run", server=deploy_server).returncode == 0
    # --verbose shows those notes in plan too; --quiet keeps a deploy to its results.
    verbose = cli(root, "plan", "--env", ENV, "--verbose", server=deploy_server)
    assert verbose.stderr.count("skipped for 1 flow(s)") == 1, verbose.stderr
    (root / "flows" / "numbered.py").write_text(
        (root / "flows" / "numbered.py").read_text().replace('"""One flow."""', '"""Changed."""')
    )
    quiet = cli(root, "deploy", "--env", ENV, "--quiet", server=deploy_server)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "Plan for env" not in quiet.stdout and "updated numbered/numbered" not in quiet.stdout
    assert "Results for env 'development'" in quiet.stdout
    assert all(line.startswith("warning: ") for line in quiet.stderr.splitlines())
    bad = cli(root, "deploy", "--env", ENV, "--concurrency", "-1", server=deploy_server)
    assert bad.returncode == 3 and "Traceback" not in bad.stderr
    assert "--concurrency: must be at least 0, got -1" in bad.stderr


def test_an_api_url_without_api_says_so_instead_of_asking_for_pools(
    deploy_server: str, tmp_path: Path
) -> None:
    root = shared_project(tmp_path / "no-api", one_flow("no-api"))
    base = deploy_server.removesuffix("/api")

    done = cli(root, "plan", "--env", ENV, server=base)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"no Prefect API at {base} (did you mean {base}/api?)" in done.stderr
    assert "invoke pools" not in done.stderr and "Traceback" not in done.stderr


def test_version_names_this_tool_prefect_and_the_server(deploy_server: str, tmp_path: Path) -> None:
    from importlib.metadata import version

    root = shared_project(tmp_path / "versions", one_flow("versioned"))

    done = cli(root, "version", "--json", server=deploy_server)

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {
        "deploy-lib": version("deploy-lib"),
        "prefect": version("prefect"),
        "server": f"{version('prefect')} at {deploy_server}",
    }


CORPUS = REPO / "tests" / "corpus"
TEMPLATE_FILE = "pipelines/{{ cookiecutter.project_slug }}/flow.py"


def corpus_project(root: Path) -> Path:
    """A project holding tests/corpus/pipelines as its flows (flow_roots = pipelines)."""
    shared_project(root, {})
    shutil.copytree(CORPUS / "pipelines", root / "pipelines")
    settings = root / "settings.toml"
    settings.write_text(
        settings.read_text().replace('flow_roots = ["flows"]', 'flow_roots = ["pipelines"]')
    )
    return root


def test_a_repository_as_real_ones_are_deploys_its_healthy_flows_and_names_what_it_skips(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    root = corpus_project(tmp_path / "realrepo")

    checked = cli(root, "validate", "--env", ENV, "--json", server=deploy_server)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["valid"] is True
    assert report["skipped"] == [
        {"path": TEMPLATE_FILE, "flow": None, "line": 5, "reason": "syntax error: invalid syntax"}
    ]
    wanted = set(report["full_names"])
    assert {
        "report/dup-a-report",
        "report/dup-b-report",
        "Bond Reporting Data Scripts/Bond Reporting Data Scripts",
        "load-table/load-table",
        "run-pipeline/run-pipeline",
    } <= wanted
    assert any("every run must pass source, rows" in w for w in report["warnings"])

    done = cli(root, "deploy", "--env", ENV, server=deploy_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"skipped {TEMPLATE_FILE}:5: syntax error" in done.stderr
    live = on_server(deploy_server, "project:realrepo")
    assert set(live) == wanted
    assert live["report/dup-a-report"]["entrypoint"] == "pipelines/dup_a/report.py:sales_report"

    # A flow file that breaks keeps its deployment through a prune: the flow may well
    # still be there, the file just cannot be read now.
    enums = root / "pipelines" / "enums.py"
    enums.write_text(enums.read_text() + "\ndef half_typed(:\n")
    pruned = cli(root, "deploy", "--env", ENV, "--prune", "--yes", server=deploy_server)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "kept" in pruned.stdout and "pipelines/enums.py has problems" in pruned.stdout
    assert set(on_server(deploy_server, "project:realrepo")) == wanted

    strict = cli(root, "deploy", "--env", ENV, "--prune", "--strict", server=deploy_server)
    assert strict.returncode == 3, strict.stdout + strict.stderr
    assert "pipelines/enums.py:36: syntax error" in strict.stderr and "nothing was written" in strict.stderr
    assert set(on_server(deploy_server, "project:realrepo")) == wanted


def test_a_deploy_whose_stdout_closes_writes_everything_and_exits_by_the_apply(
    deploy_server: str, shared_pools: None, tmp_path: Path
) -> None:
    """`invoke deploy | head -1`: the reader goes after one line; the apply does not."""
    flows = {k: v for i in range(12) for k, v in one_flow(f"piped-{i}").items()}
    root = shared_project(tmp_path / "piped", flows)
    log = tmp_path / "deploy.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "deploy", "--env", ENV, "--log-file", str(log)],
        cwd=root,
        env=cli_env({"DEPLOY_API_URL": deploy_server}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=240) == 0, stderr
    assert "Traceback" not in stderr
    assert sorted(on_server(deploy_server, "project:piped")) == sorted(
        f"piped-{i}/piped-{i}" for i in range(12)
    )
    assert "created" in log.read_text()


def test_every_short_flag_means_one_option_in_every_task() -> None:
    """-d is --debug, -n --dry-run, -l --log-file ... in every task that has them."""
    import tasks

    seen: dict[str, str] = {}
    for name in tasks.ns.task_names:
        task = tasks.ns[name]
        for argument in task.get_arguments():
            longs = [n for n in argument.names if len(n) > 1]
            shorts = [n for n in argument.names if len(n) == 1]
            for short in shorts:
                assert seen.setdefault(short, longs[0]) == longs[0], (name, short, longs)
                assert tasks.SHORT_FLAGS.get(longs[0].replace("-", "_")) == short
        assert {a.name for a in task.get_arguments()} >= {"debug", "quiet", "verbose"}, name
    assert seen["d"] == "debug" and seen["n"] == "dry-run" and seen["l"] == "log-file"
