"""The Python API: deployments from a script, through the same pipeline as the tasks.

For people who script deployments rather than run ``invoke deploy``::

    from deploy_lib import ConfigurationManager, FlowMetadata, PythonDeploymentCreator

    config = ConfigurationManager()                  # settings.toml of this project
    creator = PythonDeploymentCreator(config)
    flow = FlowMetadata(name="hello", function="hello", path="flows/hello.py")
    body = creator.create_deployment(flow, "production")     # the deployment dict
    problems = creator.validate_deployment_config(body)      # [] when valid
    deployment_id = creator.deploy_to_prefect(flow, "production")

    result = deploy_flows("staging")                 # every flow, like `invoke deploy`
    result.raise_if_failed()

This is a facade and nothing more: a body comes from ``templates.build_specs`` (build,
then render through the environment's template), problems from
``validate.validate_specs``, a single write from ``apply.deploy_one`` and a bulk
deploy from ``pipeline.prepare`` + ``pipeline.deploy``.  So a script gets exactly the
deployments the tasks would make, and the same ``DeployError``s.

A ``FlowMetadata`` written by hand with just a name, a function and a path is completed
from that file's source (parameters and their schema, description, Dockerfile), as
discovery reads it; one that says more is taken as given, and a warning says where it
differs from the source.  Warnings are kept in ``creator.warnings`` and logged on the
``deploy_lib`` logger.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from deploy_lib import pipeline
from deploy_lib.errors import DiscoveryError, InputError, SettingsError
from deploy_lib.models import (
    ApplyResult,
    DeploymentSpec,
    Discovery,
    FlowMetadata,
    GitInfo,
    Problem,
    Settings,
)

__all__ = [
    "ConfigurationManager",
    "DockerDeploymentCreator",
    "PythonDeploymentCreator",
    "deploy_flows",
    "find_project_root",
]

SETTINGS_FILE = "settings.toml"
logger = logging.getLogger("deploy_lib")
# What discovery reads from the source, which a hand-written FlowMetadata may leave out.
_FROM_SOURCE = ("parameters", "description", "docstring", "dockerfile", "requirements", "types", "is_async")


def find_project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current directory) that
    holds a ``settings.toml``.  Raises ``SettingsError`` when there is none."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    raise SettingsError(
        f"no {SETTINGS_FILE} in {here} or any folder above it; pass the project root "
        "(root=...) or run from inside the project"
    )


class ConfigurationManager:
    """The layered settings of one project (``settings.toml``, ``.secrets.toml``,
    ``DEPLOY_*`` variables, ``.env`` files), loaded once per environment.

    ``root`` is the project root; by default the nearest folder at or above the current
    directory that holds a ``settings.toml``.  Settings, discovery and git facts are
    cached for the life of the object (one script run); ``clear()`` forgets them, for a
    script that changes files or ``DEPLOY_*`` variables as it goes.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = find_project_root() if root is None else Path(root).resolve()
        if not (self.root / SETTINGS_FILE).is_file():
            raise SettingsError(
                f"the project root must hold a {SETTINGS_FILE}", path=str(self.root / SETTINGS_FILE)
            )
        self._settings: dict[str, Settings] = {}
        self._discoveries: dict[tuple[tuple[str, ...], tuple[str, ...]], Discovery] = {}
        self._git: GitInfo | None = None

    def __repr__(self) -> str:
        return f"ConfigurationManager({str(self.root)!r})"

    def environments(self) -> list[str]:
        """The environments settings.toml defines, in file order."""
        return pipeline.environments(self.root)

    def settings(self, env: str | None = None) -> Settings:
        """The frozen ``Settings`` of ``env`` (default ``$DEPLOY_ENV``, else development).

        Raises ``UnknownEnvironmentError`` / ``SettingsError`` naming the file and key."""
        name = pipeline.default_env(env)
        cached = self._settings.get(name)
        if cached is None:
            cached = self._settings[name] = pipeline.load(name, self.root)
        return cached

    def get(self, env: str | None, key: str, default: Any = None) -> Any:
        """One setting of ``env`` by dotted key (``work_pool.python``); ``default`` when
        it is not set.  Tables and lists are copies: changing them changes nothing."""
        return copy.deepcopy(self.settings(env).get(key, default))

    def discovery(self, env: str | None = None) -> Discovery:
        """The flows under ``env``'s ``flow_roots`` (read from source, never imported)."""
        settings = self.settings(env)
        key = (tuple(settings.flow_roots), tuple(settings.exclude))
        found = self._discoveries.get(key)
        if found is None:
            found = self._discoveries[key] = pipeline.discover(settings)
        return found

    def flows(self, env: str | None = None) -> tuple[FlowMetadata, ...]:
        """Every discovered flow, sorted by path and line."""
        return self.discovery(env).flows

    def find_flow(self, name_or_entrypoint: str, env: str | None = None) -> FlowMetadata:
        """The discovered flow with this name or entrypoint (either form).

        Raises ``DiscoveryError`` listing the flows that were found."""
        discovery = self.discovery(env)
        flow = pipeline.find_flow(discovery, name_or_entrypoint)
        if flow is None:
            known = ", ".join(sorted(f.name for f in discovery.flows)) or "none"
            raise DiscoveryError(
                f"no flow {name_or_entrypoint!r} was discovered under "
                f"{', '.join(self.settings(env).flow_roots)}; discovered flows: {known}",
            )
        return flow

    def git(self) -> GitInfo:
        """What git says about the project (commit, branch, dirty); asked once."""
        if self._git is None:
            self._git = pipeline.git(self.root)
        return self._git

    def clear(self) -> None:
        """Forget the cached settings, discoveries and git facts."""
        self._settings.clear()
        self._discoveries.clear()
        self._git = None


