"""load_settings and the config task, against real files written in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from deploy_lib.errors import EXIT_VALIDATION, SettingsError, UnknownEnvironmentError
from deploy_lib.models import MASK, Settings
from deploy_lib.report import format_config
from deploy_lib.settings import environments, load_settings

REPO = Path(__file__).resolve().parent.parent

# A complete, valid settings.toml; tests append sections to it.
BASE = """\
[default]
flow_roots = ["flows"]
exclude = []
entrypoint_style = "path"
deployment_types = ["python", "docker"]
api_url = ""
apply_concurrency = 4
tags = ["team:data"]

[default.work_pool]
python = "default-agent-pool"
docker = "default-docker-pool"
queue = "default"

[default.parameters]
debug = true

[default.env_vars]
PYTHONPATH = "."
PREFECT_LOGGING_LEVEL = "INFO"

[default.retries]
retries = 0
retry_delay_seconds = 10

[default.health]
heartbeat_frequency = 30

[default.resources]
concurrency_limit = 2

[default.pull]
strategy = "local"

[development]

[staging]

[production]
"""


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root``; returns ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if name == ".secrets.toml":
            path.chmod(0o600)
    return root


def project(tmp_path: Path, extra: str = "", *, staging: str = "", **files: str) -> Path:
    """A project root with BASE + ``extra`` as settings.toml (``staging`` goes into its
    [staging] table), plus ``files``: ``secrets=`` is .secrets.toml, ``env=`` is .env,
    ``env_staging=`` is .env.staging."""
    names = {"secrets": ".secrets.toml", "env": ".env"}
    tree = {"settings.toml": BASE.replace("[staging]\n", f"[staging]\n{staging}") + extra}
    for key, text in files.items():
        tree[names.get(key, "." + key.replace("_", "."))] = text
    return write_tree(tmp_path / "project", tree)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DEPLOY_* or *_FOR_DYNACONF variable of the outer shell reaches a test."""
    for name in list(os.environ):
        if name.startswith("DEPLOY_") or name.endswith("_FOR_DYNACONF"):
            monkeypatch.delenv(name)


def real_project(tmp_path: Path) -> Path:
    """A root holding a copy of the repository's own settings.toml and nothing else."""
    root = tmp_path / "real"
    root.mkdir()
    shutil.copy(REPO / "settings.toml", root / "settings.toml")
    return root


# -- the seed requirements, on the repository's settings.toml ----------------------------


@pytest.mark.parametrize(
    ("env", "python_pool", "docker_pool", "parameters"),
    [
        (
            "development",
            "default-agent-pool",
            "default-docker-pool",
            {"cleanup": False, "use_distributed": False, "debug": True},
        ),
        (
            "staging",
            "staging-agent-pool",
            "staging-docker-pool",
            {"cleanup": True, "use_distributed": False, "debug": True},
        ),
        (
            "production",
            "prod-agent-pool",
            "prod-docker-pool",
            {"cleanup": True, "use_distributed": True, "debug": False},
        ),
    ],
)
def test_requirement_6_1_environment_specific_configuration(
    tmp_path: Path, env: str, python_pool: str, docker_pool: str, parameters: dict[str, bool]
) -> None:
    settings = load_settings(env, real_project(tmp_path))
    assert settings.env == env
    assert settings.work_pool("python") == python_pool
    assert settings.work_pool("docker") == docker_pool
    assert settings.parameters == parameters
    assert settings.sources["work_pool.python"] == f"environment [{env}]"
    assert settings.sources["parameters.cleanup"] == f"environment [{env}]"


def test_requirement_6_2_environment_appropriate_settings(tmp_path: Path) -> None:
    root = real_project(tmp_path)
    loaded = {env: load_settings(env, root) for env in ("development", "staging", "production")}

    def profile(s: Settings) -> tuple[Any, ...]:
        return (
            s.get("resources.concurrency_limit"),
            s.get("resources.docker.memory"),
            s.get("retries.retries"),
            s.get("retries.retry_delay_seconds"),
            s.env_vars["PREFECT_LOGGING_LEVEL"],
            s.api_url,
        )

    # every environment has its own resource limits, retry policy, log level and API
    assert len({profile(s) for s in loaded.values()}) == 3
    prod = loaded["production"]
    assert profile(prod) == (10, "4g", 3, 60, "WARNING", "http://prefect-prod.internal:4200/api")
    assert prod.get("health.heartbeat_frequency") == 60
    assert prod.get("docker.image_pull_policy") == "Always"
    assert loaded["development"].api_url == ""  # the embedded local server
    for env, s in loaded.items():
        assert s.env == env  # the builder tags with env:<name>
        assert s.get("health.heartbeat_frequency") >= 30
        assert s.env_vars["PYTHONPATH"] == "."  # from [default], kept by every environment


