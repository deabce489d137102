"""Docker images: the exact docker CLI commands, checked with a fake ``docker`` first on
PATH that records its arguments (and stdin) and exits as the test tells it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from deploy_lib import docker, pipeline
from deploy_lib.api import PrefectApi
from deploy_lib.build import context_digest, image_for
from deploy_lib.discovery import discover_flows
from deploy_lib.errors import DockerError, InputError, SettingsError
from deploy_lib.models import FlowMetadata, GitInfo, ImageResult, Settings
from deploy_lib.pipeline import build_images as build_for_env
from deploy_lib.pipeline import build_prepared
from deploy_lib.report import format_images
from deploy_lib.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
GIT = GitInfo(sha="0123456789ab" + "cd" * 14, short_sha="0123456789ab", branch="main")
STAGING_REGISTRY = "registry.staging.internal/deploy-lib"
INFO = ["info", "--format", "{{.ServerVersion}}"]


def build_images(
    settings: Settings,
    flows: list[FlowMetadata],
    *,
    push: bool,
    git: GitInfo,
    on_line: Any = None,
) -> list[ImageResult]:
    """``docker.build_images`` with each flow's reference as the pipeline computes it
    (``git`` no longer matters: the tag is the build context's hash)."""
    images = [(flow, image_for(flow, settings)) for flow in flows]
    return docker.build_images(settings, images, push=push, on_line=on_line)
def _tag(root: Path, dockerfile: str) -> str:
    """The tag of the image built from ``dockerfile``'s folder: that folder's hash."""
    return context_digest(FlowMetadata("x", "x", dockerfile, dockerfile=dockerfile), root)


# The example's build context, whatever project copy it sits in.
TABLE_TAG = _tag(REPO, "flows/containerized/Dockerfile")
PASSWORD = "s3cret-Pa55word-for-the-registry"
NO_ENGINE = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)

FAKE_DOCKER = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "stdin": sys.stdin.read()}}) + "\\n")
command = args[0] if args else ""
if os.environ.get("FAKE_DOCKER_FAIL") == command:
    print(os.environ.get("FAKE_DOCKER_OUTPUT", "failed"))
    sys.exit(int(os.environ.get("FAKE_DOCKER_CODE", "1")))
if command == "info":
    print("28.2.2")
elif command == "build":
    print("#1 [internal] load build definition from Dockerfile")
    print("#9 naming to " + args[args.index("-t") + 1] + " done")
elif command == "login":
    print("Login Succeeded")
elif command == "push":
    print("The push refers to repository [" + args[1].rsplit(":", 1)[0] + "]")
"""


@dataclass
class FakeDocker:
    log: Path
    monkeypatch: pytest.MonkeyPatch

    def calls(self) -> list[list[str]]:
        return [entry["argv"] for entry in self._entries()]

    def stdin_of(self, command: str) -> list[str]:
        return [e["stdin"] for e in self._entries() if e["argv"][:1] == [command]]

    def fail(self, command: str, output: str, code: int = 1) -> None:
        self.monkeypatch.setenv("FAKE_DOCKER_FAIL", command)
        self.monkeypatch.setenv("FAKE_DOCKER_OUTPUT", output)
        self.monkeypatch.setenv("FAKE_DOCKER_CODE", str(code))

    def _entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    for name in ("FAKE_DOCKER_FAIL", "FAKE_DOCKER_OUTPUT", "FAKE_DOCKER_CODE"):
        monkeypatch.delenv(name, raising=False)
    return FakeDocker(log, monkeypatch)


def _project(root: Path, files: dict[str, str] | None = None) -> Path:
    """The example project (settings, templates, flows) at ``root``, plus ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "settings.toml", root / "settings.toml")
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def _docker_flows(root: Path) -> list[FlowMetadata]:
    return [f for f in discover_flows(root, ["flows"]).flows if f.dockerfile]


SHARED_FLOWS = {
    "flows/shared/Dockerfile": "FROM prefecthq/prefect:3-python3.11\n",
    "flows/shared/alpha.py": """\
        from prefect import flow

        @flow(name="alpha")
        def alpha() -> None:
            pass
        """,
    "flows/shared/beta.py": """\
        from prefect import flow

        @flow(name="beta")
        def beta() -> None:
            pass
        """,
}


