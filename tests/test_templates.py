"""Templates: loading, rendering on parsed data, selection, build_specs and render output."""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import make_project

from deploy_lib.discovery import discover_flows
from deploy_lib.errors import DiscoveryError, InputError, TemplateError, ValidationFailed
from deploy_lib.models import FlowMetadata, GitInfo, Parameter, Settings
from deploy_lib.pipeline import build_specs
from deploy_lib.pipeline import render as render_to_files
from deploy_lib.settings import load_settings
from deploy_lib.templates import (
    MANIFEST,
    TEMPLATE_VARIABLES,
    TemplateRenderer,
    mask_body,
    select_specs,
)

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
GIT = GitInfo(sha="0123456789abcdef" * 2 + "01234567", short_sha="0123456789ab", branch="main")
NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ROOT_TOKEN = "<PROJECT_ROOT>"
ENVIRONMENTS = ("development", "staging", "production")
STEP = "prefect.deployments.steps."


def write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def render_one(tmp_path: Path, template: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    write(tmp_path, {"templates/python_deployment.yaml": template})
    renderer = TemplateRenderer(tmp_path / "templates", root=tmp_path)
    return renderer.overlay({}, renderer.layers("python", "staging"), variables)


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of this project's settings, flows and templates, with no secrets, env files
    or DEPLOY_* variables, so what renders depends on the committed files alone."""
    for name in list(os.environ):
        if name.startswith("DEPLOY_"):
            monkeypatch.delenv(name)
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "settings.toml", root / "settings.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "flows", root / "flows", ignore=ignore)
    shutil.copytree(REPO / "templates", root / "templates", ignore=ignore)
    return root


# -- rendering on parsed data -------------------------------------------------------------


def test_a_whole_value_placeholder_keeps_the_values_type(tmp_path: Path) -> None:
    template = """
        limit: "{{ deployment.limit }}"
        tags: "{{ deployment.tags }}"
        env: "{{ deployment.env }}"
        paused: "{{ deployment.paused }}"
        nothing: "{{ deployment.nothing }}"
        ratio: "{{ deployment.limit / 4 }}"
    """
    deployment = {"limit": 5, "tags": ["a"], "env": {"X": "1"}, "paused": False, "nothing": None}

    body = render_one(tmp_path, template, {"deployment": deployment})

    assert body == {
        "limit": 5,
        "tags": ["a"],
        "env": {"X": "1"},
        "paused": False,
        "nothing": None,
        "ratio": 1.25,
    }
    body["tags"].append("b")
    assert deployment["tags"] == ["a"], "a rendered value must not alias the input"


def test_other_strings_render_as_text(tmp_path: Path) -> None:
    template = 'description: "{{ flow.name }} runs every {{ deployment.limit }} minutes"'

    body = render_one(tmp_path, template, {"flow": {"name": "etl"}, "deployment": {"limit": 5}})

    assert body == {"description": "etl runs every 5 minutes"}


def test_jinja_expressions_work_in_a_whole_value(tmp_path: Path) -> None:
    template = "tags: \"{{ deployment.tags + ['extra'] }}\""

    assert render_one(tmp_path, template, {"deployment": {"tags": ["a"]}}) == {
        "tags": ["a", "extra"]
    }


def test_an_unknown_variable_names_the_file_the_key_path_and_the_variable(tmp_path: Path) -> None:
    template = """
        job_variables:
          env: "{{ deployment.job_variables.envs }}"
    """

    with pytest.raises(TemplateError) as caught:
        render_one(tmp_path, template, {"deployment": {"job_variables": {"env": {}}}})

    message = str(caught.value)
    assert message.startswith(
        "templates/python_deployment.yaml, key 'job_variables.env', "
        "variable 'deployment.job_variables.envs': unknown variable ("
    )
    assert "has no attribute 'envs'" in message
    assert "template variables are flow, env, settings, git, now, deployment" in message


def test_an_unknown_variable_inside_text_is_named_too(tmp_path: Path) -> None:
    template = """
        pull_steps:
          - step:
              script: "echo {{ env }} {{ settings.nope }}"
    """

    with pytest.raises(TemplateError) as caught:
        render_one(tmp_path, template, {"env": "staging", "settings": {}})

    assert caught.value.key == "pull_steps[0].step.script"
    assert caught.value.variable == "settings.nope"
    assert "variable 'settings.nope'" in str(caught.value)


def test_an_undefined_top_level_name_is_an_unknown_variable(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"key 'name', variable 'flw.name': unknown variable"):
        render_one(tmp_path, 'name: "{{ flw.name }}"', {"flow": {"name": "x"}})


def test_a_placeholder_left_in_a_value_is_an_unresolved_placeholder(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        render_one(tmp_path, 'version: "{{ settings.text }}"', {"settings": {"text": "{{ x }}"}})

    assert "unresolved placeholder" in str(caught.value)
    assert (caught.value.key, caught.value.variable) == ("version", "x")
    # A description is text of the flow's own: data, kept as written.
    kept = render_one(
        tmp_path, 'description: "{{ settings.text }}"', {"settings": {"text": "{{ x }}"}}
    )
    assert kept == {"description": "{{ x }}"}


def test_bad_placeholder_syntax_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"key 'name'.*bad placeholder syntax"):
        render_one(tmp_path, 'name: "{{ flow.name + }}"', {"flow": {"name": "x"}})


def test_prefect_run_time_placeholders_pass_through_untouched(tmp_path: Path) -> None:
    template = """
        a: "{{ prefect.variables.region }}"
        b: "{{ prefect.blocks.secret.git-token }}"
        c: "{{ $HOME }}"
        d: "{{ ctx.flow_run.id }}"
        e: "Bearer {{ prefect.blocks.secret.api-token }} for {{ env }}"
        f: "{{ deployment.steps }}"
    """
    steps = [{"step": {"directory": "{{ clone-step.directory }}"}}]

    body = render_one(tmp_path, template, {"env": "staging", "deployment": {"steps": steps}})

    assert body == {
        "a": "{{ prefect.variables.region }}",
        "b": "{{ prefect.blocks.secret.git-token }}",
        "c": "{{ $HOME }}",
        "d": "{{ ctx.flow_run.id }}",
        "e": "Bearer {{ prefect.blocks.secret.api-token }} for staging",
        "f": steps,
    }


def test_keys_and_non_string_values_are_left_as_they_are(tmp_path: Path) -> None:
    template = """
        "{{ not_rendered }}": 1
        flag: true
        items: [1, 2.5, null]
    """

    assert render_one(tmp_path, template, {}) == {
        "{{ not_rendered }}": 1,
        "flag": True,
        "items": [1, 2.5, None],
    }


def test_job_variables_that_render_to_none_are_dropped(tmp_path: Path) -> None:
    template = """
        job_variables:
          mem_limit: "{{ deployment.mem }}"
          image: "{{ deployment.image }}"
    """

    body = render_one(tmp_path, template, {"deployment": {"mem": None, "image": "i:1"}})

    assert body == {"job_variables": {"image": "i:1"}}


# -- loading ------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    template = 'name: "{{ deployment.name }}"\ntags: [a, b\nversion: "1"\n'

    with pytest.raises(TemplateError) as caught:
        render_one(tmp_path, template, {})

    message = str(caught.value)
    assert message.startswith("templates/python_deployment.yaml:")
    assert "YAML syntax error" in message
    assert "line 3" in message


def test_a_key_given_twice_is_named_with_its_line_not_silently_the_last(tmp_path: Path) -> None:
    template = "job_variables:\n  stream_output: true\n  stream_output: false\n"

    with pytest.raises(TemplateError) as caught:
        render_one(tmp_path, template, {})

    assert str(caught.value) == (
        "templates/python_deployment.yaml:3: key 'stream_output' is given twice in one "
        "mapping (line 3); YAML would keep the last one silently"
    )


def test_an_unquoted_placeholder_is_a_yaml_error_not_a_silent_mapping(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"^templates/python_deployment.yaml:1: YAML syntax"):
        render_one(tmp_path, "name: {{ deployment.name }}\n", {})


def test_a_template_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"must be a mapping of deployment body keys, not list"):
        render_one(tmp_path, "- a\n- b\n", {})


def test_a_parsed_template_is_cached_for_the_run(tmp_path: Path) -> None:
    write(tmp_path, {"templates/python_deployment.yaml": 'name: "{{ env }}"\n'})
    renderer = TemplateRenderer(tmp_path / "templates", root=tmp_path)
    path = renderer.select("python", "staging")
    first = renderer.render(path, {"env": "a"})

    path.write_text("name: changed\n")

    assert renderer.load(path) is renderer.load(path)
    assert renderer.render(path, {"env": "b"}) == {"name": "b"}
    assert first == {"name": "a"}


# -- selection ----------------------------------------------------------------------------


def test_selection_prefers_the_environment_template_and_falls_back_to_the_base(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "templates/python_deployment.yaml": "name: base\n",
            "templates/python_production.yaml": "name: prod\n",
            "templates/docker_deployment.yaml": "name: docker\n",
        },
    )
    renderer = TemplateRenderer(tmp_path / "templates", root=tmp_path)

    assert renderer.select("python", "production").name == "python_production.yaml"
    assert renderer.select("python", "staging").name == "python_deployment.yaml"
    assert renderer.select("docker", "production").name == "docker_deployment.yaml"
    (tmp_path / "templates/python_staging.yaml").write_text("name: staging\n")
    fresh = TemplateRenderer(tmp_path / "templates", root=tmp_path)
    assert fresh.select("python", "staging").name == "python_staging.yaml"


def test_no_template_for_a_type_is_an_error_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    renderer = TemplateRenderer(tmp_path / "templates", root=tmp_path)

    with pytest.raises(TemplateError) as caught:
        renderer.select("docker", "staging")

    assert str(caught.value) == (
        "templates: no template for type 'docker' in environment 'staging': "
        "neither docker_staging.yaml nor docker_deployment.yaml exists"
    )


# -- build_specs with the shipped templates -----------------------------------------------


def _flows(root: Path) -> list[FlowMetadata]:
    write(
        root,
        {
            "flows/hello.py": "# hello\n",
            "flows/boxed/report.py": "# report\n",
            "flows/boxed/Dockerfile": "FROM python:3.11\n",
        },
    )
    return [
        FlowMetadata(
            name="hello",
            function="hello",
            path="flows/hello.py",
            parameters=(Parameter("debug", "bool", False, required=False),),
        ),
        FlowMetadata(
            name="table-report",
            function="report",
            path="flows/boxed/report.py",
            dockerfile="flows/boxed/Dockerfile",
        ),
    ]


def _settings(root: Path, env: str) -> Settings:
    return Settings(
        env=env,
        root=root,
        data={
            "work_pool": {"python": f"{env}-pool", "docker": f"{env}-docker", "queue": "default"},
            "parameters": {"debug": env != "production"},
            "env_vars": {"PYTHONPATH": "."},
            "resources": {"concurrency_limit": 2, "docker": {"mem_limit": "1g"}},
            "docker": {"registry": "registry.local/app", "working_dir": "/app"},
        },
    )


def _specs(root: Path, env: str) -> dict[str, Any]:
    specs, _ = build_specs(
        _flows(root), _settings(root, env), git=GIT, now=NOW, templates_dir=REPO / "templates"
    )
    return {s.name: s for s in specs}


def test_the_shipped_templates_differ_per_environment(tmp_path: Path) -> None:
    dev = _specs(tmp_path, "development")["hello"]
    staging = _specs(tmp_path, "staging")["hello"]
    prod = _specs(tmp_path, "production")["hello"]

    assert dev.source.endswith("templates/python_development.yaml")
    assert staging.source.endswith("templates/python_deployment.yaml")
    assert prod.source.endswith("templates/python_production.yaml")
    assert dev.body["job_variables"]["stream_output"] is True
    assert "dev-loop" in dev.body["tags"] and "dev-loop" not in staging.body["tags"]
    assert "stream_output" not in staging.body["job_variables"]
    assert prod.body["job_variables"]["stream_output"] is False
    assert prod.body["enforce_parameter_schema"] is True
    assert prod.body["description"].startswith(staging.body["description"])
    assert "managed by deploy-lib" in prod.body["description"]


def test_shipped_templates_produce_exactly_the_deployment_body_keys(tmp_path: Path) -> None:
    body_keys = [
        "name", "flow_name", "entrypoint", "description", "version", "work_pool_name",
        "work_queue_name", "tags", "parameters", "parameter_openapi_schema", "job_variables",
        "pull_steps", "schedules", "concurrency_limit", "concurrency_options", "paused",
        "enforce_parameter_schema",
    ]  # fmt: skip
    for env in ENVIRONMENTS:
        for spec in _specs(tmp_path, env).values():
            assert list(spec.body) == body_keys, (env, spec.name)


def test_docker_specs_render_image_limits_and_labels(tmp_path: Path) -> None:
    spec = _specs(tmp_path, "staging")["table-report-docker"]

    assert spec.type == "docker"
    assert spec.source == "templates/docker_deployment.yaml" or spec.source.endswith(
        "templates/docker_deployment.yaml"
    )
    image = spec.body["job_variables"]["image"]
    assert re.fullmatch(r"registry\.local/app/table-report:[0-9a-f]{12}", image)
    assert spec.body["job_variables"] == {
        "image": image,
        "env": {"PYTHONPATH": ".", "DEPLOY_ENV_NAME": "staging"},
        "mem_limit": "1g",
        "labels": {
            "deploy-lib.deployment": "table-report/table-report-docker",
            "deploy-lib.env": "staging",
        },
    }
    assert spec.sources["concurrency_limit"] == "resources.concurrency_limit"


def test_build_specs_records_the_template_and_the_value_sources(tmp_path: Path) -> None:
    spec = _specs(tmp_path, "staging")["hello"]

    assert spec.env == "staging"
    assert spec.flow.name == "hello"
    assert spec.sources["parameters.debug"] == "parameters.debug"
    assert spec.body["parameters"] == {"debug": True}


def test_template_variables_cover_flow_env_settings_git_and_now(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "templates/python_deployment.yaml": (
                'name: "{{ flow.module_path }}|{{ env }}|{{ settings.work_pool.python }}|'
                '{{ git.sha }}|{{ git.branch }}|{{ now }}|{{ deployment.type }}"\n'
            )
        },
    )
    [flow, _] = _flows(tmp_path)
    specs, _ = build_specs([flow], _settings(tmp_path, "staging"), git=GIT, now=NOW)

    assert specs[0].body["name"] == (
        f"flows.hello|staging|staging-pool|{GIT.sha}|main|2024-01-02T03:04:05+00:00|python"
    )
    assert TEMPLATE_VARIABLES == ("flow", "env", "settings", "git", "now", "deployment")


# -- selection of specs and masking -------------------------------------------------------


def test_select_specs_by_flow_and_type_and_refuse_unknown_ones(tmp_path: Path) -> None:
    specs = list(_specs(tmp_path, "staging").values())

    assert [s.name for s in select_specs(specs, flow_names=["table-report"], types=["docker"])] == [
        "table-report-docker"
    ]
    with pytest.raises(DiscoveryError, match=r"no deployment for flow\(s\) 'helo'; flows with"):
        select_specs(specs, flow_names=["helo"])
    with pytest.raises(InputError, match=r"unknown deployment type\(s\) k8s"):
        select_specs(specs, types=["k8s"])


def test_masking_hides_secrets_but_keeps_prefect_placeholders() -> None:
    settings = Settings(
        env="staging",
        root=".",
        data={},
        secret_keys=frozenset({"env_vars.DB_URL"}),
        secret_values=frozenset({"hunter2-secret"}),
    )
    body = {
        "job_variables": {"env": {"DB_URL": "postgres://x", "NOTE": "pw hunter2-secret"}},
        "pull_steps": [
            {STEP + "git_clone": {"access_token": "{{ prefect.blocks.secret.gh }}"}},
            {STEP + "git_clone": {"access_token": "ghp_literal"}},
        ],
    }

    masked = mask_body(body, settings)

    assert masked["job_variables"]["env"] == {"DB_URL": "****", "NOTE": "pw ****"}
    assert masked["pull_steps"][0][STEP + "git_clone"]["access_token"] == (
        "{{ prefect.blocks.secret.gh }}"
    )
    assert masked["pull_steps"][1][STEP + "git_clone"]["access_token"] == "****"


# -- golden files -------------------------------------------------------------------------


def _normalised(text: str, root: Path) -> str:
    return text.replace(str(root.resolve()), ROOT_TOKEN)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_example_flows_match_the_golden_files(
    project: Path, tmp_path: Path, env: str
) -> None:
    """Regenerate with UPDATE_GOLDEN=1; the diff in a failure shows what changed."""
    out = tmp_path / "out"
    render_to_files(
        load_settings(env, project), out_dir=out, write_prefect_yaml=True, git=GIT, now=NOW
    )
    rendered = {
        p.name: _normalised(p.read_text(), project)
        for p in sorted(out.iterdir())
        if p.name != MANIFEST
    }
    golden_dir = GOLDEN / env
    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden_dir, ignore_errors=True)
        golden_dir.mkdir(parents=True)
        for name, text in rendered.items():
            (golden_dir / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(golden_dir.glob("*"))}

    assert sorted(rendered) == sorted(expected), "rendered files differ from tests/golden/" + env
    diffs = [
        "".join(
            difflib.unified_diff(
                expected[name].splitlines(keepends=True),
                rendered[name].splitlines(keepends=True),
                f"golden/{env}/{name}",
                f"rendered/{env}/{name}",
            )
        )
        for name in sorted(rendered)
        if rendered[name] != expected[name]
    ]
    assert not diffs, "rendered output changed (UPDATE_GOLDEN=1 to accept):\n" + "\n".join(diffs)


def test_goldens_hold_no_path_of_the_machine_they_were_made_on() -> None:
    texts = [p.read_text() for p in GOLDEN.rglob("*.yaml")]

    assert texts
    assert all(str(REPO) not in t for t in texts)
    assert any(ROOT_TOKEN in t for t in texts)


# -- render_to_files ----------------------------------------------------------------------


def test_render_writes_one_file_per_deployment_and_removes_only_its_own_stale_files(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    settings = load_settings("staging", project)

    first = render_to_files(settings, out_dir=out, git=GIT, now=NOW)
    assert "hello.yaml" in first.files
    assert (out / "hello.yaml").is_file()
    assert json.loads((out / MANIFEST).read_text())["files"] == sorted(first.files)

    second = render_to_files(
        settings, out_dir=out, fmt="json", flow_names=["hello"], git=GIT, now=NOW
    )

    assert second.files == ("hello.json",)
    assert set(second.removed) == set(first.files)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "hello.json", "notes.txt"])
    body = json.loads((out / "hello.json").read_text())
    assert body["name"] == "hello" and body["job_variables"]["env"]["DEPLOY_ENV_NAME"] == "staging"


def test_a_render_that_fails_half_way_leaves_the_previous_render_whole(
    project: Path, tmp_path: Path, mocker: Any
) -> None:
    """A full disk at the third file: the folder holds exactly what it held before."""
    import errno

    import deploy_lib.templates as templates_module

    out = tmp_path / "out"
    out.mkdir(mode=0o750)
    (out / "notes.txt").write_text("mine\n")
    settings = load_settings("staging", project)
    render_to_files(settings, out_dir=out, git=GIT, now=NOW)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = templates_module._write_text
    calls = 0

    def full_disk(path: Path, text: str, mode: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text, mode)

    mocker.patch.object(templates_module, "_write_text", side_effect=full_disk)
    with pytest.raises(InputError, match="No space left on device; the previous files are as they were"):
        render_to_files(settings, out_dir=out, fmt="json", git=GIT, now=NOW)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "project"], "no temporary folder left"
    assert oct(out.stat().st_mode & 0o777) == oct(0o750)


def test_two_flows_with_one_deployment_name_render_a_file_each(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "p",
        {
            "flows/a.py": "from prefect import flow\n\n@flow\ndef alpha(): ...\n",
            "flows/b.py": "from prefect import flow\n\n@flow\ndef beta(): ...\n",
        },
        example_flows=False,
    )
    with (root / "settings.toml").open("a") as handle:
        handle.write('\n[default.flows.alpha]\nname = "nightly"\n[default.flows.beta]\nname = "nightly"\n')
    result = render_to_files(load_settings("staging", root), git=GIT, now=NOW)
    assert sorted(result.files) == ["alpha__nightly.yaml", "beta__nightly.yaml"]


def test_render_writes_nothing_when_any_deployment_is_invalid(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    settings = load_settings("staging", project)
    render_to_files(settings, out_dir=out, git=GIT, now=NOW)
    before = {p.name: p.read_text() for p in out.iterdir()}
    # A template whose concurrency limit is 0 makes every python deployment invalid.
    base = project / "templates" / "python_deployment.yaml"
    base.write_text(base.read_text() + "concurrency_limit: 0\n")

    with pytest.raises(ValidationFailed) as caught:
        render_to_files(load_settings("staging", project), out_dir=out, git=GIT, now=NOW)

    assert "concurrency_limit" in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_render_writes_nothing_when_a_template_fails(project: Path, tmp_path: Path) -> None:
    docker = project / "templates" / "docker_deployment.yaml"
    docker.write_text(docker.read_text() + 'version: "{{ deployment.versoin }}"\n')

    with pytest.raises(TemplateError, match=r"templates/docker_deployment.yaml, key 'version'"):
        render_to_files(
            load_settings("staging", project), out_dir=tmp_path / "out", git=GIT, now=NOW
        )

    assert not (tmp_path / "out").exists()


def test_render_refuses_an_unknown_format(project: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"unknown output format 'toml'; choose one of: yaml, json"
    ):
        render_to_files(load_settings("staging", project), out_dir=tmp_path, fmt="toml")


def test_prefect_yaml_is_accepted_by_prefects_own_loader(project: Path, tmp_path: Path) -> None:
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.cli.deploy._schedules import _construct_schedules
    from rich.console import Console

    with (project / "settings.toml").open("a") as fh:
        fh.write(
            '\n[production.flows.hello]\nschedules = [{cron = "0 6 * * *", timezone = '
            '"Europe/Berlin"}, {interval = 900, active = false}]\n'
        )
    out = tmp_path / "out"
    result = render_to_files(
        load_settings("production", project), out_dir=out, write_prefect_yaml=True, git=GIT, now=NOW
    )
    path = out / "prefect.yaml"

    PrefectYamlModel.model_validate(yaml.safe_load(path.read_text()))  # raises if refused
    printed = io.StringIO()
    configs, actions = _load_deploy_configs_and_actions(path, console=Console(file=printed))

    assert printed.getvalue() == "", printed.getvalue()
    assert actions["pull"] is None
    rendered = sorted(
        yaml.safe_load((out / f).read_text())["name"] for f in result.files if f != "prefect.yaml"
    )
    assert sorted(c["name"] for c in configs) == rendered  # every type, docker too
    hello = next(c for c in configs if c["name"] == "hello")
    assert hello["entrypoint"] == "flows/hello.py:hello"
    assert hello["work_pool"]["name"] == "prod-agent-pool"
    assert hello["pull"][0] == {STEP + "set_working_directory": {"directory": str(project)}}
    schedules = _construct_schedules(
        hello, {}, console=Console(file=printed), is_interactive=lambda: False
    )
    assert [type(s["schedule"]).__name__ for s in schedules or []] == [
        "CronSchedule",
        "IntervalSchedule",
    ]
    assert [s.get("active", True) for s in schedules or []] == [True, False]


def test_the_render_task_writes_files_and_masks_secrets(project: Path, tmp_path: Path) -> None:
    shutil.copy(REPO / "tasks.py", project / "tasks.py")
    secrets = project / ".secrets.toml"
    secrets.write_text('[staging.env_vars]\nWAREHOUSE_DSN = "postgres://svc:Sup3rSecretPw@db/x"\n')
    secrets.chmod(0o600)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    env["PYTHONPATH"] = str(REPO)

    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "render", "--env", "staging", "--out", str(out)],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    texts = {p.name: p.read_text() for p in out.glob("*.yaml")}
    assert f"wrote {len(texts)} file(s) to {out}" in proc.stdout
    assert set(texts) >= {"hello.yaml", "table-report-python.yaml", "table-report-docker.yaml"}
    assert all("Sup3rSecretPw" not in t for t in texts.values())
    hello = yaml.safe_load(texts["hello.yaml"])
    # The deployment holds a reference to the Secret block that keeps the value.
    reference = hello["job_variables"]["env"]["WAREHOUSE_DSN"]
    assert reference.startswith("{{ prefect.blocks.secret.deploy-lib-"), reference
    assert reference.endswith("-staging-warehouse-dsn }}"), reference

    # With secret blocks off the value is the deployment's own: masked unless asked.
    settings_toml = project / "settings.toml"
    settings_toml.write_text(
        settings_toml.read_text().replace("[staging]\n", "[staging]\nsecret_blocks = false\n", 1)
    )
    masked = render_to_files(load_settings("staging", project), out_dir=tmp_path / "masked")
    assert yaml.safe_load((masked.out_dir / "hello.yaml").read_text())["job_variables"]["env"][
        "WAREHOUSE_DSN"
    ] == "****"
    assert any("stored in plain text" in w for w in masked.warnings), masked.warnings
    shown = render_to_files(
        load_settings("staging", project), out_dir=tmp_path / "shown", show_secrets=True
    )
    assert "Sup3rSecretPw" in (shown.out_dir / "hello.yaml").read_text()
    assert (shown.out_dir / "hello.yaml").stat().st_mode & 0o777 == 0o600  # secrets: owner only
    assert (out / "hello.yaml").stat().st_mode & 0o777 == 0o644


def test_a_wrong_type_after_rendering_is_reported_with_the_template_as_source(
    tmp_path: Path,
) -> None:
    from deploy_lib.validate import validate_specs

    template = (REPO / "templates" / "python_deployment.yaml").read_text()
    write(
        tmp_path,
        {
            "templates/python_deployment.yaml": template
            + 'tags: "{{ deployment.concurrency_limit }}"\n'
        },
    )
    flows = _flows(tmp_path)[:1]
    specs, _ = build_specs(flows, _settings(tmp_path, "staging"), git=GIT, now=NOW)
    hello = next(s for s in specs if s.name == "hello")
    assert hello.body["tags"] == 2  # the whole-value placeholder kept the int

    problems = [p for p in validate_specs(specs, flows) if p.deployment == "hello"]

    assert [(p.key, p.source) for p in problems] == [("tags", "templates/python_deployment.yaml")]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.anyio
async def test_prefect_deploy_accepts_the_rendered_prefect_yaml(
    project: Path, tmp_path: Path, api: Any, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect's own CLI deploys our prefect.yaml, and what it registers is our body."""
    pool = f"render-e2e-{os.getpid()}-{tmp_path.name}"[:60]
    await api.create_work_pool(pool, "process")
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", pool)
    settings = load_settings("staging", project)
    out = tmp_path / "out"
    render_to_files(settings, out_dir=out, write_prefect_yaml=True, types=["python"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "PREFECT_"))}
    env.update(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "prefect-home"))

    command = ["--no-prompt", "deploy", "--all", "--prefect-file", str(out / "prefect.yaml")]
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", *command],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert await api.read_work_pool(pool) is not None
    assert proc.returncode == 0, prefect_server + proc.stdout + proc.stderr
    ours = yaml.safe_load((out / "hello.yaml").read_text())
    live = await api.read_deployment_by_name("hello", "hello")
    assert live is not None, proc.stdout
    for key in ("entrypoint", "version", "work_pool_name", "work_queue_name", "parameters"):
        assert live[key] == ours[key], key
    assert sorted(live["tags"]) == sorted(ours["tags"])
    assert live["pull_steps"] == ours["pull_steps"]
    assert live["job_variables"] == ours["job_variables"]
    # The server reports a deployment's limit as its global concurrency limit.
    assert live["global_concurrency_limit"]["limit"] == ours["concurrency_limit"]