# -- choosing the environment ------------------------------------------------------------


def test_environment_comes_from_argument_then_deploy_env_then_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    assert load_settings(None, root).env == "development"
    monkeypatch.setenv("DEPLOY_ENV", "staging")
    assert load_settings(None, root).env == "staging"
    assert load_settings("production", root).env == "production"


def test_deploy_env_and_deploy_debug_are_switches_not_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENV", "staging")
    monkeypatch.setenv("DEPLOY_DEBUG", "1")
    settings = load_settings(None, project(tmp_path))
    assert "env" not in settings.data and "ENV" not in settings.data
    assert "debug" not in settings.data
    assert not [source for source in settings.sources.values() if "DEPLOY_ENV" in source]


def test_unknown_environment_lists_the_valid_ones(tmp_path: Path) -> None:
    root = project(tmp_path, "\n[qa]\n")
    with pytest.raises(UnknownEnvironmentError) as caught:
        load_settings("prod", root)
    message = str(caught.value)
    assert "unknown environment 'prod'" in message
    assert "valid environments are: development, production, qa, staging" in message
    assert str(root / "settings.toml") in message
    assert caught.value.exit_code == EXIT_VALIDATION


def test_unknown_environment_from_deploy_env_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENV", "default")  # a section, but not an environment
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'default'"):
        load_settings(None, project(tmp_path))


def test_environments_lists_sections_in_file_order(tmp_path: Path) -> None:
    root = project(tmp_path, "\n[qa]\n[dynaconf_merge]\n[global]\n")
    assert environments(root) == ["development", "staging", "production", "qa"]


# -- merging: tables merge, lists replace ------------------------------------------------


def test_environment_table_merges_into_default_table(tmp_path: Path) -> None:
    root = project(tmp_path, '\n[staging.env_vars]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n')
    settings = load_settings("staging", root)
    assert settings.env_vars == {"PYTHONPATH": ".", "PREFECT_LOGGING_LEVEL": "DEBUG"}
    assert settings.sources["env_vars.PYTHONPATH"] == "default"
    assert settings.sources["env_vars.PREFECT_LOGGING_LEVEL"] == "environment [staging]"


def test_nested_env_var_merges_into_default_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", "other-pool")
    settings = load_settings("staging", project(tmp_path))
    assert settings.get("work_pool") == {
        "python": "other-pool",
        "docker": "default-docker-pool",
        "queue": "default",
    }
    assert settings.sources["work_pool.python"] == "env var DEPLOY_WORK_POOL__PYTHON"
    assert settings.sources["work_pool.queue"] == "default"


def test_secrets_file_table_merges_into_default_and_environment_tables(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        '\n[staging.work_pool]\npython = "staging-agent-pool"\n',
        secrets='[staging.work_pool]\ndocker = "secret-docker-pool"\n',
    )
    settings = load_settings("staging", root)
    assert settings.get("work_pool") == {
        "python": "staging-agent-pool",
        "docker": "secret-docker-pool",
        "queue": "default",
    }
    assert settings.sources["work_pool.docker"] == "secrets file"


def test_lists_are_replaced_by_the_higher_layer_not_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(
        tmp_path,
        '\n[staging.flows.etl]\ntags = ["staging-only"]\n'
        '[default.flows.etl]\ntags = ["everywhere"]\nenabled = true\n'
        '[production.pull]\nextra_packages = ["b"]\n'
        '[default.docker]\nextra_pip_packages = ["a"]\n',
    )
    staging = load_settings("staging", root)
    assert staging.flow_overrides("etl") == {"tags": ["staging-only"], "enabled": True}
    assert staging.tags == ["team:data"]
    monkeypatch.setenv("DEPLOY_TAGS", '["from-variable"]')
    monkeypatch.setenv("DEPLOY_FLOW_ROOTS", '["src/flows"]')
    staging = load_settings("staging", root)
    assert staging.tags == ["from-variable"]
    assert staging.flow_roots == ["src/flows"]
    assert staging.sources["tags"] == "env var DEPLOY_TAGS"