# -- the commands -------------------------------------------------------------------------


def test_build_checks_the_engine_then_builds_with_the_dockerfile_folder_as_context(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    settings = load_settings("staging", root)
    lines: list[str] = []

    results = build_images(
        settings, _docker_flows(root), push=False, git=GIT, on_line=lines.append
    )

    image = f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}"
    assert fake_docker.calls() == [
        INFO,
        [
            "build", "-f", "flows/containerized/Dockerfile",
            "--build-arg", "FLOW_DIR=flows/containerized",
            "-t", image, "flows/containerized",
        ],
    ]
    assert [r.to_dict()["references"] for r in results] == [[image]]
    assert results[0].flows == ("table-report",) and not results[0].pushed
    assert f"#9 naming to {image} done" in lines  # docker's output is streamed
    assert format_images(results).startswith(f"{image}: built in ")


def test_the_tag_is_the_build_contexts_hash_unless_settings_fix_one(
    fake_docker: FakeDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "project")
    flows = _docker_flows(root)

    (hashed,) = build_images(load_settings("staging", root), flows, push=False, git=GIT)
    monkeypatch.setenv("DEPLOY_DOCKER__TAG", "release-7")
    (fixed,) = build_images(load_settings("staging", root), flows, push=False, git=GIT)

    assert hashed.references == (f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}",)
    assert fixed.references == (f"{STAGING_REGISTRY}/table-report:release-7",)
    builds = [call for call in fake_docker.calls() if call[0] == "build"]
    assert [call[call.index("-t") + 1] for call in builds] == [
        f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}",
        f"{STAGING_REGISTRY}/table-report:release-7",
    ]


