"""Docker images for docker deployments, built and pushed with the docker CLI.

``build_images`` runs ``docker`` as a subprocess (no Docker SDK): ``docker info`` once,
to tell a missing engine from a failing build, then per image::

    docker build -f <folder>/Dockerfile --build-arg FLOW_DIR=<folder> -t <image> <folder>
    docker tag <image> <image of each other flow sharing that Dockerfile>
    docker push <image>                       (each reference, only with push=True)

and, before the first push when settings hold credentials,
``docker login --username <registry_username> --password-stdin <registry host>``: the
password goes to docker's stdin, never onto a command line or into any printout.

The rules:

- **Context.** The build context is the Dockerfile's folder.  ``FLOW_DIR`` is that
  folder relative to the project root, so a Dockerfile can ``COPY . <workdir>/${FLOW_DIR}/``
  and put the flow code at the same relative path as in the repository, which is what
  the deployment's entrypoint (``flows/x/flow.py:fn``, relative to
  ``docker.working_dir``) expects.  See ``flows/containerized/Dockerfile``.
- **One build per Dockerfile.**  Flows that share a Dockerfile (a Dockerfile in a parent
  folder serves every flow below it) share one build; the image gets each flow's
  reference with ``docker tag``.
- **References.**  ``build.image_reference`` computes them, the same function that puts
  the image into the deployment, so a deploy after a build runs exactly the image built
  (``build_prepared`` checks it).  The tag is ``docker.tag``, else the git commit with
  ``-dirty`` for a tree with uncommitted changes.

``bundled_job_template`` and ``job_variable_problems`` check job variables offline
against the default job templates that ship with Prefect (its worker metadata).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from deploy_lib.build import image_reference
from deploy_lib.errors import DockerError, InputError, SettingsError
from deploy_lib.gitinfo import GitInfo, git_info
from deploy_lib.masking import Masker
from deploy_lib.models import DeploymentSpec, FlowMetadata, Problem, Settings

if TYPE_CHECKING:
    from deploy_lib.pipeline import Prepared

__all__ = [
    "ImageResult",
    "build_for_env",
    "build_images",
    "build_prepared",
    "bundled_job_template",
    "format_images",
    "job_variable_problems",
]

# docker's own words when it cannot reach an engine (CLI versions 20 to 28).
_NO_ENGINE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
)
_TAIL_LINES = 15
LineSink = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    """One image built: from ``dockerfile`` (relative to the project root) with
    ``context`` as build context, for ``flows``; ``references`` are the flows'
    image references, the first one built and the others tagged from it.  ``pushed``
    says whether every reference was pushed; ``seconds`` is the build (and push) time."""

    dockerfile: str
    context: str
    flows: tuple[str, ...]
    references: tuple[str, ...]
    pushed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "dockerfile": self.dockerfile,
            "context": self.context,
            "flows": list(self.flows),
            "references": list(self.references),
            "pushed": self.pushed,
            "seconds": round(self.seconds, 3),
        }


def build_images(
    settings: Settings,
    flows: Iterable[FlowMetadata],
    *,
    push: bool,
    git: GitInfo,
    on_line: LineSink | None = None,
) -> list[ImageResult]:
    """Build the image of each flow's Dockerfile (once per Dockerfile), tag it with every
    flow's reference and, with ``push``, log in (when credentials are set) and push.

    Runs the docker CLI in the project root; each line docker prints goes to
    ``on_line`` with secrets masked.  Returns one ``ImageResult`` per build, sorted by
    Dockerfile.  Raises ``InputError`` for a flow without a Dockerfile or two builds that
    would share one reference, ``SettingsError`` for half-set registry credentials, and
    ``DockerError`` when the CLI is missing, no engine answers, or a command fails.
    """
    root = Path(settings.root).resolve()
    groups = _group(flows, settings, git)
    if not groups:
        return []
    credentials = _credentials(settings) if push else None
    masker = Masker(settings.secret_values)
    cli = _Cli(root, masker, on_line)
    cli.check_engine()
    if credentials is not None:
        cli.login(*credentials, registry=str(settings.get("docker.registry") or ""))
    results = []
    for (dockerfile, context), members in groups.items():
        started = time.monotonic()
        refs = tuple(dict.fromkeys(ref for _, ref in members))
        names = tuple(flow.name for flow, _ in members)
        who = f"flow(s) {', '.join(map(repr, names))}"
        cli.run(
            ["build", "-f", dockerfile, "--build-arg", f"FLOW_DIR={context}", "-t", refs[0], context],
            failed=f"docker build of image {refs[0]} for {who} ({dockerfile}) failed",
        )
        for ref in refs[1:]:
            cli.run(["tag", refs[0], ref], failed=f"docker tag {ref} for {who} failed")
        if push:
            for ref in refs:
                cli.run(["push", ref], failed=f"docker push of image {ref} for {who} failed")
        results.append(
            ImageResult(dockerfile, context, names, refs, push, time.monotonic() - started)
        )
    return results


def build_prepared(
    prepared: Prepared, *, push: bool, on_line: LineSink | None = None
) -> list[ImageResult]:
    """Build (and push) the images of the docker deployments in ``prepared``, with the
    git state ``prepared`` was built from, so the images are exactly the ones its
    deployments name.  Raises ``InputError`` when it holds no docker deployment and
    ``DockerError`` when a deployment names an image other than the one built (a
    template that sets ``job_variables.image`` itself)."""
    specs = [s for s in prepared.specs if s.type == "docker"]
    settings = prepared.settings
    if not specs:
        raise InputError(
            f"nothing to build in environment {settings.env!r}: no selected flow has a docker "
            "deployment (a flow needs a Dockerfile beside it or in a parent folder, and "
            "deployment_types must include docker)"
        )
    git = prepared.git if prepared.git is not None else git_info(Path(settings.root))
    results = build_images(
        settings, {s.flow.name: s.flow for s in specs}.values(), push=push, git=git, on_line=on_line
    )
    built = {ref for result in results for ref in result.references}
    for spec in specs:
        image = (spec.body.get("job_variables") or {}).get("image")
        if image not in built:
            raise DockerError(
                f"deployment {spec.full_name!r} names image {image!r} (from {spec.source}), "
                f"but the image built for flow {spec.flow.name!r} is "
                f"{image_reference(spec.flow.name, settings, git)!r}; remove "
                "job_variables.image from the template so the deployment runs what was built"
            )
    return results


def build_for_env(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    push: bool = False,
    on_line: LineSink | None = None,
) -> list[ImageResult]:
    """Prepare the docker deployments of ``settings.env`` (all, or those of
    ``flow_names``) and ``build_prepared`` them: only valid deployments get an image."""
    from deploy_lib.pipeline import prepare  # pipeline wires the stages; it imports us lazily

    prepared = prepare(settings, flow_names=flow_names, types=["docker"])
    return build_prepared(prepared, push=push, on_line=on_line)


def format_images(results: Sequence[ImageResult]) -> str:
    """One line per image: its references, flows, Dockerfile, pushed or not, and time."""
    lines = []
    for result in results:
        state = "built and pushed" if result.pushed else "built"
        lines.append(
            f"{', '.join(result.references)}: {state} in {result.seconds:.1f} s "
            f"({result.dockerfile}; flows {', '.join(result.flows)})"
        )
    return "\n".join(lines) or "no image built"


# -- offline job variable check ---------------------------------------------------------


@cache
def _bundled_templates() -> dict[str, dict[str, Any]]:
    spec = importlib.util.find_spec("prefect")  # finds the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location, "server", "api", "collections_data", "views")
        candidate = path / "aggregate-worker-metadata.json"
        if candidate.is_file():
            metadata = json.loads(candidate.read_text(encoding="utf-8"))
            return {
                str(worker["type"]): worker["default_base_job_configuration"]
                for collection in metadata.values()
                if isinstance(collection, dict)
                for worker in collection.values()
                if isinstance(worker, dict) and "default_base_job_configuration" in worker
            }
    return {}


def bundled_job_template(pool_type: str) -> dict[str, Any] | None:
    """The default base job template of work pool type ``pool_type`` (``process``,
    ``docker``) from the worker metadata that ships with Prefect, read as JSON without
    importing Prefect; None when Prefect or the type is unknown."""
    template = _bundled_templates().get(pool_type)
    return json.loads(json.dumps(template)) if template is not None else None


def job_variable_problems(specs: Iterable[DeploymentSpec]) -> list[Problem]:
    """Offline: each spec's job variables against the default job template of the pool
    type it needs (Prefect's bundled one), one problem per variable the template does not
    define, naming the variable and the work pool.  The server's own pool is checked
    again at deploy time (``pipeline.check_server``)."""
    from deploy_lib.pipeline import POOL_TYPES  # pipeline imports this module lazily

    problems: list[Problem] = []
    for spec in specs:
        pool_type = POOL_TYPES.get(spec.type, "")
        template = bundled_job_template(pool_type)
        if template is None:
            continue
        defined = set((template.get("variables") or {}).get("properties") or {})
        pool = spec.body.get("work_pool_name")
        problems += [
            Problem(
                f"job variable {name!r} is not defined by the default job template of "
                f"{pool_type} work pools (work pool {pool!r}); it accepts: "
                f"{', '.join(sorted(defined))}",
                deployment=spec.full_name,
                key=f"job_variables.{name}",
                source=spec.source,
            )
            for name in sorted(spec.body.get("job_variables") or {})
            if name not in defined
        ]
    return problems


# -- helpers ----------------------------------------------------------------------------


def _group(
    flows: Iterable[FlowMetadata], settings: Settings, git: GitInfo
) -> dict[tuple[str, str], list[tuple[FlowMetadata, str]]]:
    """(Dockerfile, context) -> [(flow, its image reference)], sorted; one entry per build."""
    groups: dict[tuple[str, str], list[tuple[FlowMetadata, str]]] = {}
    builders: dict[str, tuple[str, str]] = {}
    for flow in sorted(flows, key=lambda f: f.name):
        if not flow.dockerfile:
            raise InputError(
                f"flow {flow.name!r} ({flow.path}) has no Dockerfile beside it or in a parent "
                "folder, so it has no image to build"
            )
        dockerfile = PurePosixPath(Path(flow.dockerfile).as_posix())
        key = (dockerfile.as_posix(), dockerfile.parent.as_posix())
        ref = image_reference(flow.name, settings, git)
        other = builders.setdefault(ref, key)
        if other != key:
            raise InputError(
                f"image {ref} would be built from both {other[0]} and {key[0]}: flow "
                f"{flow.name!r} shares its image name with another flow; rename one"
            )
        groups.setdefault(key, []).append((flow, ref))
    return dict(sorted(groups.items()))


def _credentials(settings: Settings) -> tuple[str, str] | None:
    """(username, password) from ``registry_username`` / ``registry_password``, or None
    when neither is set (docker then uses its own stored login)."""
    username = str(settings.get("registry_username") or "")
    password = str(settings.get("registry_password") or "")
    if not username and not password:
        return None
    if not username:
        raise SettingsError(
            "is empty, but registry_password is set; set both to log in to the registry",
            key="registry_username",
        )
    if not password:
        raise SettingsError(
            "is empty, but registry_username is set; put it in .secrets.toml or "
            "DEPLOY_REGISTRY_PASSWORD",
            key="registry_password",
        )
    return username, password


def _registry_host(registry: str) -> str | None:
    """The registry host of ``docker.registry`` (``registry.example.com:5000/team`` ->
    ``registry.example.com:5000``); None for Docker Hub (``team`` or ``docker.io/team``)."""
    first = registry.strip("/").split("/", 1)[0]
    if not first or not ("." in first or ":" in first or first == "localhost"):
        return None
    return None if first in ("docker.io", "index.docker.io") else first


class _Cli:
    """Runs ``docker`` in the project root, streaming its output and keeping a tail."""

    def __init__(self, root: Path, masker: Masker, on_line: LineSink | None) -> None:
        found = shutil.which("docker")
        if found is None:
            raise DockerError(
                "the docker CLI is not installed (no 'docker' executable on PATH); install "
                "Docker to build images. Rendering, validating and deploying docker "
                "deployments do not need it."
            )
        self.docker = found
        self.root = root
        self.masker = masker
        self.on_line = on_line
        # Plain progress lines instead of a redrawn screen; no "What's next" hints.
        self.env = {**os.environ, "BUILDKIT_PROGRESS": "plain", "DOCKER_CLI_HINTS": "false"}

    def check_engine(self) -> None:
        code, tail = self._exec(["info", "--format", "{{.ServerVersion}}"], echo=False)
        if code != 0:
            raise DockerError(self._no_engine("docker info", tail))

    def login(self, username: str, password: str, *, registry: str) -> None:
        host = _registry_host(registry)
        args = ["login", "--username", username, "--password-stdin"] + ([host] if host else [])
        where = host or "Docker Hub"
        self.masker.add([password])
        self.run(
            args,
            failed=f"docker login to {where} as {username!r} failed (check registry_username "
            "and registry_password)",
            stdin=password,
        )

    def run(self, args: list[str], *, failed: str, stdin: str | None = None) -> None:
        code, tail = self._exec(args, stdin=stdin)
        if code == 0:
            return
        if _mentions_no_engine(tail):
            raise DockerError(self._no_engine(f"docker {args[0]}", tail))
        raise DockerError(f"{failed} (exit code {code}); docker's last lines:\n{_indent(tail)}")

    def _no_engine(self, command: str, tail: Sequence[str]) -> str:
        return (
            f"no Docker engine is reachable ({command} failed): start Docker, or point "
            "DOCKER_HOST at a running engine. Rendering, validating and deploying docker "
            f"deployments do not need one. docker said:\n{_indent(tail)}"
        )

    def _exec(
        self, args: list[str], *, stdin: str | None = None, echo: bool = True
    ) -> tuple[int, list[str]]:
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        try:
            proc = subprocess.Popen(
                [self.docker, *args],
                cwd=self.root,
                env=self.env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise DockerError(f"cannot run {self.docker}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        if stdin is not None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # docker may exit before reading
                proc.stdin.write(stdin)
                proc.stdin.close()
        for raw in proc.stdout:
            line = self.masker.text(raw.rstrip("\n"))
            tail.append(line)
            if echo and self.on_line is not None:
                self.on_line(line)
        return proc.wait(), list(tail)


def _mentions_no_engine(lines: Sequence[str]) -> bool:
    text = "\n".join(lines).lower()
    return any(words in text for words in _NO_ENGINE)


def _indent(lines: Sequence[str]) -> str:
    shown = [line for line in lines if line.strip()] or ["(no output)"]
    return "\n".join(f"  {line}" for line in shown)