def test_validation_sees_the_replaced_list_not_the_concatenation(tmp_path: Path) -> None:
    # [default] names a type that does not exist, [staging] replaces the list: staging is fine.
    root = project(tmp_path, staging='deployment_types = ["python"]\n')
    settings_toml = root / "settings.toml"
    settings_toml.write_text(
        settings_toml.read_text().replace('["python", "docker"]', '["k8s"]', 1)
    )
    assert load_settings("staging", root).deployment_types == ["python"]
    with pytest.raises(SettingsError, match=r"work_pool.k8s: missing; .*deployment type k8s is in use"):
        load_settings("production", root)


# -- bad files ---------------------------------------------------------------------------


def test_missing_settings_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", tmp_path)
    assert str(tmp_path / "settings.toml") in str(caught.value)
    assert "file not found" in str(caught.value)


def test_malformed_settings_toml_names_file_and_line(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"settings.toml": "[default]\napply_concurrency = = 4\n"})
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    message = str(caught.value)
    assert message.startswith(f"{root / 'settings.toml'}:")
    assert "invalid TOML at line 2" in message
    assert caught.value.path == f"{root / 'settings.toml'}:2"


def test_malformed_secrets_toml_names_the_secrets_file_and_line(tmp_path: Path) -> None:
    root = project(tmp_path, secrets='[default]\napi_key = "pnu_unterminated\n')
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    message = str(caught.value)
    assert str(root / ".secrets.toml") in message
    assert "invalid TOML at line 2" in message
    assert "pnu_unterminated" not in message


def test_non_utf8_settings_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_bytes(b'[default]\nname = "caf\xe9"\n')
    with pytest.raises(SettingsError, match=r"settings\.toml: is not UTF-8"):
        load_settings("staging", tmp_path)


def test_a_key_outside_any_section_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"settings.toml": "apply_concurrency = 2\n" + BASE})
    with pytest.raises(SettingsError, match="key 'apply_concurrency': is outside any"):
        load_settings("staging", root)


def test_local_override_files_are_refused(tmp_path: Path) -> None:
    root = project(tmp_path)
    write_tree(root, {"settings.local.toml": "[default]\napply_concurrency = 9\n"})
    with pytest.raises(SettingsError, match=r"settings\.local\.toml: is not supported"):
        load_settings("staging", root)


# -- nothing outside root and DEPLOY_* is read -------------------------------------------


def test_files_in_the_current_directory_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    elsewhere = write_tree(
        tmp_path / "cwd",
        {
            "settings.toml": '[default]\napply_concurrency = 99\n[staging]\ntags = ["cwd"]\n',
            ".secrets.toml": '[default]\napi_key = "cwd-key"\n',
            ".env": "DEPLOY_APPLY_CONCURRENCY=98\nFROM_CWD=1\n",
        },
    )
    monkeypatch.chdir(elsewhere)
    settings = load_settings("staging", root)
    assert settings.apply_concurrency == 4
    assert settings.tags == ["team:data"]
    assert settings.api_key == ""
    assert "FROM_CWD" not in settings.env_vars


def test_dynaconf_configuration_variables_are_refused_not_obeyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = write_tree(tmp_path / "extra", {"extra.toml": "[default]\napply_concurrency = 7\n"})
    monkeypatch.setenv("SECRETS_FOR_DYNACONF", str(extra / "extra.toml"))
    monkeypatch.setenv("MERGE_ENABLED_FOR_DYNACONF", "false")
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", project(tmp_path))
    assert "MERGE_ENABLED_FOR_DYNACONF, SECRETS_FOR_DYNACONF" in str(caught.value)
    assert "unset them" in str(caught.value)


# -- validation: every problem, each with its key ----------------------------------------