def test_braces_in_a_flows_docstring_are_data_and_a_failing_template_names_the_flow(
    tmp_path: Path,
) -> None:
    write(tmp_path, {
        "flows/greet.py": (
            'from prefect import flow\n\n\n@flow\ndef greet(name: str = "x") -> None:\n'
            '    """Says {{ user.name }} hello."""\n'
        ),
        "templates/python_deployment.yaml": 'description: "[dev] {{ deployment.description }}"\n',
    })
    flows = discover_flows(tmp_path, ["flows"]).flows
    specs, _ = build_specs(flows, _settings(tmp_path, "staging"), git=GIT, now=NOW)
    assert specs[0].body["description"] == "[dev] Says {{ user.name }} hello."

    (tmp_path / "templates/python_deployment.yaml").write_text('version: "{{ nope }}"\n')
    with pytest.raises(TemplateError, match=r"rendering flow 'greet', flows/greet.py\)"):
        build_specs(flows, _settings(tmp_path, "staging"), git=GIT, now=NOW)


def test_a_deployment_named_prefect_and_the_prefect_yaml_export_do_not_overwrite_each_other(
    project: Path, tmp_path: Path
) -> None:
    with (project / "settings.toml").open("a") as handle:
        handle.write('\n[staging.flows.hello.names]\npython = "prefect"\n')
    out = tmp_path / "out"

    with pytest.raises(InputError, match=r"a deployment named 'prefect' would be written to prefect.yaml"):
        render_to_files(load_settings("staging", project), out_dir=out, write_prefect_yaml=True)

    assert not out.exists()  # nothing was written


