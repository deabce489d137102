"""The Python API (deploy_lib.creators, the deploy_lib package surface) and the example
script that uses it, on a copy of this project in tmp_path; the e2e tests deploy to the
session's real Prefect server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import make_project

import deploy_lib
from deploy_lib import (
    ConfigurationManager,
    DockerDeploymentCreator,
    FlowMetadata,
    Parameter,
    PythonDeploymentCreator,
    deploy_flows,
    pipeline,
)
from deploy_lib.api import PrefectApi
from deploy_lib.errors import (
    DiscoveryError,
    InputError,
    SettingsError,
    TemplateError,
    UnknownEnvironmentError,
    ValidationFailed,
)
from deploy_lib.pipeline import prepare
from deploy_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "python_deployment_example.py"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's settings, templates and example flows (not a git repo)."""
    root = make_project(tmp_path / "project", names=("settings.toml", "templates", "flows"))
    for name in list(os.environ):
        if name.startswith("DEPLOY_"):
            monkeypatch.delenv(name)
    return root


@pytest.fixture
def config(project: Path) -> ConfigurationManager:
    return ConfigurationManager(project)


def _add_environment(root: Path, name: str, body: str) -> None:
    with (root / "settings.toml").open("a", encoding="utf-8") as handle:
        handle.write(f"\n[{name}]\n{body}\n")


# -- the package surface ------------------------------------------------------------------


def test_importing_the_package_loads_none_of_the_heavy_modules() -> None:
    code = (
        "import sys, deploy_lib; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('deploy_lib', 'dynaconf', 'yaml', 'jinja2', 'cerberus', 'httpx', 'prefect'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["deploy_lib"]


def test_every_public_name_resolves_to_the_object_its_module_defines() -> None:
    from deploy_lib import creators, models, pipeline

    assert sorted(deploy_lib.__all__) == sorted(deploy_lib._EXPORTS)
    for name in deploy_lib.__all__:
        assert getattr(deploy_lib, name) is not None, name
    assert deploy_lib.FlowMetadata is models.FlowMetadata
    assert deploy_lib.prepare is pipeline.prepare
    assert deploy_lib.deploy_flows is creators.deploy_flows
    assert {"PythonDeploymentCreator", "ConfigurationManager", "deploy_flows"} <= set(
        dir(deploy_lib)
    )


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_thing'"):
        deploy_lib.no_such_thing  # noqa: B018


def test_flow_metadata_written_by_hand_derives_its_module_path() -> None:
    flow = FlowMetadata(name="my-flow", function="my_flow", path="flows/my.py")

    assert flow.module_path == "flows.my"
    assert flow.entrypoint == "flows/my.py:my_flow"
    assert flow.module_entrypoint == "flows.my:my_flow"
    assert flow.supports_python_deployment and not flow.supports_docker_deployment


# -- ConfigurationManager -----------------------------------------------------------------


def test_configuration_manager_finds_the_project_root_from_a_folder_inside_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "flows" / "etl")

    assert ConfigurationManager().root == project.resolve()


def test_configuration_manager_without_settings_toml_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SettingsError, match=r"no settings\.toml in .* or any folder above it"):
        ConfigurationManager()
    with pytest.raises(SettingsError, match=r"settings\.toml: the project root must hold"):
        ConfigurationManager(tmp_path)