INVALID = [
    pytest.param(
        {"DEPLOY_WORK_POOL__PYTHON": '""'},
        "work_pool.python: must be a work pool name (deployment type python is in use), got ''"
        " (from env var DEPLOY_WORK_POOL__PYTHON)",
        id="an empty python work pool",
    ),
    pytest.param(
        {"DEPLOY_APPLY_CONCURRENCY": "0"},
        "apply_concurrency: must be an integer of at least 1, got 0",
        id="apply concurrency below one",
    ),
    pytest.param(
        {"DEPLOY_APPLY_CONCURRENCY": "true"},
        "apply_concurrency: must be an integer of at least 1, got True",
        id="apply concurrency given as a boolean",
    ),
    pytest.param(
        {"DEPLOY_HEALTH__HEARTBEAT_FREQUENCY": "29"},
        "health.heartbeat_frequency: must be an integer of at least 30 (seconds), got 29",
        id="a heartbeat more often than every 30 seconds",
    ),
    pytest.param(
        {"DEPLOY_RETRIES__RETRIES": "-1"},
        "retries.retries: must be an integer of at least 0, got -1",
        id="negative retries",
    ),
    pytest.param(
        {"DEPLOY_RETRIES__RETRY_DELAY_SECONDS": '"soon"'},
        "retries.retry_delay_seconds: must be an integer of at least 0, got 'soon'",
        id="a retry delay that is not a number",
    ),
    pytest.param(
        {"DEPLOY_ENTRYPOINT_STYLE": "file"},
        'entrypoint_style: must be "path" or "module", got \'file\'',
        id="an unknown entrypoint style",
    ),
    pytest.param(
        {"DEPLOY_PULL__STRATEGY": "svn"},
        'pull.strategy: must be "local" or "git", got \'svn\'',
        id="an unknown pull strategy",
    ),
    pytest.param(
        {"DEPLOY_PULL__STRATEGY": "git"},
        'pull.repository: missing; it must be a repository URL when pull.strategy is "git"',
        id="git pull without a repository",
    ),
    pytest.param(
        {"DEPLOY_DEPLOYMENT_TYPES": '["python", "k8s"]'},
        "work_pool.k8s: missing; it must be a work pool name (deployment type k8s is in use)",
        id="a deployment type with no work pool",
    ),
    pytest.param(
        {"DEPLOY_DEPLOYMENT_TYPES": '["python", "K 8s"]'},
        "deployment_types: must be a non-empty list of deployment types",
        id="a deployment type that is no type's spelling",
    ),
    pytest.param(
        {"DEPLOY_RESOURCES__CPU": '"lots"'},
        "resources.cpu: must be a number of CPUs such as 0.5, 2 or \"500m\", got 'lots'",
        id="a cpu limit that is not a number",
    ),
    pytest.param(
        {"DEPLOY_RESOURCES__DOCKER__MEMORY": '"2 gigs"'},
        "resources.docker.memory: must be a size such as \"512m\", \"2g\" or \"1Gi\", got '2 gigs'",
        id="a memory limit of one type that is not a size",
    ),
    pytest.param(
        {"DEPLOY_RESOURCES__MEMROY": '"2g"'},
        "resources.memroy: must be one of concurrency_limit, collision_strategy, cpu, memory,"
        " memory_swap, mem_limit, memswap_limit (did you mean 'memory'?)",
        id="a misspelt resource",
    ),
    pytest.param(
        {"DEPLOY_RESOURCES__COLLISION_STRATEGY": '"DROP"'},
        'resources.collision_strategy: must be "ENQUEUE" or "CANCEL_NEW", got \'DROP\'',
        id="an unknown collision strategy",
    ),
    pytest.param(
        {"DEPLOY_FLOWS__etl__COLLISION_STRATEGY": '"enqueue"'},
        'flows.etl.collision_strategy: must be "ENQUEUE" or "CANCEL_NEW", got \'enqueue\'',
        id="a per-flow collision strategy in the wrong case",
    ),
    pytest.param(
        {"DEPLOY_TAGS": "[1, 2]"},
        "tags: must be a list of strings, got [1, 2]",
        id="tags that are not strings",
    ),
    pytest.param(
        {"DEPLOY_TAGS": "prod"},
        "tags: must be a list of strings, got 'prod'",
        id="tags given as one string",
    ),
    pytest.param(
        {"DEPLOY_PARAMETERS": "5"},
        "parameters: must be a table of flow parameters, got 5",
        id="parameters that are not a table",
    ),
    pytest.param(
        {"DEPLOY_ENV_VARS": '"PATH=/bin"'},
        "env_vars: must be a table of environment variable names to values, got 'PATH=/bin'",
        id="env vars that are not a table",
    ),
    pytest.param(
        {"DEPLOY_ENV_VARS__NESTED": "{a = 1}"},
        "env_vars.NESTED: must be a string, number or boolean, got {'a': 1}",
        id="an env var holding a table",
    ),
    pytest.param(
        {"DEPLOY_RESOURCES__CONCURRENCY_LIMIT": "0"},
        "resources.concurrency_limit: must be an integer of at least 1, got 0",
        id="a concurrency limit of zero",
    ),
    pytest.param(
        {"DEPLOY_API_URL": "ftp://host"},
        'api_url: must be a string: "" (the embedded server) or an http(s):// URL,'
        " got 'ftp://host'",
        id="an API URL that is not http",
    ),
    pytest.param(
        {"DEPLOY_FLOWS__etl__TYPES": '["lambda"]'},
        "work_pool.lambda: missing; it must be a work pool name (deployment type lambda is in use)",
        id="a per-flow override with a type that has no work pool",
    ),
    pytest.param(
        {"DEPLOY_ENTRYPOINT_STYLE": "dotted"},
        'entrypoint_style: must be "path" or "module", got \'dotted\'',
        id="an unknown entrypoint style",
    ),
    pytest.param(
        {"DEPLOY_PULL__STRATEGY": "s3"},
        'pull.strategy: must be "local" or "git", got \'s3\'',
        id="an unknown pull strategy",
    ),
    pytest.param(
        {"DEPLOY_PULL__STRATEGY": "git"},
        'pull.repository: missing; it must be a repository URL when pull.strategy is "git"',
        id="a git pull without a repository",
    ),
    pytest.param(
        {"DEPLOY_NAMING__PYTHON": "{flow}-{colour}"},
        "naming.python: must be a format such as",
        id="a naming format with an unknown field",
    ),
    pytest.param(
        {"DEPLOY_FLOWS__hello__SCHEDULE": "x"},
        "flows.hello.schedule: unknown per-flow setting; known: enabled, types, name, names",
        id="an unknown per-flow setting",
    ),
    pytest.param(
        {"DEPLOY_FLOWS__hello__WORK_POOL": "[1]"},
        "flows.hello.work_pool: must be a pool name or a table of deployment types (and queue) to pools, got [1]",
        id="a per-flow work pool that is neither a name nor a table",
    ),
    pytest.param(
        {"DEPLOY_WORK_POOL": '"one-pool"'},
        "work_pool: must be a table, got 'one-pool' (from env var DEPLOY_WORK_POOL)",
        id="a work pool table replaced by a string",
    ),
]


