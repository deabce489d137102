"""What a flow run receives besides its code, proven on a real server and worker:
packages from the flow's requirements.txt (installed by the pull step), the work pool's
environment merged with the deployment's, and per-environment env files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from deploy_lib import pipeline
from deploy_lib.api import PrefectApi
from deploy_lib.models import GitInfo
from deploy_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
GIT = GitInfo(sha="0123456789ab" + "cd" * 14, short_sha="0123456789ab", branch="main")


def _project(root: Path, *, example_flows: bool = True, files: dict[str, str] | None = None) -> Path:
    """The example project at ``root`` (settings, templates and, unless told otherwise,
    the example flows), plus ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "settings.toml", root / "settings.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    if example_flows:
        shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def _create_process_pool(url: str, name: str, env_default: dict[str, str] | None = None) -> None:
    """A process pool; with ``env_default``, its job template gives every run that env."""

    async def go() -> None:
        async with PrefectApi(url, max_writes=1) as api:
            template = await api.default_base_job_template("process")
            if env_default is not None:
                template["variables"]["properties"]["env"]["default"] = env_default
            await api.create_work_pool(name, "process", base_job_template=template)

    asyncio.run(go())


def _deploy(settings: Any, flow: str) -> dict[str, Any]:
    """Deploy the python deployment of ``flow``; return it as the server holds it."""
    prepared = pipeline.prepare(settings, flow_names=[flow], types=["python"])
    outcome = pipeline.deploy(prepared)
    assert outcome.result is not None
    outcome.result.raise_if_failed()

    async def read() -> dict[str, Any]:
        async with PrefectApi(settings.api_url) as api:
            found = await api.read_deployment_by_name(flow, prepared.specs[0].name)
            assert found is not None
            return found

    return asyncio.run(read())


# -- requirements.txt -------------------------------------------------------------------------