def test_settings_are_loaded_once_per_environment_until_cleared(
    config: ConfigurationManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = config.settings("staging")
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", "other-pool")

    assert config.settings("staging") is staging
    assert config.get("staging", "work_pool.python") == "staging-agent-pool"
    config.clear()
    assert config.get("staging", "work_pool.python") == "other-pool"


def test_get_reads_each_environment_layered_over_default(config: ConfigurationManager) -> None:
    assert config.environments() == ["development", "staging", "production"]
    assert config.get("production", "work_pool.python") == "prod-agent-pool"
    assert config.get("production", "parameters") == {
        "cleanup": True,
        "use_distributed": True,
        "debug": False,
    }
    assert config.get("staging", "env_vars.PYTHONPATH") == "."  # from [default]
    assert config.get("staging", "no.such.key", "fallback") == "fallback"


def test_get_returns_a_copy_that_does_not_change_the_settings(config: ConfigurationManager) -> None:
    config.get("production", "parameters")["cleanup"] = "changed"

    assert config.get("production", "parameters.cleanup") is True


def test_an_unknown_environment_names_the_valid_ones(config: ConfigurationManager) -> None:
    with pytest.raises(
        UnknownEnvironmentError,
        match="unknown environment 'qa'; valid environments are: development, production, staging",
    ):
        config.settings("qa")


def test_find_flow_accepts_a_name_or_either_entrypoint_form(config: ConfigurationManager) -> None:
    by_name = config.find_flow("daily-etl")

    assert config.find_flow("flows/etl/daily.py:daily_etl") is by_name
    assert config.find_flow("flows.etl.daily:daily_etl") is by_name
    assert [p.name for p in by_name.parameters] == ["day", "rows", "multiplier"]
    with pytest.raises(
        DiscoveryError,
        match="no flow 'nope' was discovered under flows; discovered flows: async-report, daily-etl",
    ):
        config.find_flow("nope")


# -- PythonDeploymentCreator --------------------------------------------------------------


def test_create_deployment_is_the_body_invoke_deploy_would_send(
    project: Path, config: ConfigurationManager
) -> None:
    creator = PythonDeploymentCreator(config)
    flow = config.find_flow("env-report")

    body = creator.create_deployment(flow, "production")

    (spec,) = [
        s for s in prepare(load_settings("production", project)).specs if s.name == "env-report"
    ]
    assert body == spec.body
    assert body["work_pool_name"] == "prod-agent-pool"
    assert body["parameters"] == {"cleanup": True, "use_distributed": True, "debug": False}
    assert body["job_variables"]["env"]["PREFECT_LOGGING_LEVEL"] == "WARNING"
    assert "runtime:python" in body["tags"] and "env:production" in body["tags"]


def test_each_environment_gets_its_own_settings(config: ConfigurationManager) -> None:
    creator = PythonDeploymentCreator(config)
    flow = config.find_flow("env-report")

    dev = creator.create_deployment(flow, "development")
    prod = creator.create_deployment(flow, "production")

    assert (dev["work_pool_name"], prod["work_pool_name"]) == (
        "default-agent-pool",
        "prod-agent-pool",
    )
    assert (dev["concurrency_limit"], prod["concurrency_limit"]) == (2, 10)
    assert dev["job_variables"]["stream_output"] is True  # python_development.yaml
    assert prod["job_variables"]["stream_output"] is False  # python_production.yaml


def test_the_returned_dict_is_the_callers_to_change(config: ConfigurationManager) -> None:
    creator = PythonDeploymentCreator(config)
    flow = config.find_flow("env-report")
    first = creator.create_deployment(flow, "staging")
    first["job_variables"]["env"]["PYTHONPATH"] = "changed"
    first["tags"].append("mine")

    again = creator.create_deployment(flow, "staging")

    assert again["job_variables"]["env"]["PYTHONPATH"] == "."
    assert "mine" not in again["tags"]


def test_a_flow_given_by_name_function_and_path_is_completed_from_its_source(
    config: ConfigurationManager,
) -> None:
    creator = PythonDeploymentCreator(config)
    by_hand = FlowMetadata(name="env-report", function="env_report", path="flows/env_report.py")

    body = creator.create_deployment(by_hand, "production")

    discovered = creator.create_deployment(config.find_flow("env-report"), "production")
    assert body == discovered
    assert set(body["parameter_openapi_schema"]["properties"]) == {
        "cleanup", "use_distributed", "debug", "extra_vars"
    }
    assert body["description"] != "Flow env-report (flows/env_report.py)"
    assert not [w for w in creator.warnings if "described with parameters" in w]


def test_a_flow_described_by_hand_is_taken_as_given_with_a_warning_that_is_logged(
    config: ConfigurationManager, caplog: pytest.LogCaptureFixture
) -> None:
    creator = PythonDeploymentCreator(config)
    by_hand = FlowMetadata(
        name="env-report",
        function="env_report",
        path="flows/env_report.py",
        parameters=(Parameter("debug", "bool", False, required=False),),
    )

    with caplog.at_level("WARNING", logger="deploy_lib"):
        body = creator.create_deployment(by_hand, "production")

    assert list(body["parameter_openapi_schema"]["properties"]) == ["debug"]
    expected = (
        "described with parameters (debug) other than the ones flows/env_report.py declares "
        "(cleanup, use_distributed, debug, extra_vars)"
    )
    assert any(expected in w for w in creator.warnings)
    assert any(expected in r.getMessage() for r in caplog.records)


def test_the_module_entrypoint_style_comes_from_settings(
    project: Path, config: ConfigurationManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENTRYPOINT_STYLE", "module")
    flow = FlowMetadata(name="my-flow", function="my_flow", path="flows/my.py")
    (project / "flows" / "my.py").write_text(
        "from prefect import flow\n\n@flow(name='my-flow')\ndef my_flow() -> None:\n    pass\n"
    )

    body = PythonDeploymentCreator(config).create_deployment(flow, "staging")

    assert body["entrypoint"] == "flows.my:my_flow"
    assert body["name"] == "my-flow"


def test_a_hand_made_flow_whose_file_is_missing_names_the_file(
    config: ConfigurationManager,
) -> None:
    flow = FlowMetadata(name="ghost", function="ghost", path="flows/ghost.py")

    with pytest.raises(
        DiscoveryError,
        match=r"flows/ghost\.py: cannot read it to compute the version of flow 'ghost'",
    ):
        PythonDeploymentCreator(config).create_deployment(flow, "staging")


def test_a_flow_with_problems_gets_no_deployment(config: ConfigurationManager) -> None:
    flow = FlowMetadata(
        name="bad",
        function="bad",
        path="flows/hello.py",
        problems=("a flow name may not contain '/'",),
    )

    with pytest.raises(
        DiscoveryError,
        match=r"flows/hello\.py: flow 'bad' has problems and gets no deployment: a flow name may not contain '/'",
    ):
        PythonDeploymentCreator(config).create_deployment(flow, "staging")


def test_a_flow_disabled_in_settings_says_which_keys_to_check(project: Path) -> None:
    _add_environment(project, "quiet.flows.hello", "enabled = false")
    _add_environment(project, "quiet", "")
    config = ConfigurationManager(project)

    with pytest.raises(
        InputError,
        match=r"environment 'quiet' builds no python deployment for flow 'hello': check deployment_types and flows\.hello\.enabled",
    ):
        PythonDeploymentCreator(config).create_deployment(config.find_flow("hello"), "quiet")


def test_something_other_than_flow_metadata_is_refused(config: ConfigurationManager) -> None:
    with pytest.raises(InputError, match="expected a FlowMetadata, got dict"):
        PythonDeploymentCreator(config).create_deployment({"name": "hello"}, "staging")  # type: ignore[arg-type]


def test_validate_accepts_what_create_deployment_made(config: ConfigurationManager) -> None:
    creator = PythonDeploymentCreator(config)
    for flow in config.flows():
        assert creator.validate_deployment_config(creator.create_deployment(flow, "staging")) == []


def test_validate_names_every_problem_with_its_key_path(config: ConfigurationManager) -> None:
    creator = PythonDeploymentCreator(config)
    body = creator.create_deployment(config.find_flow("env-report"), "production")
    body.update(
        concurrency_limit=0,
        colour="blue",
        schedules=[{"schedule": {"cron": "61 * * * *", "timezone": "UTC"}, "active": True}],
    )
    body["parameters"]["debug"] = "yes"

    problems = creator.validate_deployment_config(body)

    messages = {p.key: p.message for p in problems}
    assert set(messages) == {
        "colour",
        "concurrency_limit",
        "parameters.debug",
        "schedules.0.schedule.cron",
    }
    assert messages["colour"].startswith("unknown key (allowed: concurrency_limit, concurrency_options, description")
    assert messages["concurrency_limit"] == "must be at least 1 (got 0)"
    assert messages["parameters.debug"] == (
        "parameter 'debug' of flow 'env-report' expects bool, got string 'yes'"
    )
    assert messages["schedules.0.schedule.cron"] == 'Invalid cron string: "61 * * * *"'
    assert {p.deployment for p in problems} == {"env-report"}


def test_validate_reports_an_entrypoint_that_points_at_no_flow(
    config: ConfigurationManager,
) -> None:
    creator = PythonDeploymentCreator(config)
    body = creator.create_deployment(config.find_flow("hello"), "staging")
    body["entrypoint"] = "flows/etl/helpers.py:summarize"

    (problem,) = creator.validate_deployment_config(body)

    assert problem.key == "entrypoint"
    assert problem.message == (
        "summarize() in flows/etl/helpers.py is not a flow: decorate it with @flow "
        "(from prefect import flow)"
    )


def test_validate_reports_something_other_than_a_mapping(config: ConfigurationManager) -> None:
    (problem,) = PythonDeploymentCreator(config).validate_deployment_config(["a list"])  # type: ignore[arg-type]

    assert problem.message == "a deployment config must be a mapping (dict), got list"


def test_validate_checks_python_and_docker_bodies_by_their_own_schema(
    config: ConfigurationManager,
) -> None:
    flow = config.find_flow("table-report")
    docker_body = DockerDeploymentCreator(config).create_deployment(flow, "staging")

    problems = PythonDeploymentCreator(config).validate_deployment_config(docker_body)

    assert "job_variables.image" in {p.key for p in problems}
    assert DockerDeploymentCreator(config).validate_deployment_config(docker_body) == []


def test_get_deployment_template_is_the_parsed_file_the_environment_uses(
    config: ConfigurationManager,
) -> None:
    creator = PythonDeploymentCreator(config)

    production = creator.get_deployment_template("production")
    staging = creator.get_deployment_template("staging")

    assert creator.template_source("production") == "templates/python_production.yaml"
    assert creator.template_source("staging") == "templates/python_deployment.yaml"
    assert production["job_variables"]["stream_output"] is False
    assert production["enforce_parameter_schema"] is True
    assert staging == {}  # the base overlay changes nothing: the built body stands


def test_get_deployment_template_names_a_missing_template(project: Path) -> None:
    (project / "templates" / "docker_deployment.yaml").unlink()

    with pytest.raises(
        TemplateError,
        match=r"no template for type 'docker' in environment 'staging': neither "
        r"docker_staging\.yaml nor docker_deployment\.yaml exists",
    ):
        DockerDeploymentCreator(ConfigurationManager(project)).get_deployment_template("staging")


# -- DockerDeploymentCreator --------------------------------------------------------------


def test_docker_deployment_of_a_flow_with_a_dockerfile(config: ConfigurationManager) -> None:
    creator = DockerDeploymentCreator(config)
    flow = config.find_flow("table-report")

    body = creator.create_deployment(flow, "production")

    assert body["name"] == "table-report-docker"
    assert body["work_pool_name"] == "prod-docker-pool"
    # The tag is the build context's hash (git or not).
    assert re.fullmatch(
        r"registry\.prod\.internal/deploy-lib/table-report:[0-9a-f]{12}", body["job_variables"]["image"]
    )
    assert body["job_variables"]["image_pull_policy"] == "Always"
    assert "runtime:docker" in body["tags"]
    assert creator.get_deployment_template("production")["job_variables"]["labels"] == {
        "deploy-lib.deployment": "{{ flow.name }}/{{ deployment.name }}",
        "deploy-lib.env": "{{ env }}",
    }


def test_docker_deployment_of_a_flow_without_a_dockerfile_is_refused(
    config: ConfigurationManager,
) -> None:
    with pytest.raises(
        InputError,
        match=r"flow 'hello' \(flows/hello\.py\) has no Dockerfile, so it has no docker deployment",
    ):
        DockerDeploymentCreator(config).create_deployment(config.find_flow("hello"), "staging")


def test_both_creators_name_the_two_types_of_one_flow_apart(config: ConfigurationManager) -> None:
    flow = config.find_flow("table-report")

    python = PythonDeploymentCreator(config).create_deployment(flow, "staging")
    docker = DockerDeploymentCreator(config).create_deployment(flow, "staging")

    assert (python["name"], docker["name"]) == ("table-report-python", "table-report-docker")
    assert python["flow_name"] == docker["flow_name"] == "table-report"


# -- the example script -------------------------------------------------------------------


def _run_example(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--root", str(project), *args],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_example_script_shows_both_environments_and_validation(project: Path) -> None:
    proc = _run_example(project)

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "environments: development, staging, production" in lines
    assert (
        "by hand:   env-report at flows/env_report.py:env_report "
        "(module flows.env_report:env_report), 0 parameter(s)"
    ) in lines
    assert (
        "development: deployment 'env-report' in work pool 'default-agent-pool' from "
        "templates/python_development.yaml, 3 parameter(s): valid"
    ) in lines
    assert (
        "production: deployment 'env-report' in work pool 'prod-agent-pool' from "
        "templates/python_production.yaml, 3 parameter(s): valid"
    ) in lines
    for change in (
        '  work_pool_name: "default-agent-pool" -> "prod-agent-pool"',
        "  parameters.cleanup: false -> true",
        "  concurrency_limit: 2 -> 10",
        '  job_variables.env.PREFECT_LOGGING_LEVEL: "DEBUG" -> "WARNING"',
    ):
        assert change in lines
    assert (
        "by hand vs discovered (development): identical"
        in lines
    )
    assert "broken production dict: 3 problem(s)" in lines
    assert '  schedules.0.schedule.cron: Invalid cron string: "61 * * * *"' in lines
    assert "  concurrency_limit: must be at least 1 (got 0)" in lines
    assert any(
        re.fullmatch(
            r"docker: 'table-report-docker' runs image "
            r"registry\.prod\.internal/deploy-lib/table-report:[0-9a-f]{12} \(valid\)",
            line,
        )
        for line in lines
    ), lines
    assert not any(line.startswith("deployed") for line in lines)


def test_the_example_script_masks_secrets_in_what_it_prints(project: Path) -> None:
    (project / ".secrets.toml").write_text(
        '[production.env_vars]\nDATABASE_PASSWORD = "hunter2-secret"\n', encoding="utf-8"
    )
    (project / ".secrets.toml").chmod(0o600)

    proc = _run_example(project)

    assert proc.returncode == 0, proc.stderr
    assert any(
        line.startswith('  job_variables.env.DATABASE_PASSWORD: "<missing>" -> "{{ prefect.blocks.secret.')
        for line in proc.stdout.splitlines()
    ), proc.stdout
    assert "hunter2-secret" not in proc.stdout


def test_the_example_script_reports_bad_settings_without_a_traceback(project: Path) -> None:
    (project / "settings.toml").write_text("[default]\nflow_roots = [\n", encoding="utf-8")

    proc = _run_example(project)

    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ")
    assert "settings.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- end to end: deploy to the session's Prefect server -----------------------------------


@pytest.fixture
def e2e_project(project: Path, prefect_server: str) -> Path:
    """The project with an environment ``creators`` on the session's server, its own
    work pools and deployment names (other tests deploy the same flows there)."""
    _add_environment(
        project,
        "creators",
        f'api_url = "{prefect_server}"\n'
        "[creators.work_pool]\n"
        'python = "creators-process"\n'
        'docker = "creators-docker"\n'
        "[creators.naming]\n"
        'python = "{flow}-creators"\n'
        'docker = "{flow}-creators-docker"\n'
        "always_suffix = true",
    )
    pipeline.pools(load_settings("creators", project), create=True)
    return project


def _read(url: str, method: str, *args: Any) -> Any:
    async def go() -> Any:
        async with PrefectApi(url) as api:
            return await getattr(api, method)(*args)

    return asyncio.run(go())


@pytest.mark.e2e
def test_deploy_to_prefect_returns_the_id_the_server_knows(
    e2e_project: Path, prefect_server: str
) -> None:
    config = ConfigurationManager(e2e_project)
    creator = PythonDeploymentCreator(config)
    flow = config.find_flow("env-report")

    deployment_id = creator.deploy_to_prefect(flow, "creators")

    live = _read(prefect_server, "read_deployment", deployment_id)
    assert live["name"] == "env-report-creators"
    assert live["work_pool_name"] == "creators-process"
    assert live["parameters"] == {"cleanup": False, "use_distributed": False, "debug": True}
    assert "env:creators" in live["tags"]
    # Unchanged: the same id, and the server's copy was not written again.
    assert creator.deploy_to_prefect(flow, "creators") == deployment_id
    assert _read(prefect_server, "read_deployment", deployment_id)["updated"] == live["updated"]


@pytest.mark.e2e
def test_deploy_to_prefect_writes_nothing_when_the_work_pool_is_missing(
    e2e_project: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", "creators-no-such-pool")
    config = ConfigurationManager(e2e_project)

    with pytest.raises(ValidationFailed, match="work pool 'creators-no-such-pool' does not exist"):
        PythonDeploymentCreator(config).deploy_to_prefect(config.find_flow("hello"), "creators")

    assert _read(prefect_server, "read_deployment_by_name", "hello", "hello-creators") is None


@pytest.mark.e2e
def test_deploy_flows_returns_a_result_per_deployment(
    e2e_project: Path, prefect_server: str
) -> None:
    first = deploy_flows("creators", root=e2e_project)

    names = [r.deployment for r in first.results]
    assert names == [
        "async-report/async-report-creators",
        "daily-etl/daily-etl-creators",
        "env-report/env-report-creators",
        "hello/hello-creators",
        "order-totals/order-totals-creators",
        "table-report/table-report-creators",
        "table-report/table-report-creators-docker",
    ]
    assert not first.failed
    assert {r.status for r in first.results} <= {"created", "updated", "unchanged"}
    for result in first.results:
        flow_name, name = result.deployment.split("/")
        live = _read(prefect_server, "read_deployment_by_name", flow_name, name)
        assert live["id"] == result.id

    again = deploy_flows("creators", root=e2e_project, flow_names=["hello"], types=["python"])

    assert [(r.deployment, r.status, r.id) for r in again.results] == [
        ("hello/hello-creators", "unchanged", names_ids(first)["hello/hello-creators"])
    ]


def names_ids(result: Any) -> dict[str, str | None]:
    return {r.deployment: r.id for r in result.results}


@pytest.mark.e2e
def test_the_example_script_deploys_when_asked(e2e_project: Path) -> None:
    proc = _run_example(e2e_project, "--deploy", "--env", "creators")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("deployed env-report to creators: id ") for line in lines)
    assert any(line.startswith("deploy_flows('creators'): ") for line in lines)
    assert not any("failed" in line for line in lines)


# -- one validation for the CLI and the Python API ----------------------------------------


def test_the_python_api_and_the_cli_find_the_same_problems_in_one_input(
    project: Path, config: ConfigurationManager
) -> None:
    # A job variable no process pool defines, and a parameter value of the wrong type.
    (project / "templates" / "python_staging.yaml").write_text(
        "job_variables:\n  gpu_count: 1\n", encoding="utf-8"
    )
    with (project / "settings.toml").open("a", encoding="utf-8") as handle:
        handle.write('\n[staging.flows.hello.parameters]\nname = 42\n')

    with pytest.raises(ValidationFailed) as caught:  # what `invoke validate` runs
        prepare(load_settings("staging", project), flow_names=["hello"], types=["python"])
    creator = PythonDeploymentCreator(config)
    body = creator.create_deployment(config.find_flow("hello"), "staging")
    through_api = creator.validate_deployment_config(body, "staging")

    def seen(problems: list[Any]) -> list[tuple[Any, ...]]:
        return sorted((p.deployment, p.key, p.message) for p in problems)

    assert seen(caught.value.problems) == seen(through_api)
    keys = {p.key for p in through_api}
    assert {"job_variables.gpu_count", "parameters.name"} <= keys, keys