@pytest.mark.parametrize(("variables", "expected"), INVALID)
def test_each_invalid_setting_is_reported_with_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", project(tmp_path))
    assert f"  - {expected}" in str(caught.value)
    assert "1 problem(s) in the settings of environment 'staging'" in str(caught.value)


def test_a_secret_with_the_wrong_type_is_reported_without_its_value(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, secrets="[default]\napi_key = 123456789\n")
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    assert "  - api_key: must be a string (from .secrets.toml)" in str(caught.value)
    assert "123456789" not in str(caught.value)


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(
        tmp_path,
        '\n[staging.health]\nheartbeat_frequency = 10\n[staging.retries]\nretries = "three"\n',
    )
    monkeypatch.setenv("DEPLOY_APPLY_CONCURRENCY", "0")
    monkeypatch.setenv("DEPLOY_TAGS", "[1]")
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    message = str(caught.value)
    assert message.startswith("4 problem(s) in the settings of environment 'staging':")
    assert "  - health.heartbeat_frequency: must be an integer of at least 30" in message
    assert "got 10 (from settings.toml [staging])" in message
    assert "  - retries.retries: must be an integer of at least 0, got 'three'" in message
    assert "  - apply_concurrency: must be an integer of at least 1, got 0" in message
    assert "  - tags: must be a list of strings, got [1] (from env var DEPLOY_TAGS)" in message


def test_every_missing_required_key_is_named(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"settings.toml": '[default]\napi_url = ""\n[staging]\n'})
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    message = str(caught.value)
    required = [
        "flow_roots",
        "entrypoint_style",
        "deployment_types",
        "apply_concurrency",
        "tags",
        "work_pool.python",
        "work_pool.docker",
        "work_pool.queue",
        "parameters",
        "env_vars",
        "retries.retries",
        "retries.retry_delay_seconds",
        "health.heartbeat_frequency",
        "resources.concurrency_limit",
        "pull.strategy",
    ]
    assert message.startswith(f"{len(required)} problem(s)")
    for key in required:
        assert f"  - {key}: missing; it must be " in message


# -- env files ---------------------------------------------------------------------------


def test_env_files_layer_settings_then_env_then_env_of_environment_then_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(
        tmp_path,
        '\n[staging.env_vars]\nA = "settings"\nB = "settings"\nC = "settings"\nD = "settings"\n',
        env="B=dotenv\nC=dotenv\nD=dotenv\n",
        env_staging="C=dotenv-staging\nD=dotenv-staging\n",
        env_production="D=not-this-environment\nE=not-this-environment\n",
    )
    monkeypatch.setenv("DEPLOY_ENV_VARS__D", "007")  # the raw string, not the number 7
    settings = load_settings("staging", root)
    assert {k: settings.env_vars[k] for k in "ABCD"} == {
        "A": "settings",
        "B": "dotenv",
        "C": "dotenv-staging",
        "D": "007",
    }
    assert "E" not in settings.env_vars
    assert [settings.sources[f"env_vars.{k}"] for k in "ABCD"] == [
        "environment [staging]",
        ".env",
        ".env.staging",
        "env var DEPLOY_ENV_VARS__D",
    ]