def test_the_tag_moves_when_the_build_context_changes_and_not_at_an_edit_elsewhere(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _git_project(tmp_path / "project")

    before = build_for_env(load_settings("staging", root))
    (root / "flows" / "hello.py").write_text("# changed, outside the context\n", encoding="utf-8")
    elsewhere = build_for_env(load_settings("staging", root))
    table = root / "flows" / "containerized" / "table_report.py"
    table.write_text(table.read_text() + "\n# changed inside the context\n", encoding="utf-8")
    inside = build_for_env(load_settings("staging", root))

    assert before[0].references == (f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}",)
    assert elsewhere[0].references == before[0].references
    new_tag = _tag(root, "flows/containerized/Dockerfile")
    assert new_tag != TABLE_TAG
    assert inside[0].references == (f"{STAGING_REGISTRY}/table-report:{new_tag}",)


def test_flows_sharing_a_dockerfile_are_built_once_and_tagged_for_each_flow(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", SHARED_FLOWS)
    settings = load_settings("staging", root)

    results = build_images(settings, _docker_flows(root), push=True, git=GIT)

    shared = _tag(root, "flows/shared/Dockerfile")
    alpha = f"{STAGING_REGISTRY}/alpha:{shared}"
    beta = f"{STAGING_REGISTRY}/beta:{shared}"
    table = f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}"
    assert fake_docker.calls() == [
        INFO,
        [
            "build", "-f", "flows/containerized/Dockerfile",
            "--build-arg", "FLOW_DIR=flows/containerized", "-t", table, "flows/containerized",
        ],
        ["push", table],
        [
            "build", "-f", "flows/shared/Dockerfile",
            "--build-arg", "FLOW_DIR=flows/shared", "-t", alpha, "flows/shared",
        ],
        ["tag", alpha, beta],
        ["push", alpha],
        ["push", beta],
    ]
    assert [(r.dockerfile, r.flows, r.pushed) for r in results] == [
        ("flows/containerized/Dockerfile", ("table-report",), True),
        ("flows/shared/Dockerfile", ("alpha", "beta"), True),
    ]


def test_without_push_nothing_is_pushed_and_nobody_logs_in(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", _secrets("ci-bot", PASSWORD))

    build_images(load_settings("staging", root), _docker_flows(root), push=False, git=GIT)

    assert [call[0] for call in fake_docker.calls()] == ["info", "build"]


def test_push_logs_in_with_the_password_on_stdin_and_never_shows_it(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", _secrets("ci-bot", PASSWORD))
    lines: list[str] = []

    build_images(
        load_settings("staging", root), _docker_flows(root), push=True, git=GIT,
        on_line=lines.append,
    )

    calls = fake_docker.calls()
    assert calls[:2] == [
        INFO,
        ["login", "--username", "ci-bot", "--password-stdin", "registry.staging.internal"],
    ]
    assert [call[0] for call in calls[2:]] == ["build", "push"]
    assert fake_docker.stdin_of("login") == [PASSWORD]
    assert not any(PASSWORD in arg for call in calls for arg in call)
    assert "Login Succeeded" in lines
    assert not any(PASSWORD in line for line in lines)


def test_without_credentials_push_uses_dockers_own_login(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")

    build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)

    assert [call[0] for call in fake_docker.calls()] == ["info", "build", "push"]


def test_a_username_without_a_password_is_a_settings_error_before_docker_runs(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", _secrets("ci-bot", ""))

    with pytest.raises(SettingsError, match=r"key 'registry_password': is empty, but registry_username is set"):
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)
    assert fake_docker.calls() == []


# -- failures -------------------------------------------------------------------------------


def test_a_missing_docker_cli_says_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "project")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    with pytest.raises(DockerError, match="the docker CLI is not installed") as caught:
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)
    assert "no 'docker' executable on PATH" in str(caught.value)
    assert "deploying docker deployments do not need it" in str(caught.value)


def test_an_unreachable_engine_is_named_before_any_build(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    fake_docker.fail("info", NO_ENGINE)

    with pytest.raises(DockerError, match=r"^no Docker engine is reachable \(docker info failed\)") as caught:
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)
    assert NO_ENGINE in str(caught.value)
    assert fake_docker.calls() == [INFO]


def test_an_engine_lost_during_the_build_is_named_as_such(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    fake_docker.fail("build", f"ERROR: {NO_ENGINE}")

    with pytest.raises(DockerError, match=r"^no Docker engine is reachable \(docker build failed\)"):
        build_images(load_settings("staging", root), _docker_flows(root), push=False, git=GIT)


def test_a_failing_build_names_the_flow_the_image_and_the_tail_of_dockers_output(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    fake_docker.fail(
        "build",
        "#7 [3/5] COPY requirements.txt /opt/prefect/requirements.txt\n"
        'ERROR: failed to solve: "/requirements.txt": not found',
        code=17,
    )

    with pytest.raises(DockerError) as caught:
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)

    message = str(caught.value)
    assert message.startswith(
        f"docker build of image {STAGING_REGISTRY}/table-report:{TABLE_TAG} for flow(s) "
        "'table-report' (flows/containerized/Dockerfile) failed (exit code 17); "
        "docker's last lines:\n"
    )
    assert message.endswith('  ERROR: failed to solve: "/requirements.txt": not found')
    assert [call[0] for call in fake_docker.calls()] == ["info", "build"]  # no push


def test_a_failing_push_names_the_image_and_the_flow(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    fake_docker.fail("push", "denied: requested access to the resource is denied")

    with pytest.raises(DockerError, match=r"docker push of image \S+/table-report:[0-9a-f]{12} for flow\(s\) 'table-report' failed \(exit code 1\)") as caught:
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)
    assert "denied: requested access to the resource is denied" in str(caught.value)


def test_a_failing_login_keeps_the_password_out_of_the_message(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", _secrets("ci-bot", PASSWORD))
    fake_docker.fail("login", f"Error response from daemon: bad password {PASSWORD}")

    with pytest.raises(DockerError, match=r"docker login to registry\.staging\.internal as 'ci-bot' failed") as caught:
        build_images(load_settings("staging", root), _docker_flows(root), push=True, git=GIT)
    assert PASSWORD not in str(caught.value)
    assert "bad password ****" in str(caught.value)


def test_a_flow_without_a_dockerfile_has_no_image_to_build(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    hello = next(f for f in discover_flows(root, ["flows"]).flows if f.name == "hello")

    with pytest.raises(InputError, match=r"flow 'hello' \(flows/hello.py\) has no Dockerfile"):
        build_images(load_settings("staging", root), [hello], push=False, git=GIT)


# -- build, then deploy exactly what was built ---------------------------------------------


def test_build_prepared_builds_exactly_the_images_the_docker_deployments_name(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project", SHARED_FLOWS)
    prepared = pipeline.prepare(load_settings("production", root), git=GIT)

    results = build_prepared(prepared, push=True)

    wanted = sorted(
        s.body["job_variables"]["image"] for s in prepared.specs if s.type == "docker"
    )
    assert sorted(ref for r in results for ref in r.references) == wanted
    assert wanted[0] == f"registry.prod.internal/deploy-lib/alpha:{_tag(root, 'flows/shared/Dockerfile')}"
    pushed = sorted(call[1] for call in fake_docker.calls() if call[0] == "push")
    assert pushed == wanted


def test_build_prepared_refuses_a_template_that_names_another_image(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    pinned = 'job_variables:\n  image: "elsewhere/pinned:1"\n'
    root = _project(tmp_path / "project")
    (root / "templates" / "docker_staging.yaml").write_text(pinned)
    prepared = pipeline.prepare(load_settings("staging", root), types=["docker"], git=GIT)

    with pytest.raises(DockerError, match=r"deployment 'table-report/table-report-docker' names image 'elsewhere/pinned:1' \(from templates/docker_staging.yaml\), but the image built for flow 'table-report' is"):
        build_prepared(prepared, push=False)


def test_nothing_to_build_is_an_input_error(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")

    with pytest.raises(InputError, match="nothing to build in environment 'staging'"):
        build_for_env(load_settings("staging", root), flow_names=["hello"])


# -- the CLI, end to end ---------------------------------------------------------------------


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=root, capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


def _git_project(root: Path, files: dict[str, str] | None = None) -> Path:
    _project(root, files)
    shutil.copy(REPO / "tasks.py", root / "tasks.py")
    (root / ".gitignore").write_text(".secrets.toml\n.prefect/\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "example project")
    return root


def _secrets(username: str, password: str) -> dict[str, str]:
    return {
        ".secrets.toml": f'[staging]\nregistry_username = "{username}"\n'
        f'registry_password = "{password}"\n'
    }


def _invoke(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return invoke(root, *args, env=env, timeout=300)


@pytest.mark.slow
def test_invoke_build_staging_push_drives_docker_and_reports_the_images(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _git_project(tmp_path / "project", SHARED_FLOWS)
    (root / ".secrets.toml").write_text(_secrets("ci-bot", PASSWORD)[".secrets.toml"])
    (root / ".secrets.toml").chmod(0o600)

    started = time.monotonic()
    done = _invoke(root, "build", "--env", "staging", "--push")
    print(f"invoke build --env staging --push: {time.monotonic() - started:.1f} s")

    assert done.returncode == 0, done.stderr
    shared = _tag(root, "flows/shared/Dockerfile")
    table = f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}"
    alpha, beta = (f"{STAGING_REGISTRY}/{n}:{shared}" for n in ("alpha", "beta"))
    assert fake_docker.calls() == [
        INFO,
        ["login", "--username", "ci-bot", "--password-stdin", "registry.staging.internal"],
        [
            "build", "-f", "flows/containerized/Dockerfile",
            "--build-arg", "FLOW_DIR=flows/containerized", "-t", table, "flows/containerized",
        ],
        ["push", table],
        [
            "build", "-f", "flows/shared/Dockerfile",
            "--build-arg", "FLOW_DIR=flows/shared", "-t", alpha, "flows/shared",
        ],
        ["tag", alpha, beta],
        ["push", alpha],
        ["push", beta],
    ]
    assert fake_docker.stdin_of("login") == [PASSWORD]
    assert f"{alpha}, {beta}: built and pushed in " in done.stdout
    assert PASSWORD not in done.stdout + done.stderr

    as_json = _invoke(root, "build", "--env", "staging", "--flow", "beta", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["env"] == "staging"
    assert [(i["flows"], i["references"], i["pushed"]) for i in report["images"]] == [
        (["beta"], [beta], False)
    ]


@pytest.mark.slow
def test_invoke_build_without_an_engine_exits_1_with_the_reason(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _git_project(tmp_path / "project")

    done = _invoke(root, "build", "--env", "staging", FAKE_DOCKER_FAIL="info", FAKE_DOCKER_OUTPUT=NO_ENGINE)

    assert done.returncode == 1
    assert done.stderr.startswith("no Docker engine is reachable (docker info failed)")
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_invoke_deploy_build_deploys_exactly_the_images_it_pushed(
    fake_docker: FakeDocker, tmp_path: Path, prefect_server: str
) -> None:
    root = _git_project(tmp_path / "project")
    (root / "flows" / "hello.py").write_text("# uncommitted change\n" + (REPO / "flows" / "hello.py").read_text())
    pool = f"docker-build-{uuid.uuid4().hex[:8]}"

    async def read(name: str) -> dict[str, Any] | None:
        async with PrefectApi(prefect_server, max_writes=1) as api:
            if name == "":
                await api.create_work_pool(pool, "docker")
                return None
            return await api.read_deployment_by_name("table-report", name)

    asyncio.run(read(""))
    env = {"DEPLOY_API_URL": prefect_server, "DEPLOY_WORK_POOL__DOCKER": pool}
    started = time.monotonic()
    done = _invoke(root, "deploy", "--env", "staging", "--type", "docker", "--build", **env)
    print(f"invoke deploy --type docker --build: {time.monotonic() - started:.1f} s")

    assert done.returncode == 0, done.stdout + done.stderr
    image = f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}"  # hello.py is outside its context
    assert [c[0] for c in fake_docker.calls()] == ["info", "build", "push"]
    assert fake_docker.calls()[2] == ["push", image]
    deployment = asyncio.run(read("table-report-docker"))
    assert deployment is not None
    assert deployment["job_variables"]["image"] == image
    assert deployment["work_pool_name"] == pool

    refused = _invoke(root, "deploy", "--env", "staging", "--build", "--dry-run", **env)
    assert refused.returncode == 3
    assert "--build pushes images, so it cannot be combined with --dry-run" in refused.stderr


def test_a_deploy_warns_of_images_this_machine_has_not_built_or_found(
    fake_docker: FakeDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deploy_lib.pipeline import _unbuilt_images

    root = _project(tmp_path / "project")
    prepared = pipeline.prepare(load_settings("staging", root), git=GIT)
    image = f"{STAGING_REGISTRY}/table-report:{TABLE_TAG}"

    fake_docker.fail("image", "Error: No such image", code=1)
    (warning,) = _unbuilt_images(prepared)
    assert warning == (
        "1 docker deployment(s) run an image this tool has not built or found: "
        f"table-report/table-report-docker -> {image}; build and push them with "
        "`invoke deploy --build` (or `invoke build --push`)"
    )
    assert ["image", "inspect", "--format", "{{.Id}}", image] in fake_docker.calls()

    monkeypatch.setenv("FAKE_DOCKER_FAIL", "nothing")  # the image is there now
    assert _unbuilt_images(prepared) == []

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no docker at all
    (warning,) = _unbuilt_images(prepared)
    assert "(docker is not installed here, so none could be checked)" in warning


def test_invoke_build_builds_the_image_of_a_kubernetes_only_flow(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    root = _project(tmp_path / "project")
    text = (root / "settings.toml").read_text().replace(
        "[staging]\n", '[staging]\ndeployment_types = ["python", "kubernetes"]\n', 1
    ).replace('[staging.work_pool]\n', '[staging.work_pool]\nkubernetes = "staging-k8s"\n', 1)
    (root / "settings.toml").write_text(text)
    results = pipeline.build_images(load_settings("staging", root))

    (built,) = results
    assert built.flows == ("table-report",)
    assert built.references[0].startswith("registry.staging.internal/deploy-lib/table-report:")
