"""Frozen values passed between the pipeline stages.

discover -> FlowMetadata; settings -> Settings; build -> deployment dicts;
validate -> Problem; plan -> Change.  Nothing here touches files or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

DEPLOYMENT_TYPES = ("python", "docker")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a flow function, as read from its source.

    ``annotation`` is the annotation's source text (``"int | None"``), ``default`` the
    default as a Python literal when it is one, else its source text, and
    ``default_is_literal`` says which of the two it is.
    """

    name: str
    annotation: str | None = None
    default: Any = None
    required: bool = True
    default_is_literal: bool = True
    kind: str = "positional_or_keyword"  # or keyword_only, var_positional, var_keyword


@dataclass(frozen=True)
class FlowMetadata:
    """A flow found in the source tree (or described by hand in a script).

    ``path`` is the file relative to the project root in POSIX form, for example
    ``flows/etl/daily.py``; ``module_path`` defaults to the dotted form of it.
    ``docstring`` is the function's whole docstring (``ast.get_docstring``): Prefect
    reads parameter descriptions from its ``Args:`` section into the parameter schema.
    """

    name: str
    function: str
    path: str
    module_path: str = ""
    is_async: bool = False
    description: str | None = None
    parameters: tuple[Parameter, ...] = ()
    dockerfile: str | None = None
    requirements: str | None = None
    line: int = 0
    problems: tuple[str, ...] = ()
    docstring: str | None = None

    def __post_init__(self) -> None:
        if not self.module_path:
            object.__setattr__(self, "module_path", module_path_for(self.path))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "problems", tuple(self.problems))

    @property
    def entrypoint(self) -> str:
        """The path form Prefect documents: ``flows/etl/daily.py:daily_etl``."""
        return f"{self.path}:{self.function}"

    @property
    def module_entrypoint(self) -> str:
        """The module form: ``flows.etl.daily:daily_etl``."""
        return f"{self.module_path}:{self.function}"

    @property
    def is_valid(self) -> bool:
        return not self.problems

    @property
    def supports_python_deployment(self) -> bool:
        """Every valid flow can run as a native Python process (seed requirement 2.3)."""
        return self.is_valid

    @property
    def supports_docker_deployment(self) -> bool:
        """A valid flow with a Dockerfile beside it (or above it) can also run in Docker."""
        return self.is_valid and self.dockerfile is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "function": self.function,
            "path": self.path,
            "entrypoint": self.entrypoint,
            "module_entrypoint": self.module_entrypoint,
            "is_async": self.is_async,
            "description": self.description,
            "parameters": [
                {
                    "name": p.name,
                    "annotation": p.annotation,
                    "default": p.default,
                    "required": p.required,
                }
                for p in self.parameters
            ],
            "dockerfile": self.dockerfile,
            "requirements": self.requirements,
            "line": self.line,
            "is_valid": self.is_valid,
            "problems": list(self.problems),
            "supports_python_deployment": self.supports_python_deployment,
            "supports_docker_deployment": self.supports_docker_deployment,
        }