def test_env_vars_from_settings_become_strings(tmp_path: Path) -> None:
    root = project(tmp_path, "\n[staging.env_vars]\nWORKERS = 4\nVERBOSE = true\n")
    env_vars = load_settings("staging", root).env_vars
    assert env_vars["WORKERS"] == "4"
    assert env_vars["VERBOSE"] == "true"


def test_env_file_values_are_parsed_by_dotenv_rules(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        env='# a comment\nexport QUOTED="two words"\nBASE=/opt\nDERIVED=${BASE}/bin\nEMPTY=\n',
    )
    env_vars = load_settings("staging", root).env_vars
    assert env_vars["QUOTED"] == "two words"
    assert env_vars["DERIVED"] == "/opt/bin"
    assert env_vars["EMPTY"] == ""


def test_malformed_env_file_is_named_with_its_line(tmp_path: Path) -> None:
    root = project(tmp_path, env_staging='GOOD=1\nBAD="unterminated\n')
    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)
    assert str(caught.value).startswith(f"{root / '.env.staging'}:2: line 2 is not KEY=value")


def test_env_file_key_without_equals_sign_is_named(tmp_path: Path) -> None:
    root = project(tmp_path, env="GOOD=1\nLONELY\n")
    with pytest.raises(SettingsError, match=r"\.env:2: line 2: LONELY has no '='"):
        load_settings("staging", root)


# -- secrets -----------------------------------------------------------------------------


def test_effective_masks_secrets_file_values_and_secret_named_keys(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        '\n[default.docker]\nregistry = "r.example"\n',
        staging='masked_env_vars = ["DATABASE_URL"]\n',
        secrets='[default]\napi_key = "pnu_file_secret"\n'
        '[staging.pull]\nrepository = "https://user:pat-12345@git.example/r.git"\n'
        '[production]\napi_key = "pnu_production_only"\n',
        env="DB_PASSWORD=hunter22\nDATABASE_URL=postgres://u:pw-9876@db/x\nPLAIN=visible\n",
    )
    settings = load_settings("staging", root)
    assert settings.api_key == "pnu_file_secret"
    assert {"api_key", "pull.repository", "env_vars.DB_PASSWORD", "env_vars.DATABASE_URL"} <= (
        settings.secret_keys
    )
    assert {
        "pnu_file_secret",
        "https://user:pat-12345@git.example/r.git",
        "hunter22",
        "postgres://u:pw-9876@db/x",
        "pnu_production_only",  # every value of the secrets file, loaded or not
    } <= settings.secret_values

    shown = settings.effective()
    assert shown["api_key"] == MASK
    assert shown["pull"]["repository"] == MASK
    assert shown["env_vars"]["DB_PASSWORD"] == MASK
    assert shown["env_vars"]["DATABASE_URL"] == MASK
    assert shown["env_vars"]["PLAIN"] == "visible"
    assert shown["docker"]["registry"] == "r.example"
    assert settings.effective(show_secrets=True)["api_key"] == "pnu_file_secret"
    rows = {key: (value, source) for key, value, source in settings.explain()}
    assert rows["api_key"] == (MASK, "secrets file")
    assert rows["env_vars.DB_PASSWORD"] == (MASK, ".env")

    for text in (
        format_config(settings, with_sources=True),
        format_config(settings, with_sources=True, as_json=True),
    ):
        for secret in settings.secret_values:
            assert secret not in text


def test_secret_named_env_variable_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_API_KEY", "pnu_from_the_environment")
    settings = load_settings("staging", project(tmp_path))
    assert settings.api_key == "pnu_from_the_environment"
    assert settings.sources["api_key"] == "env var DEPLOY_API_KEY"
    assert "pnu_from_the_environment" in settings.secret_values
    assert "pnu_from_the_environment" not in format_config(settings, as_json=True)


def test_secrets_file_readable_by_others_gives_a_warning(tmp_path: Path) -> None:
    root = project(tmp_path, secrets='[default]\napi_key = "pnu_x_secret"\n')
    assert load_settings("staging", root).warnings == ()
    (root / ".secrets.toml").chmod(0o644)
    (warning,) = load_settings("staging", root).warnings
    assert warning == (
        f"{root / '.secrets.toml'} is readable by group or others (mode 0644); "
        "run: chmod 600 .secrets.toml"
    )