class _DeploymentCreator:
    """What both creators share; ``deployment_type`` picks the python or docker spec."""

    deployment_type: ClassVar[str]

    def __init__(self, config_manager: ConfigurationManager | None = None) -> None:
        self.config = config_manager if config_manager is not None else ConfigurationManager()
        # The warnings of the last create/deploy (parameters a flow does not accept, ...).
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- public -------------------------------------------------------------------------

    def create_deployment(self, flow: FlowMetadata, env: str) -> dict[str, Any]:
        """The deployment dict of ``flow`` in ``env`` (Prefect's field names, ready for
        POST /deployments/), built from the settings and rendered through the
        environment's template.  Reads the flow's files (its version hash); writes
        nothing.  Raises ``InputError`` when ``env`` makes no deployment of this type for
        the flow, and ``SettingsError`` / ``TemplateError`` / ``DiscoveryError`` for bad
        input.  ``self.warnings`` holds what is worth telling (skipped parameters)."""
        return copy.deepcopy(dict(self._spec(flow, env).body))

    def validate_deployment_config(
        self, config: Mapping[str, Any], env: str | None = None
    ) -> list[Problem]:
        """Every problem with a deployment dict (``[]`` when it is valid): the strict
        schema of this deployment type, and that its entrypoint points at a discovered
        flow whose signature fits its parameters.  ``env`` chooses whose ``flow_roots``
        are searched; by default the ``env:<name>`` tag of the dict says.  Pure but for
        reading the flow files once (discovery).  The same checks as ``invoke validate``
        (``pipeline.check``), job variables against Prefect's default job templates
        included."""
        if not isinstance(config, Mapping):
            return [
                Problem(
                    f"a deployment config must be a mapping (dict), got {type(config).__name__}"
                )
            ]
        env = env or _env_from_tags(config.get("tags"), self.config.environments())
        discovery = self.config.discovery(env)
        spec = DeploymentSpec(
            type=self.deployment_type,
            env=env or "",
            flow=_flow_for(config, discovery),
            body=config,
        )
        return pipeline.check([spec], discovery)

    def get_deployment_template(self, env: str) -> dict[str, Any]:
        """The parsed template (placeholders not filled) that ``env`` renders this type
        through: ``templates/<type>_<env>.yaml`` when it exists, else the base
        ``<type>_deployment.yaml``.  Raises ``TemplateError`` for a missing or bad file."""
        return pipeline.template(self.config.settings(env), self.deployment_type)

    def template_source(self, env: str) -> str:
        """Which template file ``env`` uses, relative to the project root."""
        return pipeline.template_source(self.config.settings(env), self.deployment_type)

    def deploy_to_prefect(self, flow: FlowMetadata, env: str) -> str:
        """Create or update the deployment of ``flow`` in ``env`` and return its id.

        As ``invoke deploy`` does for each deployment: validate first, check that the
        work pool exists and is of the right type, then write through the API only when
        something changed (an unchanged deployment is not written; its id is returned).
        Side effects: requests to the environment's Prefect API (the embedded local
        server is started when the environment names no api_url); holds the
        environment's lock, as ``invoke deploy`` does, while it writes.  Raises
        ``ValidationFailed`` before any write, and the deployment's ``ApiError`` when the
        server refuses it."""
        spec = self._spec(flow, env)
        deployment_id, warnings = pipeline.deploy_spec(
            self.config.settings(env),
            spec,
            self.config.discovery(env),
            command="deploy_to_prefect",
        )
        self.warnings += warnings
        return deployment_id

    # -- internals ----------------------------------------------------------------------

    def _spec(self, flow: FlowMetadata, env: str) -> DeploymentSpec:
        if not isinstance(flow, FlowMetadata):
            raise InputError(
                f"expected a FlowMetadata, got {type(flow).__name__}: describe the flow with "
                "FlowMetadata(name=..., function=..., path=...) or ConfigurationManager.find_flow"
            )
        if not flow.is_valid:
            raise DiscoveryError(
                f"flow {flow.name!r} has problems and gets no deployment: "
                + "; ".join(flow.problems),
                path=flow.path,
            )
        flow = self._completed(flow, env)
        self._check_type(flow)
        settings = self.config.settings(env)
        specs, warnings = pipeline.build_specs(
            [flow], settings, git=self.config.git(), now=datetime.now(timezone.utc)
        )
        self.warnings = [*warnings, *self._signature_warnings(flow, env)]
        for warning in self.warnings:
            logger.warning("%s", warning)
        for spec in specs:
            if spec.type == self.deployment_type:
                return spec
        raise InputError(
            f"environment {settings.env!r} builds no {self.deployment_type} deployment for "
            f"flow {flow.name!r}: check deployment_types and flows.{flow.name}.enabled / "
            f"flows.{flow.name}.types in settings.toml"
        )

    def _completed(self, flow: FlowMetadata, env: str) -> FlowMetadata:
        """``flow`` with what its source says filled in, when it was written by hand
        with only a name, a function and a path (everything else left at its default)."""
        blank = FlowMetadata(name=flow.name, function=flow.function, path=flow.path)
        if any(getattr(flow, f) != getattr(blank, f) for f in _FROM_SOURCE):
            return flow  # described on purpose: taken as given
        found = pipeline.find_flow(self.config.discovery(env), flow.entrypoint)
        if found is None:
            return flow
        return dataclasses.replace(
            flow, **{f: getattr(found, f) for f in _FROM_SOURCE}, line=found.line, notes=found.notes
        )

    def _signature_warnings(self, flow: FlowMetadata, env: str) -> list[str]:
        """A warning when ``flow`` (described by hand, say) lists other parameters than
        the source declares: its deployment would get the wrong parameter schema."""
        found = pipeline.find_flow(self.config.discovery(env), flow.entrypoint)
        if found is None or found.parameters == flow.parameters:
            return []
        declared = ", ".join(p.name for p in found.parameters) or "none"
        given = ", ".join(p.name for p in flow.parameters) or "none"
        return [
            f"flow {flow.name!r} was described with parameters ({given}) other than the "
            f"ones {flow.path} declares ({declared}), so its parameter schema and "
            f"parameters follow the description; use ConfigurationManager.find_flow"
            f"({flow.name!r}) for the metadata read from the source"
        ]

    def _check_type(self, flow: FlowMetadata) -> None:
        """Refuse a flow this deployment type cannot run (the docker creator's check)."""