def _alias_bomb() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\nx_bomb: *a8\n"


@pytest.mark.parametrize(
    ("addition", "message"),
    [
        (_alias_bomb(), "expands to more than 100,000 values (YAML aliases nested in aliases?)"),
        ("description: \"{{ 'x' * 50000000 }}\"\n", "a value longer than 1,000,000 is too large"),
        ("description: \"{{ 'x' * 5000 * 5000 }}\"\n", "a value longer than 1,000,000 is too large"),
        ("description: \"{{ 'x'.center(1000000000) }}\"\n", "1000000000 is too large an argument"),
        ("description: \"{{ 'x' | center(1000000000) }}\"\n", "1000000000 is too large an argument"),
        (
            'description: "{% for i in range(100000) %}{% for j in range(100000) %}'
            '{% endfor %}{% endfor %}"\n',
            "{% for %} is not allowed in a template value",
        ),
        ("description: \"{{ 2 ** 100000 }}\"\n", "2 ** 100000 is too large"),
    ],
    ids=["alias bomb", "huge string", "huge product", "huge method argument",
         "huge filter argument", "nested loops", "huge power"],
)
def test_a_template_that_would_explode_is_refused_at_once_naming_it(
    project: Path, addition: str, message: str
) -> None:
    template = project / "templates" / "python_development.yaml"
    kept = "".join(
        line for line in template.read_text().splitlines(keepends=True)
        if not line.startswith("description:")
    )
    template.write_text(kept + addition)
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render_to_files(load_settings("development", project), git=GIT, now=NOW)
    assert time.monotonic() - started < 10
    assert message in str(caught.value)
    assert "templates/python_development.yaml" in str(caught.value)