def test_secrets_section_for_no_environment_gives_a_warning(tmp_path: Path) -> None:
    root = project(tmp_path, secrets='[prod]\napi_key = "pnu_x_secret"\n')
    (warning,) = load_settings("production", root).warnings
    assert "section [prod] names no environment of settings.toml" in warning


# -- the value returned ------------------------------------------------------------------


def test_data_is_plain_lowercase_and_a_fresh_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENV_VARS__lower_case_name", "kept")
    root = project(tmp_path)
    first = load_settings("staging", root)
    assert list(first.data)[:3] == ["flow_roots", "exclude", "entrypoint_style"]
    assert type(first.data["work_pool"]) is dict
    assert type(first.data["tags"]) is list
    assert first.env_vars["lower_case_name"] == "kept"
    first.data["tags"].append("changed")  # type: ignore[index]
    assert load_settings("staging", root).tags == ["team:data"]
    with pytest.raises(AttributeError):
        first.env = "production"  # type: ignore[misc]


def test_typed_properties_read_the_settings(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        '\n[staging.flows.etl]\nenabled = false\n[default.flows."dotted.name"]\npaused = true\n',
        secrets='[staging]\napi_key = "pnu_typed"\n',
    )
    s = load_settings("staging", root)
    assert (s.api_url, s.api_key, s.work_queue) == ("", "pnu_typed", "default")
    assert (s.entrypoint_style, s.apply_concurrency) == ("path", 4)
    assert s.deployment_types == ["python", "docker"]
    assert (s.flow_roots, s.exclude, s.tags) == (["flows"], [], ["team:data"])
    assert s.parameters == {"debug": True}
    assert s.flow_overrides("etl") == {"enabled": False}
    assert s.flow_overrides("dotted.name") == {"paused": True}
    assert s.flow_overrides("absent") == {}


def test_format_config_json_carries_settings_and_sources(tmp_path: Path) -> None:
    settings = load_settings("staging", project(tmp_path))
    out = json.loads(format_config(settings, with_sources=True, as_json=True))
    assert out["env"] == "staging"
    assert out["settings"]["work_pool"]["python"] == "default-agent-pool"
    assert out["sources"]["work_pool.python"] == "default"
    assert "sources" not in json.loads(format_config(settings, as_json=True))
    text = format_config(settings, with_sources=True)
    assert text.splitlines()[0] == "# environment: staging"
    assert any(
        line.startswith("work_pool.python ") and line.endswith("<- default")
        for line in text.splitlines()
    )


# -- the config task, end to end ---------------------------------------------------------


def _invoke(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke(REPO, "config", *args, env=env, timeout=120)


def test_config_task_prints_masked_settings_and_rejects_an_unknown_environment() -> None:
    secret = "pnu_e2e_only_in_the_environment"
    done = _invoke("--env", "staging", "--explain", "--json", DEPLOY_API_KEY=secret)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["settings"]["api_key"] == MASK
    assert out["sources"]["api_key"] == "env var DEPLOY_API_KEY"
    assert out["settings"]["work_pool"]["python"] == "staging-agent-pool"

    failed = _invoke("--env", "nowhere")
    assert failed.returncode == EXIT_VALIDATION
    assert "unknown environment 'nowhere'" in failed.stderr
    assert "development, production, staging" in failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr


def test_the_overrides_of_a_flow_with_dots_in_its_name_are_checked_too(tmp_path: Path) -> None:
    root = project(tmp_path, '\n[staging.flows."etl.v2"]\nconcurrency_limit = 0\npaused = "no"\n')

    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)

    message = str(caught.value)
    assert message.startswith("2 problem(s) in the settings of environment 'staging':")
    assert "  - flows.etl.v2.concurrency_limit: must be an integer of at least 1, got 0" in message
    assert "  - flows.etl.v2.paused: must be true or false, got 'no'" in message


def test_a_variable_keeps_the_spelling_of_names_a_user_chose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_FLOWS__Daily_ETL__PAUSED", "true")
    monkeypatch.setenv("DEPLOY_FLOWS__Daily_ETL__PARAMETERS__batchSize", "50")
    monkeypatch.setenv("DEPLOY_RETRIES__RETRIES", "7")

    settings = load_settings("staging", project(tmp_path))

    assert settings.flow_overrides("Daily_ETL") == {"paused": True, "parameters": {"batchSize": 50}}
    assert settings.get("retries.retries") == 7
    assert settings.sources["flows.Daily_ETL.parameters.batchSize"] == (
        "env var DEPLOY_FLOWS__Daily_ETL__PARAMETERS__batchSize"
    )