def module_path_for(path: str) -> str:
    """``flows/etl/daily.py`` -> ``flows.etl.daily`` (``__init__.py`` names its package)."""
    pure = PurePosixPath(path)
    parts = list(pure.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, said so that a person can find and fix it.

    ``path`` and ``line`` locate a file; ``deployment`` and ``key`` (a dotted key path
    such as ``job_variables.env.PYTHONPATH``) locate a value; ``source`` says where that
    value came from (a template file or a settings key).
    """

    message: str
    path: str | None = None
    line: int | None = None
    deployment: str | None = None
    key: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = []
        if self.deployment:
            where.append(f"deployment {self.deployment!r}")
        if self.key:
            where.append(f"key {self.key!r}")
        if self.path:
            where.append(f"{self.path}:{self.line}" if self.line else self.path)
        if self.source and self.source != self.path:
            where.append(f"from {self.source}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "deployment": self.deployment,
            "key": self.key,
            "source": self.source,
        }


@dataclass(frozen=True)
class Settings:
    """The effective settings of one environment: a frozen value, never a global.

    ``data`` holds every merged key (nested mappings; treat as read-only);
    ``sources`` maps a dotted key to where its value came from (``default``,
    ``environment [staging]``, ``secrets file``, ``env var DEPLOY_X``);
    ``secret_keys`` holds the dotted keys whose values must be masked, and
    ``secret_values`` the raw strings that must never be printed.  ``warnings`` are
    things worth telling the user that do not stop the run (a ``.secrets.toml``
    readable by others); callers print them.

    The typed properties below are thin views over ``get()``; they return fresh copies
    of lists and tables, so callers may change what they get.
    """

    env: str
    root: Any  # pathlib.Path of the project root
    data: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)
    secret_keys: frozenset[str] = frozenset()
    secret_values: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()

    def get(self, dotted: str, default: Any = None) -> Any:
        """Look up ``"a.b.c"`` in ``data``; ``default`` when any part is missing."""
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def api_url(self) -> str:
        """The Prefect API URL; ``""`` means the embedded local server."""
        return str(self.get("api_url") or "")

    @property
    def api_key(self) -> str:
        return str(self.get("api_key") or "")

    def work_pool(self, type: str) -> str:
        """The work pool for a deployment type (``python`` or ``docker``)."""
        return str(self.get(f"work_pool.{type}") or "")

    @property
    def work_queue(self) -> str:
        return str(self.get("work_pool.queue") or "")

    @property
    def tags(self) -> list[str]:
        return list(self.get("tags") or [])

    @property
    def parameters(self) -> dict[str, Any]:
        return deepcopy(dict(self.get("parameters") or {}))

    @property
    def env_vars(self) -> dict[str, str]:
        """The job's environment: settings < .env < .env.<env> < DEPLOY_ENV_VARS__*."""
        return dict(self.get("env_vars") or {})

    @property
    def entrypoint_style(self) -> str:
        """``path`` (flows/etl/daily.py:daily_etl) or ``module`` (flows.etl.daily:daily_etl)."""
        return str(self.get("entrypoint_style") or "path")

    @property
    def deployment_types(self) -> list[str]:
        return list(self.get("deployment_types") or [])

    @property
    def apply_concurrency(self) -> int:
        return int(self.get("apply_concurrency") or 1)

    @property
    def flow_roots(self) -> list[str]:
        return list(self.get("flow_roots") or [])

    @property
    def exclude(self) -> list[str]:
        return list(self.get("exclude") or [])

    def flow_overrides(self, flow_name: str) -> dict[str, Any]:
        """``[default.flows.<name>]`` merged with ``[<env>.flows.<name>]``; {} if none.

        Looked up directly, not by dotted key, because flow names may contain dots.
        """
        flows = self.get("flows")
        found = flows.get(flow_name) if isinstance(flows, Mapping) else None
        return deepcopy(dict(found)) if isinstance(found, Mapping) else {}


MANAGED_BY_TAG = "managed-by:deploy-lib"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment this tool wants on the server.

    ``body`` is the deployment dict, with exactly these keys (Prefect's own field names,
    so it maps onto POST /deployments/ one to one): ``name``, ``flow_name``,
    ``entrypoint``, ``description``, ``version``, ``work_pool_name``,
    ``work_queue_name``, ``tags``, ``parameters``, ``parameter_openapi_schema``,
    ``job_variables``, ``pull_steps``, ``schedules``, ``concurrency_limit``, ``paused``,
    ``enforce_parameter_schema``.  ``schedules`` use the server's shape, one item per
    schedule: ``{"schedule": {"cron": "0 6 * * *", "timezone": "UTC"}, "active": True}``
    (or ``{"interval": 3600.0, ...}`` / ``{"rrule": "...", ...}`` inside ``schedule``);
    ``pull_steps`` use Prefect's step shape, e.g.
    ``{"prefect.deployments.steps.set_working_directory": {"directory": "/abs/root"}}``.
    ``type`` is ``python`` or ``docker``; ``source`` names
    the template file it was rendered from, for error messages; ``sources`` maps a
    dotted body key (``parameters.debug``, ``job_variables.env.X``) to the settings key
    its value came from (build records them), so a problem can name that key too.
    """

    type: str
    env: str
    flow: FlowMetadata
    body: Mapping[str, Any]
    source: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.body["name"])

    @property
    def full_name(self) -> str:
        """``flow-name/deployment-name``, as Prefect's CLI names deployments."""
        return f"{self.body['flow_name']}/{self.body['name']}"


def plain(value: Any) -> Any:
    """Nested mappings and sequences (Dynaconf boxes, MappingProxies, tuples) as fresh
    plain dicts and lists, ready for YAML/JSON and safe to change."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
