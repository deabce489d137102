"""build_deployments: flows + one environment's settings -> the values of each deployment."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy_lib.api import bundled_job_templates
from deploy_lib.build import (
    CLONE_STEP_ID,
    BuildContext,
    BuildResult,
    context_digest,
    convert_schedules,
    flow_slug,
    flow_version,
    image_for,
    image_reference,
)
from deploy_lib.build import build_deployments as _build_deployments
from deploy_lib.errors import DiscoveryError, SettingsError
from deploy_lib.models import MANAGED_BY_TAG, FlowMetadata, GitInfo, Parameter, Settings
from deploy_lib.parameters import parameter_schema

GIT = GitInfo(sha="0123456789abcdef" * 2 + "01234567", short_sha="0123456789ab", branch="main")
STEP = "prefect.deployments.steps."

# Shaped like settings.toml: [default] merged with [staging].
STAGING: dict[str, Any] = {
    "flow_roots": ["flows"],
    "entrypoint_style": "path",
    "deployment_types": ["python", "docker"],
    "tags": [],
    "paused": False,
    "enforce_parameter_schema": True,
    "work_pool": {
        "python": "staging-agent-pool",
        "docker": "staging-docker-pool",
        "queue": "default",
    },
    "naming": {"python": "{flow}-python", "docker": "{flow}-docker", "always_suffix": False},
    "parameters": {"cleanup": True, "use_distributed": False, "debug": True},
    "env_vars": {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "INFO"},
    "retries": {"retries": 2, "retry_delay_seconds": 30},
    "health": {"heartbeat_frequency": 30},
    "resources": {"concurrency_limit": 5, "docker": {"mem_limit": "2g", "memswap_limit": "4g"}},
    "docker": {
        "registry": "registry.staging.internal/deploy-lib",
        "tag": "",
        "image_pull_policy": "IfNotPresent",
        "working_dir": "/opt/prefect/app",
        "extra_pip_packages": [],
    },
    "pull": {
        "strategy": "local",
        "repository": "",
        "branch": "main",
        "pip_index_url": "",
        "extra_packages": [],
    },
    "flows": {},
}


def build_deployments(flows: Any, settings: Any, *, git: GitInfo) -> Any:
    """``build.build_deployments`` with the parameter schemas the pipeline hands it."""
    return _build_deployments(
        flows, settings, git=git, schema_of=parameter_schema, templates=bundled_job_templates()
    )


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def settings(root: Path, env: str = "staging", **extra: Any) -> Settings:
    return Settings(env=env, root=root, data=_merge(STAGING, extra))


def write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def hello_flow(root: Path, **kw: Any) -> FlowMetadata:
    write(root, {"flows/hello.py": "from prefect import flow\n\n@flow\ndef hello(name='x'): ...\n"})
    fields: dict[str, Any] = {
        "name": "hello",
        "function": "hello",
        "path": "flows/hello.py",
        "description": "Say hello.",
        "parameters": (Parameter("name", "str", "world", required=False),),
    }
    fields.update(kw)
    return FlowMetadata(**fields)


def docker_flow(root: Path, **kw: Any) -> FlowMetadata:
    write(
        root,
        {
            "flows/boxed/report.py": "from prefect import flow\n\n@flow\ndef report(rows: int = 3): ...\n",
            "flows/boxed/Dockerfile": "FROM prefecthq/prefect:3-python3.11\n",
            "flows/boxed/requirements.txt": "tabulate==0.9.0\n",
        },
    )
    fields: dict[str, Any] = {
        "name": "table-report",
        "function": "report",
        "path": "flows/boxed/report.py",
        "parameters": (Parameter("rows", "int", 3, required=False),),
        "dockerfile": "flows/boxed/Dockerfile",
        "requirements": "flows/boxed/requirements.txt",
    }
    fields.update(kw)
    return FlowMetadata(**fields)


def one(result: BuildResult, type_: str = "python") -> Mapping[str, Any]:
    found = [c.deployment for c in result.contexts if c.type == type_]
    assert len(found) == 1, result.contexts
    return found[0]


# -- seed requirements ------------------------------------------------------------------


def test_requirement_2_1_native_python_deployments(tmp_path: Path) -> None:
    flow = hello_flow(tmp_path)

    result = build_deployments([flow], settings(tmp_path), git=GIT)

    [context] = result.contexts
    dep = context.deployment
    assert context.type == "python"
    assert dep["name"] == "hello"
    assert dep["flow_name"] == "hello"
    assert dep["entrypoint"] == "flows/hello.py:hello"
    # The python type runs on the environment's process pool, in the project root.
    assert dep["work_pool_name"] == "staging-agent-pool"
    assert dep["work_queue_name"] == "default"
    assert dep["job_variables"]["working_dir"] == str(tmp_path.resolve())
    assert dep["pull_steps"] == [
        {STEP + "set_working_directory": {"directory": str(tmp_path.resolve())}}
    ]
    env = dep["job_variables"]["env"]
    assert env["PYTHONPATH"] == "."
    assert env["PREFECT_LOGGING_LEVEL"] == "INFO"
    assert dep["tags"][:3] == ["runtime:python", "env:staging", MANAGED_BY_TAG]
    assert "image" not in dep["job_variables"]


def test_requirement_2_3_both_deployment_types_supported(tmp_path: Path) -> None:
    flow = docker_flow(tmp_path)
    assert flow.supports_python_deployment and flow.supports_docker_deployment

    result = build_deployments([flow], settings(tmp_path), git=GIT)

    assert [(c.type, c.name) for c in result.contexts] == [
        ("python", "table-report-python"),
        ("docker", "table-report-docker"),
    ]
    python, docker = (c.deployment for c in result.contexts)
    assert python["entrypoint"] == docker["entrypoint"] == "flows/boxed/report.py:report"
    assert python["version"] == docker["version"]
    assert python["work_pool_name"] == "staging-agent-pool"
    assert docker["work_pool_name"] == "staging-docker-pool"
    assert "runtime:docker" in docker["tags"] and "runtime:python" not in docker["tags"]


def test_a_flow_without_a_dockerfile_yields_only_a_python_deployment_named_after_it(
    tmp_path: Path,
) -> None:
    result = build_deployments([hello_flow(tmp_path)], settings(tmp_path), git=GIT)

    assert [(c.type, c.name) for c in result.contexts] == [("python", "hello")]


def test_always_suffix_names_a_single_type_with_its_suffix(tmp_path: Path) -> None:
    s = settings(tmp_path, naming={"always_suffix": True})

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    assert [c.name for c in result.contexts] == ["hello-python"]


def test_naming_formats_may_use_the_flow_the_env_and_the_type(tmp_path: Path) -> None:
    s = settings(tmp_path, naming={"python": "{flow}.{env}", "docker": "{type}-{flow}"})

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert [c.name for c in result.contexts] == ["table-report.staging", "docker-table-report"]


# -- entrypoint, env, tags ----------------------------------------------------------------


def test_module_entrypoint_style_gives_the_dotted_form(tmp_path: Path) -> None:
    s = settings(tmp_path, entrypoint_style="module")

    dep = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))

    assert dep["entrypoint"] == "flows.hello:hello"


def test_the_run_env_carries_retries_heartbeat_and_the_environment_name(tmp_path: Path) -> None:
    dep = one(build_deployments([hello_flow(tmp_path)], settings(tmp_path), git=GIT))

    assert dep["job_variables"]["env"] == {
        "PYTHONPATH": ".",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_FLOWS_DEFAULT_RETRIES": "2",
        "PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS": "30",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "DEPLOY_ENV_NAME": "staging",
    }
    assert dep["sources"]["job_variables.env.PREFECT_FLOWS_DEFAULT_RETRIES"] == "retries.retries"


def test_an_explicit_env_var_wins_over_a_computed_one_and_values_become_text(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, env_vars={"PREFECT_FLOWS_DEFAULT_RETRIES": 7, "FEATURE_ON": True})

    env = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))["job_variables"]["env"]

    assert env["PREFECT_FLOWS_DEFAULT_RETRIES"] == "7"
    assert env["FEATURE_ON"] == "true"


def test_tags_are_built_in_then_settings_then_per_flow_without_duplicates(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        tags=["team:data", "env:staging"],
        flows={"hello": {"tags": ["nightly", "team:data"]}},
    )

    dep = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))

    assert dep["tags"] == [
        "runtime:python",
        "env:staging",
        MANAGED_BY_TAG,
        "project:project",
        "team:data",
        "nightly",
    ]


def test_the_description_comes_from_the_override_else_the_flow_else_its_location(
    tmp_path: Path,
) -> None:
    plain = hello_flow(tmp_path, description=None)
    s = settings(tmp_path)
    assert one(build_deployments([plain], s, git=GIT))["description"] == (
        "Flow hello (flows/hello.py)"
    )
    assert one(build_deployments([hello_flow(tmp_path)], s, git=GIT))["description"] == "Say hello."
    s = settings(tmp_path, flows={"hello": {"description": "Greets people."}})
    assert one(build_deployments([plain], s, git=GIT))["description"] == "Greets people."


# -- parameters ---------------------------------------------------------------------------


def test_environment_parameters_reach_only_flows_that_accept_them_with_one_warning(
    tmp_path: Path,
) -> None:
    accepting = FlowMetadata(
        name="env-report",
        function="env_report",
        path="flows/env_report.py",
        parameters=(
            Parameter("cleanup", "bool", False, required=False),
            Parameter("debug", "bool", False, required=False),
        ),
    )
    write(tmp_path, {"flows/env_report.py": "# flow\n"})

    result = build_deployments([accepting, hello_flow(tmp_path)], settings(tmp_path), git=GIT)

    by_name = {c.name: c.deployment for c in result.contexts}
    assert by_name["env-report"]["parameters"] == {"cleanup": True, "debug": True}
    assert by_name["hello"]["parameters"] == {}
    # One warning per set of flows, naming every parameter they do not accept.
    assert result.notes == (
        "environment parameter(s) 'cleanup', 'debug' (settings parameters.cleanup, "
        "parameters.debug) skipped for 1 flow(s) whose signature does not accept them: hello",
        "environment parameter(s) 'use_distributed' (settings parameters.use_distributed) "
        "skipped for 2 flow(s) whose signature does not accept them: env-report, hello",
    )


def test_a_flow_taking_kwargs_accepts_every_environment_parameter(tmp_path: Path) -> None:
    flow = hello_flow(
        tmp_path,
        parameters=(Parameter("options", None, None, required=False, kind="var_keyword"),),
    )

    result = build_deployments([flow], settings(tmp_path), git=GIT)

    assert one(result)["parameters"] == {"cleanup": True, "use_distributed": False, "debug": True}
    assert result.warnings == ()


def test_per_flow_parameters_override_and_are_kept_for_validation_even_if_unknown(
    tmp_path: Path,
) -> None:
    flow = hello_flow(tmp_path, parameters=(Parameter("debug", "bool", False, required=False),))
    s = settings(tmp_path, flows={"hello": {"parameters": {"debug": False, "colour": "red"}}})

    dep = one(build_deployments([flow], s, git=GIT))

    assert dep["parameters"] == {"debug": False, "colour": "red"}
    assert dep["sources"]["parameters.colour"] == "flows.hello.parameters.colour"
    assert dep["sources"]["parameters.debug"] == "flows.hello.parameters.debug"


def test_the_parameter_schema_is_the_one_computed_from_source(tmp_path: Path) -> None:
    flow = hello_flow(tmp_path)

    dep = one(build_deployments([flow], settings(tmp_path), git=GIT))

    assert dep["parameter_openapi_schema"] == parameter_schema(flow)
    assert dep["parameter_openapi_schema"]["properties"]["name"]["type"] == "string"


# -- version ------------------------------------------------------------------------------


def test_the_version_changes_only_when_the_flows_own_files_change(tmp_path: Path) -> None:
    flow = docker_flow(tmp_path)
    write(tmp_path, {"flows/other.py": "y = 1\n", "README.md": "hello\n"})
    first = flow_version(flow, tmp_path)
    assert len(first) == 12 and int(first, 16) >= 0

    write(tmp_path, {"flows/other.py": "y = 2\n", "README.md": "changed\n"})
    assert flow_version(flow, tmp_path) == first

    versions = {first}
    for rel in ("flows/boxed/report.py", "flows/boxed/Dockerfile", "flows/boxed/requirements.txt"):
        path = tmp_path / rel
        path.write_text(path.read_text() + "# changed\n")
        versions.add(flow_version(flow, tmp_path))
    assert len(versions) == 4


def test_the_version_does_not_depend_on_settings_or_git(tmp_path: Path) -> None:
    flow = hello_flow(tmp_path)
    other_git = GitInfo(sha="f" * 40, short_sha="f" * 12, branch="x", dirty=True)

    a = one(build_deployments([flow], settings(tmp_path), git=GIT))["version"]
    b = one(build_deployments([flow], settings(tmp_path, env="production"), git=other_git))[
        "version"
    ]

    assert a == b == flow_version(flow, tmp_path)


def test_an_unreadable_flow_file_is_a_discovery_error_naming_it(tmp_path: Path) -> None:
    flow = FlowMetadata(name="ghost", function="ghost", path="flows/ghost.py")

    with pytest.raises(
        DiscoveryError,
        match=r"^flows/ghost.py: cannot read it to compute the version of flow 'ghost'",
    ):
        flow_version(flow, tmp_path)


# -- schedules ----------------------------------------------------------------------------


def test_schedules_from_overrides_take_the_server_shape(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        flows={
            "hello": {
                "schedules": [
                    {"cron": "0 6 * * *", "timezone": "Europe/Berlin"},
                    {"interval": 3600, "active": False},
                    {"rrule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "UTC"},
                ]
            }
        },
    )

    dep = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))

    assert dep["schedules"] == [
        {"schedule": {"cron": "0 6 * * *", "timezone": "Europe/Berlin"}, "active": True},
        {"schedule": {"interval": 3600.0}, "active": False},
        {"schedule": {"rrule": "FREQ=WEEKLY;BYDAY=MO", "timezone": "UTC"}, "active": True},
    ]
    assert dep["sources"]["schedules"] == "flows.hello.schedules"


def test_no_schedule_override_means_an_empty_list(tmp_path: Path) -> None:
    assert (
        one(build_deployments([hello_flow(tmp_path)], settings(tmp_path), git=GIT))["schedules"]
        == []
    )


def test_malformed_schedules_pass_through_for_validation_to_report() -> None:
    assert convert_schedules("0 6 * * *") == "0 6 * * *"
    assert convert_schedules([5]) == [5]


# -- overrides ----------------------------------------------------------------------------


def test_a_disabled_flow_gets_no_deployment(tmp_path: Path) -> None:
    s = settings(tmp_path, flows={"hello": {"enabled": False}})

    assert build_deployments([hello_flow(tmp_path)], s, git=GIT).contexts == ()


def test_per_flow_types_can_keep_only_python_and_then_the_name_has_no_suffix(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, flows={"table-report": {"types": ["python"]}})

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert [(c.type, c.name) for c in result.contexts] == [("python", "table-report")]


def test_asking_for_docker_without_a_dockerfile_warns_and_skips_it(tmp_path: Path) -> None:
    s = settings(tmp_path, flows={"hello": {"types": ["docker"]}})

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    assert result.contexts == ()
    assert result.warnings == (
        "flow 'hello': settings key 'flows.hello.types' asks for docker, but no Dockerfile "
        "was found beside flows/hello.py and 'flows.hello.image' names no image; docker skipped",
    )


def test_environment_deployment_types_limit_every_flow(tmp_path: Path) -> None:
    s = settings(tmp_path, deployment_types=["python"])

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert [(c.type, c.name) for c in result.contexts] == [("python", "table-report")]


def test_work_pool_override_by_name_or_per_type_with_queue(tmp_path: Path) -> None:
    s = settings(tmp_path, flows={"hello": {"work_pool": "special-pool"}})
    dep = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))
    assert (dep["work_pool_name"], dep["work_queue_name"]) == ("special-pool", "default")
    assert dep["sources"]["work_pool_name"] == "flows.hello.work_pool"

    s = settings(
        tmp_path,
        flows={"table-report": {"work_pool": {"docker": "gpu-pool", "queue": "heavy"}}},
    )
    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)
    python, docker = (c.deployment for c in result.contexts)
    assert (python["work_pool_name"], python["work_queue_name"]) == ("staging-agent-pool", "heavy")
    assert (docker["work_pool_name"], docker["work_queue_name"]) == ("gpu-pool", "heavy")


def test_concurrency_paused_and_names_overrides(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        flows={
            "table-report": {
                "concurrency_limit": 1,
                "paused": True,
                "names": {"docker": "report-in-a-box"},
                "name": "report",
            }
        },
    )

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert [c.name for c in result.contexts] == ["report-python", "report-in-a-box"]
    for context in result.contexts:
        assert context.deployment["concurrency_limit"] == 1
        assert context.deployment["paused"] is True


def test_the_environment_concurrency_limit_applies_to_both_types(tmp_path: Path) -> None:
    result = build_deployments([docker_flow(tmp_path)], settings(tmp_path), git=GIT)

    assert [c.deployment["concurrency_limit"] for c in result.contexts] == [5, 5]


def test_two_types_with_one_name_are_a_settings_error(tmp_path: Path) -> None:
    s = settings(tmp_path, flows={"table-report": {"names": {"python": "r", "docker": "r"}}})

    with pytest.raises(
        SettingsError,
        match=r"key 'flows.table-report.names': the types of flow 'table-report' share one name",
    ):
        build_deployments([docker_flow(tmp_path)], s, git=GIT)


def test_overrides_for_a_flow_that_does_not_exist_are_a_warning(tmp_path: Path) -> None:
    s = settings(tmp_path, flows={"helo": {"paused": True}})

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    assert [w for w in result.warnings if "flows.helo" in w] == [
        "settings key 'flows.helo' names no discovered flow; its overrides are unused"
    ]


def test_an_invalid_flow_gets_no_deployment_and_a_warning(tmp_path: Path) -> None:
    broken = hello_flow(tmp_path, problems=("flow name 'hello' is used twice",))

    result = build_deployments([broken], settings(tmp_path), git=GIT)

    assert result.contexts == ()
    assert result.warnings == (
        "flow 'hello' (flows/hello.py) has problems and gets no deployment: "
        "flow name 'hello' is used twice",
    )


# -- pull steps ---------------------------------------------------------------------------


def test_local_pull_installs_the_flows_requirements_from_the_project_root(tmp_path: Path) -> None:
    root = str(tmp_path.resolve())

    dep = one(build_deployments([docker_flow(tmp_path)], settings(tmp_path), git=GIT))

    assert dep["pull_steps"] == [
        {STEP + "set_working_directory": {"directory": root}},
        {
            STEP + "pip_install_requirements": {
                "directory": root,
                "requirements_file": "flows/boxed/requirements.txt",
            }
        },
    ]


def test_git_pull_clones_with_the_token_and_installs_inside_the_clone(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        pull={
            "strategy": "git",
            "repository": "https://git.example.com/org/repo.git",
            "branch": "release",
        },
        git_access_token="{{ prefect.blocks.secret.git-token }}",
    )

    dep = one(build_deployments([docker_flow(tmp_path)], s, git=GIT))

    assert dep["pull_steps"] == [
        {
            STEP + "git_clone": {
                "id": CLONE_STEP_ID,
                "repository": "https://git.example.com/org/repo.git",
                "branch": "release",
                "access_token": "{{ prefect.blocks.secret.git-token }}",
            }
        },
        {
            STEP + "pip_install_requirements": {
                "directory": "{{ clone-step.directory }}",
                "requirements_file": "flows/boxed/requirements.txt",
            }
        },
    ]


def test_git_pull_without_a_token_leaves_access_token_out(tmp_path: Path) -> None:
    s = settings(tmp_path, pull={"strategy": "git", "repository": "https://git.example.com/r.git"})

    [clone] = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))["pull_steps"]

    assert clone == {
        STEP + "git_clone": {
            "id": CLONE_STEP_ID,
            "repository": "https://git.example.com/r.git",
            "branch": "main",
        }
    }


def test_pip_index_and_extra_packages_reach_the_python_run(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        pull={
            "pip_index_url": "https://pypi.example.com/simple",
            "extra_packages": ["httpx>=0.27", "rich"],
        },
    )

    dep = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))

    assert dep["job_variables"]["env"]["PIP_INDEX_URL"] == "https://pypi.example.com/simple"
    assert dep["pull_steps"][-1] == {
        STEP + "run_shell_script": {
            "script": "python -m pip install 'httpx>=0.27' rich",
            "directory": str(tmp_path.resolve()),
        }
    }


# -- docker -------------------------------------------------------------------------------


def test_docker_job_variables_image_limits_and_in_image_working_dir(tmp_path: Path) -> None:
    dep = one(build_deployments([docker_flow(tmp_path)], settings(tmp_path), git=GIT), "docker")

    jv = dep["job_variables"]
    tag = context_digest(docker_flow(tmp_path), tmp_path)
    assert jv["image"] == f"registry.staging.internal/deploy-lib/table-report:{tag}"
    assert jv["image_pull_policy"] == "IfNotPresent"
    assert (jv["mem_limit"], jv["memswap_limit"]) == ("2g", "4g")
    assert jv["env"]["DEPLOY_ENV_NAME"] == "staging"
    # The docker pool template has no working_dir: a pull step sets it inside the image.
    assert "working_dir" not in jv
    assert dep["pull_steps"] == [
        {STEP + "set_working_directory": {"directory": "/opt/prefect/app"}}
    ]
    assert dep["image"] == jv["image"]


def test_the_docker_pool_template_accepts_every_docker_job_variable(tmp_path: Path) -> None:
    # The job variables Prefect's bundled docker worker template defines.
    accepted = {
        "command", "env", "labels", "name", "stream_output", "image", "image_pull_policy",
        "registry_credentials", "networks", "network_mode", "auto_remove", "volumes",
        "container_wait_timeout", "mem_limit", "memswap_limit", "privileged",
    }  # fmt: skip

    dep = one(build_deployments([docker_flow(tmp_path)], settings(tmp_path), git=GIT), "docker")

    assert set(dep["job_variables"]) <= accepted


def test_the_image_tag_is_the_build_contexts_hash_and_a_fixed_tag_wins(tmp_path: Path) -> None:
    flow = docker_flow(tmp_path)
    dirty = GitInfo(sha=GIT.sha, short_sha=GIT.short_sha, branch="main", dirty=True)
    tag = context_digest(flow, tmp_path)
    assert len(tag) == 12
    for git in (GIT, dirty, GitInfo()):  # a commit, an uncommitted edit, no git at all
        result = build_deployments([flow], settings(tmp_path), git=git)
        assert one(result, "docker")["job_variables"]["image"].endswith(f"/table-report:{tag}")
        assert not [w for w in result.warnings if "latest" in w]
    (tmp_path / "flows" / "hello.py").write_text("# an edit outside the context\n")
    assert context_digest(flow, tmp_path) == tag
    (tmp_path / "flows" / "boxed" / "requirements.txt").write_text("tabulate==0.9.1\n")
    assert context_digest(flow, tmp_path) != tag

    fixed = settings(tmp_path, docker={"tag": "v1.2"})
    assert image_for(flow, fixed) == "registry.staging.internal/deploy-lib/table-report:v1.2"


def test_extra_pip_packages_for_docker_go_into_EXTRA_PIP_PACKAGES(tmp_path: Path) -> None:
    s = settings(tmp_path, docker={"extra_pip_packages": ["pandas==2.2.2", "pyarrow"]})

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert one(result, "docker")["job_variables"]["env"]["EXTRA_PIP_PACKAGES"] == (
        "pandas==2.2.2 pyarrow"
    )
    assert "EXTRA_PIP_PACKAGES" not in one(result, "python")["job_variables"]["env"]


def test_an_empty_registry_gives_a_bare_image_name(tmp_path: Path) -> None:
    assert image_reference("Daily ETL", settings(tmp_path, docker={"registry": ""}), "abc") == (
        "daily-etl:abc"
    )


@pytest.mark.parametrize(
    ("name", "slug"),
    [("daily-etl", "daily-etl"), ("Daily ETL", "daily-etl"), ("a__b..c", "a-b-c"), ("***", "flow")],
)
def test_flow_slugs_are_valid_docker_repository_components(name: str, slug: str) -> None:
    assert flow_slug(name) == slug


def test_contexts_are_sorted_by_flow_name_then_type(tmp_path: Path) -> None:
    flows = [docker_flow(tmp_path), hello_flow(tmp_path)]

    result = build_deployments(flows, settings(tmp_path), git=GIT)

    assert [(c.flow.name, c.type) for c in result.contexts] == [
        ("hello", "python"),
        ("table-report", "python"),
        ("table-report", "docker"),
    ]
    assert all(isinstance(c, BuildContext) for c in result.contexts)


# -- one flow name in several files ---------------------------------------------------------


def _report_in(root: Path, path: str, function: str) -> FlowMetadata:
    write(root, {path: f"from prefect import flow\n\n@flow(name='report')\ndef {function}(): ...\n"})
    return FlowMetadata(name="report", function=function, path=path)


def test_one_flow_name_in_two_files_gets_one_deployment_per_file_named_after_it(
    tmp_path: Path,
) -> None:
    flows = [
        _report_in(tmp_path, "flows/sales/report.py", "sales"),
        _report_in(tmp_path, "flows/stock/report.py", "stock"),
    ]
    result = build_deployments(flows, settings(tmp_path, deployment_types=["python"]), git=GIT)

    names = sorted((c.flow.entrypoint, c.name) for c in result.contexts)
    assert names == [
        ("flows/sales/report.py:sales", "sales-report"),
        ("flows/stock/report.py:stock", "stock-report"),
    ]
    (note,) = [w for w in result.warnings if "defined in 2 places" in w]
    assert "report/sales-report (flows/sales/report.py:sales)" in note
    assert "flows.\"flows/sales/report.py:sales\".name" in note


def test_two_flows_of_one_name_in_one_file_are_told_apart_by_function(tmp_path: Path) -> None:
    write(tmp_path, {"flows/both.py": "x = 1\n"})
    flows = [
        FlowMetadata(name="main", function="first", path="flows/both.py"),
        FlowMetadata(name="main", function="second", path="flows/both.py"),
    ]
    result = build_deployments(flows, settings(tmp_path, deployment_types=["python"]), git=GIT)
    assert sorted(c.name for c in result.contexts) == ["both-first", "both-second"]


def test_a_per_flow_table_keyed_by_entrypoint_names_and_configures_one_file(
    tmp_path: Path,
) -> None:
    flows = [
        _report_in(tmp_path, "flows/sales/report.py", "sales"),
        _report_in(tmp_path, "flows/stock/report.py", "stock"),
    ]
    overrides = {
        "report": {"tags": ["shared"]},
        "flows/sales/report.py:sales": {"name": "sales", "paused": True},
    }
    result = build_deployments(
        flows, settings(tmp_path, deployment_types=["python"], flows=overrides), git=GIT
    )
    by_entrypoint = {c.flow.entrypoint: c.deployment for c in result.contexts}
    sales, stock = by_entrypoint["flows/sales/report.py:sales"], by_entrypoint["flows/stock/report.py:stock"]
    assert (sales["name"], sales["paused"]) == ("sales", True)
    assert (stock["name"], stock["paused"]) == ("stock-report", False)
    assert "shared" in sales["tags"] and "shared" in stock["tags"]
    assert not [w for w in result.warnings if "names no discovered flow" in w]


# -- required parameters ----------------------------------------------------------------------


def test_a_required_parameter_without_a_value_is_a_note_and_a_warning_when_scheduled(
    tmp_path: Path,
) -> None:
    needs = hello_flow(tmp_path, parameters=(Parameter("day", "str"),))
    result = build_deployments([needs], settings(tmp_path, deployment_types=["python"]), git=GIT)
    assert result.notes[-1] == (
        "flow 'hello' (flows/hello.py:hello): every run must pass day (required, and no "
        "value in the settings)"
    )
    assert not [w for w in result.warnings if "day" in w]

    scheduled = settings(
        tmp_path,
        deployment_types=["python"],
        flows={"hello": {"schedules": [{"cron": "0 6 * * *"}]}},
    )
    result = build_deployments([needs], scheduled, git=GIT)
    assert [w for w in result.warnings if "day" in w] == [
        "flow 'hello' (flows/hello.py:hello) is scheduled, but has no value for required "
        "parameter(s) day: each scheduled run would fail; set flows.hello.parameters"
    ]

    given = settings(
        tmp_path, deployment_types=["python"], flows={"hello": {"parameters": {"day": "mon"}}}
    )
    result = build_deployments([needs], given, git=GIT)
    assert not [line for line in (*result.notes, *result.warnings) if "day" in line]


def test_two_files_of_one_flow_name_build_images_of_their_own(tmp_path: Path) -> None:
    for folder in ("sales", "stock"):
        write(tmp_path, {f"flows/{folder}/Dockerfile": "FROM python:3.11\n"})
    flows = [
        replace(_report_in(tmp_path, f"flows/{folder}/report.py", folder), dockerfile=f"flows/{folder}/Dockerfile")
        for folder in ("sales", "stock")
    ]
    result = build_deployments(flows, settings(tmp_path, deployment_types=["docker"]), git=GIT)
    images = sorted(c.deployment["image"] for c in result.contexts)
    assert images == [
        f"registry.staging.internal/deploy-lib/report-sales-report:{context_digest(flows[0], tmp_path)}",
        f"registry.staging.internal/deploy-lib/report-stock-report:{context_digest(flows[1], tmp_path)}",
    ]


# -- every pool type, resources, concurrency options, schedules ----------------------------


K8S = {
    "deployment_types": ["python", "kubernetes", "ecs", "cloud-run"],
    "work_pool": {"kubernetes": "k8s-pool", "ecs": "ecs-pool", "cloud-run": "run-pool"},
}


def test_a_flow_with_a_dockerfile_gets_a_deployment_per_container_type_running_its_image(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, **K8S)

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    assert sorted(c.type for c in result.contexts) == ["cloud-run", "ecs", "kubernetes", "python"]
    k8s = one(result, "kubernetes")
    assert k8s["name"] == "table-report-kubernetes"
    assert k8s["work_pool_name"] == "k8s-pool"
    assert k8s["image"] == one(result, "ecs")["image"]
    assert k8s["job_variables"]["image"].startswith("registry.staging.internal/deploy-lib/table-report:")
    assert k8s["job_variables"]["image_pull_policy"] == "IfNotPresent"
    assert "image_pull_policy" not in one(result, "ecs")["job_variables"]  # ECS has none
    assert k8s["pull_steps"] == [{STEP + "set_working_directory": {"directory": "/opt/prefect/app"}}]
    assert "runtime:kubernetes" in k8s["tags"]


def test_a_flow_without_a_dockerfile_runs_a_container_type_only_with_an_image_set(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, **K8S, flows={"hello": {"image": "ghcr.io/acme/hello:1.0"}})

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    assert one(result, "kubernetes")["job_variables"]["image"] == "ghcr.io/acme/hello:1.0"
    assert one(result, "kubernetes")["sources"]["job_variables.image"] == "flows.hello.image"
    bare = build_deployments([hello_flow(tmp_path)], settings(tmp_path, **K8S), git=GIT)
    assert [c.type for c in bare.contexts] == ["python"]


def test_resources_map_onto_each_types_variables_with_type_and_flow_overrides(
    tmp_path: Path,
) -> None:
    s = settings(
        tmp_path,
        **K8S,
        resources={"cpu": 1, "memory": "2g", "kubernetes": {"cpu": "500m"}},
        flows={"table-report": {"resources": {"memory": "4Gi"}}},
    )

    result = build_deployments([docker_flow(tmp_path)], s, git=GIT)

    k8s = one(result, "kubernetes")
    assert {k: k8s["job_variables"][k] for k in ("cpu_request", "cpu_limit", "memory_limit")} == {
        "cpu_request": "500m", "cpu_limit": "500m", "memory_limit": "4Gi",
    }
    assert k8s["sources"]["job_variables.cpu_limit"] == "resources.kubernetes.cpu"
    assert k8s["sources"]["job_variables.memory_limit"] == "flows.table-report.resources.memory"
    assert (one(result, "ecs")["job_variables"]["cpu"], one(result, "ecs")["job_variables"]["memory"]) == (1024, 4096)
    assert one(result, "cloud-run")["job_variables"]["memory"] == "4Gi"


def test_a_limit_a_pool_type_cannot_express_is_one_warning_naming_it(tmp_path: Path) -> None:
    s = settings(tmp_path, **K8S, resources={"concurrency_limit": 2, "memory_swap": "4g"})

    result = build_deployments([docker_flow(tmp_path), hello_flow(tmp_path)], s, git=GIT)

    swap = [w for w in result.warnings if "memory_swap" in w]
    assert swap == [
        "resources.memory_swap = '4g' is not applied to 1 cloud-run deployment(s): the job "
        "template of cloud-run work pools has no variable for memory swap",
        "resources.memory_swap = '4g' is not applied to 1 ecs deployment(s): the job "
        "template of ecs work pools has no variable for memory swap",
        "resources.memory_swap = '4g' is not applied to 1 kubernetes deployment(s): the job "
        "template of kubernetes work pools has no variable for memory swap",
        "resources.memory_swap = '4g' is not applied to 2 python deployment(s): the job "
        "template of process work pools has no variable for memory swap",
    ]


def test_a_type_prefect_does_not_ship_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    s = settings(tmp_path, deployment_types=["python", "kubernets"], work_pool={"kubernets": "p"})

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    assert any(
        w.startswith("deployment type 'kubernets' is no work pool type Prefect ships (did you "
                     "mean 'kubernetes'?") for w in result.warnings
    ), result.warnings


def test_collision_strategy_is_sent_as_concurrency_options_flow_over_environment(
    tmp_path: Path,
) -> None:
    s = settings(
        tmp_path,
        resources={"concurrency_limit": 3, "collision_strategy": "ENQUEUE"},
        flows={"hello": {"collision_strategy": "CANCEL_NEW", "concurrency_limit": 1}},
    )

    hello = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))
    report = one(build_deployments([docker_flow(tmp_path)], s, git=GIT))

    assert (hello["concurrency_limit"], hello["concurrency_options"]) == (
        1, {"collision_strategy": "CANCEL_NEW"},
    )
    assert hello["sources"]["concurrency_options.collision_strategy"] == "flows.hello.collision_strategy"
    assert (report["concurrency_limit"], report["concurrency_options"]) == (
        3, {"collision_strategy": "ENQUEUE"},
    )
    plain = one(build_deployments([hello_flow(tmp_path)], settings(tmp_path), git=GIT))
    assert plain["concurrency_options"] is None


def test_a_schedule_keeps_its_own_parameters_and_slug(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        flows={"hello": {"schedules": [
            {"cron": "0 6 * * *", "slug": "morning", "parameters": {"name": "early"}},
            {"interval": 3600, "active": False},
        ]}},
    )

    hello = one(build_deployments([hello_flow(tmp_path)], s, git=GIT))

    assert hello["schedules"] == [
        {"schedule": {"cron": "0 6 * * *"}, "active": True, "parameters": {"name": "early"},
         "slug": "morning"},
        {"schedule": {"interval": 3600.0}, "active": False},
    ]


def test_a_secret_env_var_becomes_a_reference_to_its_secret_block(tmp_path: Path) -> None:
    base = settings(tmp_path, project="shop", env_vars={"PYTHONPATH": ".", "DB_PASSWORD": "hunter2-x"})
    s = Settings(
        env="staging", root=tmp_path, data=base.data,
        secret_keys=frozenset({"env_vars.DB_PASSWORD"}), secret_values=frozenset({"hunter2-x"}),
    )

    result = build_deployments([hello_flow(tmp_path)], s, git=GIT)

    hello = one(result)
    block = "deploy-lib-shop-staging-db-password"
    assert hello["job_variables"]["env"]["DB_PASSWORD"] == "{{ prefect.blocks.secret." + block + " }}"
    assert hello["job_variables"]["env"]["PYTHONPATH"] == "."
    assert hello["secrets"] == {"DB_PASSWORD": (block, "hunter2-x")}
    assert not any("plain text" in w for w in result.warnings)


def test_with_secret_blocks_off_a_secret_stays_in_plain_text_and_the_run_says_so(
    tmp_path: Path,
) -> None:
    base = settings(tmp_path, secret_blocks=False, env_vars={"DB_PASSWORD": "hunter2-x"})
    s = Settings(env="staging", root=tmp_path, data=base.data,
                 secret_keys=frozenset({"env_vars.DB_PASSWORD"}))

    result = build_deployments([hello_flow(tmp_path), docker_flow(tmp_path)], s, git=GIT)

    hello = next(c.deployment for c in result.contexts if c.flow.name == "hello")
    assert hello["job_variables"]["env"]["DB_PASSWORD"] == "hunter2-x"
    assert hello["secrets"] == {}
    (warning,) = [w for w in result.warnings if "plain text" in w]
    assert warning.startswith("secret_blocks is false: secret environment variable(s) "
                              "DB_PASSWORD are stored in plain text in the job variables of 3")
    assert "hunter2" not in warning