def test_the_project_is_the_folder_name_as_a_slug_unless_settings_name_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    root = root.rename(root.with_name("My Flows Repo"))
    settings = load_settings("staging", root)
    assert settings.project == "my-flows-repo"
    assert settings.sources["project"] == "the project folder's name"

    monkeypatch.setenv("DEPLOY_PROJECT", "billing")
    assert load_settings("staging", root).project == "billing"

    monkeypatch.setenv("DEPLOY_PROJECT", "Not A/Slug")
    with pytest.raises(SettingsError, match=r"project: must be a slug"):
        load_settings("staging", root)


@pytest.mark.parametrize(
    ("where", "tags"),
    [("", '["env:production"]'), ("", '["managed-by:someone"]'), ("flows.hello", '["runtime:docker"]')],
    ids=["an env tag", "a managed-by tag", "a per-flow runtime tag"],
)
def test_tags_that_look_like_ownership_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, tags: str
) -> None:
    variable = "DEPLOY_" + (where.replace(".", "__") + "__" if where else "") + "TAGS"
    monkeypatch.setenv(variable, tags)

    with pytest.raises(SettingsError) as caught:
        load_settings("staging", project(tmp_path))

    key = f"{where}.tags" if where else "tags"
    assert f"  - {key}: must be " in str(caught.value)
    assert "project:, env:, runtime:, managed-by (this tool's own tags)" in str(caught.value)


def test_an_empty_table_in_an_environment_keeps_the_default_one(tmp_path: Path) -> None:
    settings = load_settings("staging", project(tmp_path, staging="", extra="\n[staging.work_pool]\n"))

    assert settings.work_pool("python") == load_settings("staging", project(tmp_path / "b")).work_pool("python")


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a b", ".hidden", "x" * 64])
def test_an_environment_name_must_be_a_safe_slug(tmp_path: Path, name: str) -> None:
    root = project(tmp_path, f'\n["{name}"]\napi_url = ""\n')

    with pytest.raises(SettingsError, match=r"is not a safe name") as caught:
        load_settings("staging", root)

    assert "settings.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("\n[staging.env_var]\nX = 1\n", "env_var: unknown setting; did you mean 'env_vars'?"),
        ("\n[staging.retries]\nretry = 7\n", "retries.retry: unknown setting; did you mean 'retries'?"),
        ('\n[staging.x]\n', None),
    ],
    ids=["a table name with a typo", "a key of a table with a typo", "an empty unknown table"],
)
def test_an_unknown_setting_is_named_with_its_file_and_what_was_meant(
    tmp_path: Path, extra: str, expected: str | None
) -> None:
    root = project(tmp_path, extra)

    with pytest.raises(SettingsError) as caught:
        load_settings("staging", root)

    message = str(caught.value)
    if expected is None:
        expected = "x: unknown setting"
    assert f"  - {expected}" in message
    assert "(from settings.toml [staging])" in message or expected.startswith("x:")


def test_a_misspelt_key_from_a_variable_is_a_warning_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A warning, not an error: another tool may use the DEPLOY_ prefix too.
    monkeypatch.setenv("DEPLOY_APPLY_CONCURENCY", "8")

    settings = load_settings("staging", project(tmp_path))

    assert (
        "apply_concurency: unknown setting; did you mean 'apply_concurrency'? "
        "(env var DEPLOY_APPLY_CONCURENCY); it is ignored"
    ) in settings.warnings


def test_a_misspelt_key_in_a_file_is_an_error(tmp_path: Path) -> None:
    root = project(tmp_path, staging="apply_concurency = 8\n")

    with pytest.raises(SettingsError, match=r"apply_concurency: unknown setting; did you mean 'apply_concurrency'\? \(from settings.toml \[staging\]\)"):
        load_settings("staging", root)


def test_a_settings_table_outside_any_environment_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[work_pool\] is a settings table outside any environment"):
        load_settings("staging", project(tmp_path, '\n[work_pool]\npython = "x"\n'))


def test_an_env_file_never_brings_in_the_callers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-from-the-shell")
    root = project(tmp_path, env="LEAK=${AWS_SECRET_ACCESS_KEY}\nSAFE=${MISSING:-fallback}\n")

    env_vars = load_settings("staging", root).env_vars

    assert env_vars["LEAK"] == ""
    assert env_vars["SAFE"] == "fallback"


def test_a_settings_file_that_is_a_fifo_is_named_not_waited_on(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "settings.toml")

    with pytest.raises(SettingsError, match=r"settings.toml: is not a regular file"):
        load_settings("staging", tmp_path)