class PythonDeploymentCreator(_DeploymentCreator):
    """Deployments that run a flow as a native Python process (a ``process`` work pool).

    ``config_manager`` defaults to a ``ConfigurationManager`` of the project around the
    current directory."""

    deployment_type = "python"


class DockerDeploymentCreator(_DeploymentCreator):
    """Deployments that run a flow in its Docker image (a ``docker`` work pool); only
    for flows with a Dockerfile beside them or above them under the flow root."""

    deployment_type = "docker"

    def _check_type(self, flow: FlowMetadata) -> None:
        if flow.dockerfile is None:
            raise InputError(
                f"flow {flow.name!r} ({flow.path}) has no Dockerfile, so it has no docker "
                "deployment: add a Dockerfile beside the flow file (or above it under the "
                "flow root), set FlowMetadata(dockerfile=...), or use PythonDeploymentCreator"
            )


def deploy_flows(
    env: str,
    *,
    root: str | os.PathLike[str] | None = None,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    prune: bool = False,
    concurrency: int | None = None,
) -> ApplyResult:
    """Deploy the flows of the project at ``root`` to ``env``, as ``invoke deploy`` does.

    Discovers, builds, renders and validates every deployment (or those of
    ``flow_names`` / ``types``), checks the work pools, plans against the server and
    writes only what changed, ``concurrency`` at a time (default: ``apply_concurrency``);
    with ``prune``, deletes the deployments this tool manages in ``env`` that are no
    longer desired.  Holds the environment's lock meanwhile.  Returns the
    per-deployment results (created, updated, unchanged, deleted, skipped, failed, each
    with its id); call ``result.raise_if_failed()`` to turn failures into
    ``PartialFailure``.  Raises ``InputError``s before anything is written and
    ``LockHeld`` when another run holds the lock."""
    project = find_project_root() if root is None else Path(root).resolve()
    outcome = pipeline.deploy(
        pipeline.load(env, project),
        flow_names=flow_names,
        types=types,
        prune=prune,
        concurrency=concurrency,
        command="deploy_flows",
    )
    assert outcome.result is not None  # not a dry run
    return outcome.result


def _env_from_tags(tags: Any, environments: Sequence[str]) -> str | None:
    """The environment an ``env:<name>`` tag names, when it is one settings.toml knows."""
    if not isinstance(tags, (list, tuple)):
        return None
    for tag in tags:
        if isinstance(tag, str) and tag.startswith("env:") and tag[4:] in environments:
            return tag[4:]
    return None


def _flow_for(config: Mapping[str, Any], discovery: Discovery) -> FlowMetadata:
    """The discovered flow the config's entrypoint points at, else one described by the
    config itself (validation then says why the entrypoint is wrong)."""
    entrypoint = config.get("entrypoint")
    if isinstance(entrypoint, str) and ":" in entrypoint:
        found = pipeline.find_flow(discovery, entrypoint)
        if found is not None:
            return found
        target, _, function = entrypoint.rpartition(":")
    else:
        target, function = "", ""
    name = config.get("flow_name") or config.get("name") or "unknown"
    path = (
        target if target.endswith(".py") else (target.replace(".", "/") + ".py" if target else "")
    )
    return FlowMetadata(name=str(name), function=function or "unknown", path=path or "unknown.py")