def _wheel(dist: Path, name: str, marker: str) -> Path:
    """A pure-Python wheel of package ``name`` whose ``MARKER`` is ``marker``, written by
    hand (the wheel format is a zip with METADATA, WHEEL and RECORD), so no build tool
    and no network are needed."""
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": f"MARKER = {marker!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: deploy-lib-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    dist.mkdir(parents=True, exist_ok=True)
    wheel = dist / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_a_flow_importing_a_package_from_its_requirements_runs_completed_on_a_worker(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"dl_probe_{uuid.uuid4().hex[:10]}"
    marker = uuid.uuid4().hex
    wheel = _wheel(tmp_path / "dist", package, marker)
    out = tmp_path / "probe.json"
    root = _project(
        tmp_path / "project",
        example_flows=False,
        files={
            "flows/probe/requirements.txt": f"--no-index\n{wheel}\n",
            "flows/probe/uses_package.py": f"""\
                import json

                from prefect import flow


                @flow(name="uses-package")
                def uses_package(out: str = "probe.json") -> str:
                    import {package}

                    with open(out, "w") as handle:
                        json.dump({{"marker": {package}.MARKER, "file": {package}.__file__}}, handle)
                    return {package}.MARKER
                """,
        },
    )
    pool = f"requirements-{uuid.uuid4().hex[:8]}"
    _create_process_pool(prefect_server, pool)
    monkeypatch.setenv("DEPLOY_API_URL", prefect_server)
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", pool)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    settings = load_settings("development", root)
    assert _pip("show", package).returncode != 0, f"{package} must not be installed yet"
    try:
        deployment = _deploy(settings, "uses-package")
        assert deployment["pull_steps"][-1] == {
            "prefect.deployments.steps.pip_install_requirements": {
                "directory": str(root.resolve()),
                "requirements_file": "flows/probe/requirements.txt",
            }
        }
        started = time.monotonic()
        result = pipeline.run_flow(
            settings, "uses-package", {"out": str(out)}, with_worker=True, timeout=300
        )
        print(f"uses-package run (pip install included) took {time.monotonic() - started:.1f} s")

        assert result["state"] == "Completed"
        seen = json.loads(out.read_text())
        assert seen["marker"] == marker
        shown = _pip("show", "--files", package)
        assert shown.returncode == 0, "the pull step should have installed the package"
        location = next(
            line.split(":", 1)[1].strip()
            for line in shown.stdout.splitlines()
            if line.startswith("Location:")
        )
        assert Path(seen["file"]).resolve().is_relative_to(Path(location).resolve())
    finally:
        _pip("uninstall", "-y", package)
    assert _pip("show", package).returncode != 0


# -- work pool env + deployment env ---------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_pool_env_and_deployment_env_both_reach_the_run_and_the_deployment_wins(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "project")
    reports = tmp_path / "reports"
    pool = f"env-merge-{uuid.uuid4().hex[:8]}"
    _create_process_pool(prefect_server, pool, {"POOL_ONLY": "1", "SHARED": "pool"})
    monkeypatch.setenv("DEPLOY_API_URL", prefect_server)
    monkeypatch.setenv("DEPLOY_WORK_POOL__PYTHON", pool)
    monkeypatch.setenv("DEPLOY_ENV_VARS__SHARED", "deployment")
    monkeypatch.setenv("DEPLOY_REPORT_DIR", str(reports))  # env-report writes its report there
    settings = load_settings("development", root)

    deployment = _deploy(settings, "env-report")
    started = time.monotonic()
    result = pipeline.run_flow(
        settings, "env-report", {"extra_vars": ["POOL_ONLY", "SHARED"]}, with_worker=True,
        timeout=300,
    )
    print(f"env-report run took {time.monotonic() - started:.1f} s")

    assert result["state"] == "Completed"
    (report_file,) = reports.glob("*.json")
    report: dict[str, Any] = json.loads(report_file.read_text())
    assert report["env"]["POOL_ONLY"] == "1"
    assert report["env"]["SHARED"] == "deployment"
    assert report["env"]["DEPLOY_ENV_NAME"] == "development"
    # The worker merges the pool's env under the deployment's at run time; the deployment
    # does not copy the pool's keys, so a later change to the pool reaches it.
    assert "POOL_ONLY" not in deployment["job_variables"]["env"]


# -- env files ---------------------------------------------------------------------------------

ENV_FILES = {
    ".env": """\
        FROM_DOT_ENV=everywhere
        LAYERED=dot-env
        """,
    ".env.staging": """\
        LAYERED=dot-env-staging
        STAGING_ONLY=yes
        DATABASE_URL=postgres://app:hunter2-db-pass@db.staging/app
        SERVICE_TOKEN=tok-abcdef123456
        """,
}


def test_env_files_reach_only_their_environment_in_order_of_precedence(tmp_path: Path) -> None:
    root = _project(tmp_path / "project", files=ENV_FILES)

    def env_of(env: str) -> dict[str, str]:
        prepared = pipeline.prepare(load_settings(env, root), flow_names=["hello"], git=GIT)
        return dict(prepared.specs[0].body["job_variables"]["env"])

    staging, development = env_of("staging"), env_of("development")

    assert staging["STAGING_ONLY"] == "yes"
    assert "STAGING_ONLY" not in development and "DATABASE_URL" not in development
    assert staging["FROM_DOT_ENV"] == development["FROM_DOT_ENV"] == "everywhere"
    assert staging["LAYERED"] == "dot-env-staging"  # .env.<env> beats .env
    assert development["LAYERED"] == "dot-env"


@pytest.mark.slow
def test_invoke_render_masks_secret_marked_env_file_keys(tmp_path: Path) -> None:
    root = _project(tmp_path / "project", files=ENV_FILES)
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    settings_toml = root / "settings.toml"
    settings_toml.write_text(
        settings_toml.read_text().replace(
            "[staging]\n", '[staging]\nmasked_env_vars = ["DATABASE_URL"]\n', 1
        )
    )
    out = tmp_path / "rendered"

    done = subprocess.run(
        [sys.executable, "-m", "invoke", "render", "--env", "staging", "--out", str(out)],
        cwd=root, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stderr
    rendered = (out / "hello.yaml").read_text()
    # Secret values live in Secret blocks; the deployment refers to them.
    assert "DATABASE_URL: '{{ prefect.blocks.secret.deploy-lib-" in rendered  # masked_env_vars
    assert "SERVICE_TOKEN: '{{ prefect.blocks.secret.deploy-lib-" in rendered  # by its name
    assert "STAGING_ONLY: 'yes'" in rendered
    everything = done.stdout + done.stderr + "".join(p.read_text() for p in out.iterdir())
    assert "hunter2-db-pass" not in everything
    assert "tok-abcdef123456" not in everything
