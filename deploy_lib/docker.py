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
- **References.**  The caller hands them in, computed by ``build.image_reference``, the
  same function that puts the image into the deployment, so a deploy after a build runs
  exactly the image built (``pipeline.build_images`` checks it).  The tag is
  ``docker.tag``, else a hash of the build context, so it moves only when the image's
  own files do.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

from deploy_lib.errors import DockerError, InputError, SettingsError
from deploy_lib.models import FlowMetadata, ImageResult, Masker, Settings

__all__ = ["ImageResult", "build_images", "missing_images"]

# docker's own words when it cannot reach an engine (CLI versions 20 to 28).
_NO_ENGINE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
)
_TAIL_LINES = 15
LineSink = Callable[[str], None]


def build_images(
    settings: Settings,
    images: Iterable[tuple[FlowMetadata, str]],
    *,
    push: bool,
    on_line: LineSink | None = None,
) -> list[ImageResult]:
    """Build the image of each flow's Dockerfile (once per Dockerfile), tag it with every
    flow's image reference (``images`` pairs a flow with its reference, as
    ``build.image_reference`` computes it) and, with ``push``, log in (when credentials
    are set) and push.

    Runs the docker CLI in the project root; each line docker prints goes to
    ``on_line`` with secrets masked.  Returns one ``ImageResult`` per build, sorted by
    Dockerfile.  Raises ``InputError`` for a flow without a Dockerfile or two builds that
    would share one reference, ``SettingsError`` for half-set registry credentials, and
    ``DockerError`` when the CLI is missing, no engine answers, or a command fails.
    """
    root = Path(settings.root).resolve()
    groups = _group(images)
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


def missing_images(settings: Settings, references: Iterable[str]) -> tuple[list[str], str]:
    """Which of ``references`` this machine cannot show an image for (``docker image
    inspect``, asked once for all), and why it could not look at all ("" when it
    looked): a deploy warns of them, since a deployment that runs an image nobody built
    fails on its worker."""
    wanted = sorted(set(references))
    if not wanted:
        return [], ""
    if shutil.which("docker") is None:
        return wanted, "docker is not installed here"
    try:
        cli = _Cli(Path(settings.root).resolve(), Masker(settings.secret_values), None)
        code, _ = cli._exec(["info", "--format", "{{.ServerVersion}}"], echo=False)
        if code != 0:
            return wanted, "no Docker engine answers here"
        missing = []
        for ref in wanted:
            code, _ = cli._exec(["image", "inspect", "--format", "{{.Id}}", ref], echo=False)
            if code != 0:
                missing.append(ref)
        return missing, ""
    except DockerError as exc:
        return wanted, str(exc)


# -- offline job variable check ---------------------------------------------------------


# -- helpers ----------------------------------------------------------------------------


def _group(
    images: Iterable[tuple[FlowMetadata, str]],
) -> dict[tuple[str, str], list[tuple[FlowMetadata, str]]]:
    """(Dockerfile, context) -> [(flow, its image reference)], sorted; one entry per build."""
    groups: dict[tuple[str, str], list[tuple[FlowMetadata, str]]] = {}
    builders: dict[str, tuple[str, str]] = {}
    for flow, ref in sorted(images, key=lambda pair: pair[0].name):
        if not flow.dockerfile:
            raise InputError(
                f"flow {flow.name!r} ({flow.path}) has no Dockerfile beside it or in a parent "
                "folder, so it has no image to build"
            )
        dockerfile = PurePosixPath(Path(flow.dockerfile).as_posix())
        key = (dockerfile.as_posix(), dockerfile.parent.as_posix())
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
        with proc:  # closes its pipes, and waits, however the block ends
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
        return proc.returncode, list(tail)


def _mentions_no_engine(lines: Sequence[str]) -> bool:
    text = "\n".join(lines).lower()
    return any(words in text for words in _NO_ENGINE)


def _indent(lines: Sequence[str]) -> str:
    shown = [line for line in lines if line.strip()] or ["(no output)"]
    return "\n".join(f"  {line}" for line in shown)