def test_prefect_yaml_carries_triggers_collision_strategy_and_schedule_parameters(
    project: Path, tmp_path: Path
) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    with (project / "settings.toml").open("a") as fh:
        fh.write(
            '\n[production.flows.hello]\ncollision_strategy = "CANCEL_NEW"\n'
            'schedules = [{cron = "0 6 * * *", slug = "morning", parameters = {name = "early"}}]\n'
            '[[production.flows.hello.triggers]]\nexpect = ["prefect.flow-run.Completed"]\n'
            'match_related = {"prefect.resource.name" = "daily-etl"}\n'
        )
    out = tmp_path / "out"
    render_to_files(
        load_settings("production", project), out_dir=out, write_prefect_yaml=True, git=GIT, now=NOW
    )
    data = yaml.safe_load((out / "prefect.yaml").read_text())
    PrefectYamlModel.model_validate(data)  # raises if refused

    hello = next(d for d in data["deployments"] if d["name"] == "hello")
    assert hello["concurrency_limit"] == {"limit": 10, "collision_strategy": "CANCEL_NEW"}
    assert hello["schedules"][0]["slug"] == "morning"
    assert hello["schedules"][0]["parameters"] == {"name": "early"}
    (trigger,) = _initialize_deployment_triggers("hello", [dict(t) for t in hello["triggers"]])
    assert trigger.name == "hello__automation_1"
    assert trigger.expect == {"prefect.flow-run.Completed"}


def test_select_specs_takes_any_type_the_specs_have(tmp_path: Path) -> None:
    specs = list(_specs(tmp_path, "staging").values())
    docker = next(s for s in specs if s.type == "docker")
    k8s = replace(docker, type="kubernetes", body={**docker.body, "name": "table-report-k8s"})

    assert select_specs([*specs, k8s], types=["kubernetes"]) == [k8s]
    with pytest.raises(InputError, match=r"unknown deployment type\(s\) kubernets; known: "
                       r"python, docker, kubernetes"):
        select_specs([*specs, k8s], types=["kubernets"])
