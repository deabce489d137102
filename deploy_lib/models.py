"""Frozen values passed between the pipeline stages, and the masking of secrets.

discover -> Discovery of FlowMetadata; settings -> Settings; build -> BuildContext;
templates -> DeploymentSpec; validate -> Problem; plan -> Plan of Change; apply ->
ApplyResult of Result.  Every stage imports this module (and ``errors``) and no other
stage, so these are the only types two stages share.  Nothing here touches files or
the network.

A value is secret when it came from ``.secrets.toml``, from a secret-marked env-file
key, or sits under a key whose name looks like a secret (token, key, password, secret).
``Masker`` holds the raw secret strings of a run and replaces them with ``****`` in
text and in nested data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy_lib.errors import DeployError, DiscoveryError, PartialFailure

# The deployment types a flow gets when settings name none.  Every work pool type with a
# known job template is a deployment type too (``pools``: python runs on process pools,
# any other type on pools of its own name).
DEPLOYMENT_TYPES = ("python", "docker")
PROCESS = "process"


def _block_slug(text: str) -> str:
    """A block name part: lower-case letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def secret_placeholder(block_name: str) -> str:
    """What a job variable holds instead of a secret: the worker resolves it at run time."""
    return "{{ prefect.blocks.secret." + block_name + " }}"


# A deployment's label recording the salted hash of one secret it was written with:
# ``deploy-lib.secret.<ENV_VAR>`` = ``<salt>$<sha256 of salt and value>``.
LABEL_SECRET_PREFIX = "deploy-lib.secret."
# A plan's change of a secret kept in a Secret block: ``secrets.<VAR>``, its sides one
# of these words (the value is never in a plan).
SECRET_CHANGE_PREFIX = "secrets."
SECRET_STATES = frozenset({"(stored)", "secret changed", "new secret", "secret block missing"})


def salted_hash(value: str, salt: str) -> str:
    """``<salt>$<digest>``: a secret's value as a label may hold it (never reversible)."""
    digest = hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()
    return f"{salt}${digest}"


def matches_salted_hash(value: str, recorded: Any) -> bool:
    """Whether ``recorded`` (a ``salted_hash``) was made from ``value``."""
    if not isinstance(recorded, str) or "$" not in recorded:
        return False
    salt = recorded.split("$", 1)[0]
    return hmac.compare_digest(salted_hash(value, salt), recorded)


def pool_type(deployment_type: str) -> str:
    """The work pool type a deployment type runs on (``python`` -> ``process``; every
    other type runs on pools of its own name)."""
    return PROCESS if deployment_type == "python" else deployment_type


def deployment_type(pool_type_: str) -> str:
    """The deployment type of a work pool type (``process`` -> ``python``)."""
    return "python" if pool_type_ == PROCESS else pool_type_


def used_types(data: Mapping[str, Any]) -> list[str]:
    """The deployment types settings ``data`` ask for: ``deployment_types`` (python and
    docker when unset) and every flow's ``types``, in the order first named; values
    that are no type's spelling are left to the settings' rules."""
    named = data.get("deployment_types")
    lists = [named if named is not None else list(DEPLOYMENT_TYPES)]
    flows = data.get("flows")
    for override in flows.values() if isinstance(flows, Mapping) else ():
        if isinstance(override, Mapping):
            lists.append(override.get("types"))
    found: list[str] = []
    for items in lists:
        for item in items if isinstance(items, list) else ():
            if is_type_name(item) and item not in found:
                found.append(item)
    return found


# What a deployment does when its concurrency limit is reached (Prefect's
# ConcurrencyLimitStrategy).
COLLISION_STRATEGIES = ("ENQUEUE", "CANCEL_NEW")
# A deployment type as settings may name one: a work pool type's spelling.
TYPE_NAME = r"[a-z][a-z0-9:_-]{0,62}"
_TYPE_NAME = re.compile(TYPE_NAME + r"\Z")


def is_type_name(value: Any) -> bool:
    """Whether ``value`` is spelt as a deployment type may be."""
    return isinstance(value, str) and bool(_TYPE_NAME.match(value))


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
    # The annotation with every name resolved (``datetime.datetime`` for ``dt``, an
    # alias replaced by its value, ``__types__.Record`` for a class in ``FlowMetadata
    # .types``), when discovery could resolve it; and why not, when it could not.
    resolved: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class EnumMember:
    """``Color.RED`` as read from source: its class's name, its name and its value."""

    enum: str
    name: str
    value: Any


def json_value(value: Any) -> Any:
    """A literal as pydantic writes it in JSON mode: enum members as their value, tuples
    and sets as lists, bytes as UTF-8 text, keys as strings.  Raises ``ValueError`` for
    what JSON cannot hold."""
    if isinstance(value, EnumMember):
        return json_value(value.value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {_json_key(k): json_value(v) for k, v in value.items()}
    raise ValueError(f"a {type(value).__name__} is no JSON value")


def _json_key(key: Any) -> str:
    if isinstance(key, EnumMember):
        key = key.value
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, (int, float)):
        return str(key)
    raise ValueError(f"a {type(key).__name__} is no JSON key")


# A resolved annotation names a class discovery described as ``__types__.<key>``.
TYPE_REFERENCE = "__types__"
# Annotated[int, __field__(ge=0)]: the Field(...) of an Annotated, as discovery read it.
FIELD_MARK = "__field__"
# Field(...) keywords that become JSON schema constraints.
FIELD_CONSTRAINTS = frozenset(
    {"gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern"}
)


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
    # The classes the parameters' annotations name (pydantic models, enums, dataclasses,
    # TypedDicts), as discovery read them from source: key -> plain description.
    types: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # What a reader should know that is no problem (a decorator that may change the
    # signature, a parameter whose type could not be read).
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.module_path:
            object.__setattr__(self, "module_path", module_path_for(self.path))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "problems", tuple(self.problems))
        object.__setattr__(self, "notes", tuple(self.notes))

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

    def is_named(self, selector: str) -> bool:
        """Whether a ``--flow`` value names this flow: its name (every file that defines
        it), or an entrypoint in either form (``flows/a.py:f``, ``flows.a:f``; a leading
        ``./`` is ignored) for this one function."""
        if selector == self.name:
            return True
        target = selector.strip().removeprefix("./")
        return ":" in target and target in (self.entrypoint, self.module_entrypoint)

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
            "parameters": [_parameter_dict(p) for p in self.parameters],
            "dockerfile": self.dockerfile,
            "requirements": self.requirements,
            "line": self.line,
            "is_valid": self.is_valid,
            "problems": list(self.problems),
            "supports_python_deployment": self.supports_python_deployment,
            "supports_docker_deployment": self.supports_docker_deployment,
            "notes": list(self.notes),
        }


def _parameter_dict(param: Parameter) -> dict[str, Any]:
    """A parameter for ``discover --json``: a default is either ``literal`` (its value)
    or ``expression`` (its source text, never under ``default``)."""
    data: dict[str, Any] = {
        "name": param.name,
        "annotation": param.annotation,
        "required": param.required,
    }
    if param.required or param.kind in ("var_positional", "var_keyword"):
        data["default_kind"] = None
    elif param.default_is_literal:
        data["default_kind"] = "literal"
        data["default"] = param.default
    else:
        data["default_kind"] = "expression"
        data["default_source"] = param.default
    return data


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
    def project(self) -> str:
        """This project's name on the server (``project``, else the folder's name)."""
        return str(self.get("project") or "project")

    @property
    def secret_env_vars(self) -> list[str]:
        """The job environment variables whose values are secret (from .secrets.toml, a
        secret-marked env-file key or DEPLOY_ variable, a secret-looking name, or
        ``masked_env_vars``), sorted."""
        return sorted(k.split(".", 1)[1] for k in self.secret_keys if k.startswith("env_vars."))

    @property
    def secret_blocks(self) -> bool:
        """Whether secret job environment variables are stored as Prefect Secret blocks
        (the default) rather than as plain text in job_variables."""
        return bool(self.get("secret_blocks", True))

    def secret_block_prefix(self) -> str:
        """What the names of this project's Secret blocks in this environment start with."""
        return f"deploy-lib-{_block_slug(self.project)}-{_block_slug(self.env)}-"

    def secret_block_name(self, env_var: str) -> str:
        """The Secret block that holds environment variable ``env_var``'s value."""
        return self.secret_block_prefix() + _block_slug(env_var)

    @property
    def api_url(self) -> str:
        """The Prefect API URL; ``""`` means the embedded local server.  With only
        ``api_urls`` set, the first of them."""
        return str(self.get("api_url") or "") or next(iter(self.api_urls), "")

    @property
    def api_urls(self) -> list[str]:
        """Every API process of the environment's server (replicas without a load
        balancer); writes are spread across them.  Empty: ``api_url`` alone."""
        return [str(u) for u in self.get("api_urls") or [] if u]

    @property
    def api_key(self) -> str:
        return str(self.get("api_key") or "")

    @property
    def ca_bundle(self) -> str:
        """The CA bundle for an https api_url (relative to the project root), or ""."""
        value = str(self.get("ca_bundle") or "")
        return str(Path(self.root) / value) if value else ""

    def work_pool(self, type: str) -> str:
        """The work pool for a deployment type (``python``, ``docker``, ``kubernetes``...)."""
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
        """The types every flow gets (those it can have); all of them when unset."""
        types = self.get("deployment_types")
        return list(DEPLOYMENT_TYPES if types is None else types)

    @property
    def used_types(self) -> list[str]:
        """``deployment_types`` and then every type a flow's own ``types`` names."""
        return used_types(self.data)

    @property
    def apply_concurrency(self) -> int:
        return int(self.get("apply_concurrency") or 1)

    @property
    def deadline(self) -> float:
        """Seconds a deploy may take in all; 0 means no limit."""
        return float(self.get("deadline") or 0)

    @property
    def flow_roots(self) -> list[str]:
        return list(self.get("flow_roots") or [])

    @property
    def exclude(self) -> list[str]:
        return list(self.get("exclude") or [])

    @property
    def secret_body_paths(self) -> list[str]:
        """Where the secret settings land in a deployment body: ``env_vars.X`` ->
        ``job_variables.env.X``, ``parameters.X`` and ``flows.<f>.parameters.X`` ->
        ``parameters.X`` (so a short secret is masked there by its key)."""
        paths = set()
        for key in self.secret_keys:
            if key.startswith("env_vars."):
                paths.add("job_variables.env." + key.split(".", 1)[1])
            elif key.startswith("parameters."):
                paths.add(key)
            elif key.startswith("flows.") and ".parameters." in key:
                paths.add("parameters." + key.split(".parameters.", 1)[1])
        return sorted(paths)

    @property
    def follow_outside_links(self) -> bool:
        return bool(self.get("follow_outside_links", False))

    def effective(self, show_secrets: bool = False) -> dict[str, Any]:
        """A deep copy of ``data`` with every secret replaced by ``****`` (unless
        ``show_secrets``)."""
        data = deepcopy(dict(self.data))
        if show_secrets:
            return data
        masked: dict[str, Any] = Masker(self.secret_values).data(data, self.secret_keys)
        return masked

    def explain(self, show_secrets: bool = False) -> list[tuple[str, Any, str]]:
        """One ``(dotted key, value, source)`` row per leaf value, secrets masked unless
        ``show_secrets``."""
        return [
            (key, value, self.sources.get(key, "default"))
            for key, value in dotted_leaves(self.effective(show_secrets))
        ]

    def flow_overrides(self, flow_name: str, entrypoints: Iterable[str] = ()) -> dict[str, Any]:
        """``[default.flows.<name>]`` merged with ``[<env>.flows.<name>]``; {} if none.

        With ``entrypoints`` (a flow's path and module forms), a table keyed by one of
        them (``[default.flows."flows/a.py:main"]``) goes over the name's table, key by
        key: it is how two files that share a flow name get their own settings.
        Looked up directly, not by dotted key, because flow names may contain dots.
        """
        flows = self.get("flows")
        if not isinstance(flows, Mapping):
            return {}
        merged: dict[str, Any] = {}
        for key in (flow_name, *entrypoints):
            found = flows.get(key)
            if isinstance(found, Mapping):
                merged.update(deepcopy(dict(found)))
        return merged


MANAGED_BY_TAG = "managed-by:deploy-lib"
# Ownership: every deployment this tool writes carries these tags (the server filters
# on tags), and the labels below (a field the API keeps) with the fingerprint of the
# body it wrote.  A user's tag may not start with any of these prefixes.
PROJECT_TAG_PREFIX = "project:"
ENV_TAG_PREFIX = "env:"
RUNTIME_TAG_PREFIX = "runtime:"
RESERVED_TAG_PREFIXES = (PROJECT_TAG_PREFIX, ENV_TAG_PREFIX, RUNTIME_TAG_PREFIX, "managed-by")
LABEL_FINGERPRINT = "deploy-lib.fingerprint"
LABEL_FIELDS = "deploy-lib.fields"
# ``<flow id>/<flow name>``: the flow a deployment was written for, so a listing of this
# tool's deployments needs no read of their flows (a flow's name never changes).
LABEL_FLOW = "deploy-lib.flow"
# The deployment id a trigger's automation is computed with before the deployment
# exists; apply puts the real one in its place.
AUTOMATION_DEPLOYMENT_MARK = "00000000-0000-4000-8000-00000000d1d0"
# The hash of the automations a deployment's triggers made when this tool wrote it.
LABEL_TRIGGERS = "deploy-lib.triggers"


def ownership_tags(project: str, env: str) -> list[str]:
    """The tags that say a deployment is this project's, in this environment."""
    return [MANAGED_BY_TAG, f"{PROJECT_TAG_PREFIX}{project}", f"{ENV_TAG_PREFIX}{env}"]


@dataclass(frozen=True)
class Owner:
    """Who a live deployment belongs to, read from its tags."""

    managed: bool
    project: str | None
    env: str | None

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Owner:
        tags = [str(t) for t in item.get("tags") or ()]

        def value(prefix: str) -> str | None:
            found = sorted(t[len(prefix) :] for t in tags if t.startswith(prefix))
            return found[0] if found else None

        return cls(MANAGED_BY_TAG in tags, value(PROJECT_TAG_PREFIX), value(ENV_TAG_PREFIX))

    def is_ours(self, project: str, env: str) -> bool:
        return self.managed and self.project == project and self.env == env

    def may_write(self, project: str, env: str) -> bool:
        """Ours, or written by this tool for ``env`` before projects were recorded (it
        carries no project tag): a deploy may write it."""
        return self.is_ours(project, env) or (
            self.managed and self.project is None and self.env == env
        )

    def describe(self) -> str:
        if not self.managed:
            return "not managed by this project (made by hand or by prefect deploy)"
        if self.project is None:
            return f"written by deploy-lib for env {self.env!r} before projects were recorded"
        return f"owned by project {self.project!r}, env {self.env!r}"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment this tool wants on the server.

    ``body`` is the deployment dict, with exactly these keys (Prefect's own field names,
    so it maps onto POST /deployments/ one to one): ``name``, ``flow_name``,
    ``entrypoint``, ``description``, ``version``, ``work_pool_name``,
    ``work_queue_name``, ``tags``, ``parameters``, ``parameter_openapi_schema``,
    ``job_variables``, ``pull_steps``, ``schedules``, ``concurrency_limit``,
    ``concurrency_options``, ``paused``, ``enforce_parameter_schema``.
    ``schedules`` use the server's shape, one item per schedule: ``{"schedule":
    {"cron": "0 6 * * *", "timezone": "UTC"}, "active": True}`` (or ``{"interval": 3600.0, ...}`` /
    ``{"rrule": "...", ...}`` inside ``schedule``; ``parameters`` and ``slug`` beside
    ``active`` when given); ``concurrency_options`` is None or
    ``{"collision_strategy": "ENQUEUE" | "CANCEL_NEW"}``;
    ``pull_steps`` use Prefect's step shape, e.g.
    ``{"prefect.deployments.steps.set_working_directory": {"directory": "/abs/root"}}``.
    ``type`` is the deployment type (``python``, ``docker``, ``kubernetes``, ...); ``source`` names
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
    # Prefect deployment triggers (event, compound, sequence, metric), as settings give
    # them: applied as automations owned by the deployment, never sent in the body.
    triggers: tuple[Mapping[str, Any], ...] = ()
    # Secret job environment variables stored as Secret blocks: variable -> (block
    # name, value).  The body holds only the placeholder; never printed.
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return str(self.body["name"])

    @property
    def full_name(self) -> str:
        """``flow-name/deployment-name``, as Prefect's CLI names deployments."""
        return f"{self.body['flow_name']}/{self.body['name']}"


_ATOMS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Nested mappings and sequences (Dynaconf boxes, MappingProxies, tuples) as fresh
    plain dicts and lists, ready for YAML/JSON and safe to change."""
    kind = type(value)
    if kind in _ATOMS:  # the common case, without the cost of an abstract isinstance
        return value
    if kind is dict or isinstance(value, Mapping):
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if kind is list or isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


MASK = "****"


_SECRET_NAME = re.compile(r"(token|key|password|passwd|secret|credential)", re.IGNORECASE)


# Names that contain "key" but hold no secret.
_NOT_SECRET = frozenset({"keys", "key_path", "keyword", "monkey"})


def is_secret_name(name: str) -> bool:
    """True for a key name such as ``api_key``, ``GIT_TOKEN`` or ``db_password``."""
    last = name.rsplit(".", 1)[-1].lower()
    return last not in _NOT_SECRET and bool(_SECRET_NAME.search(last))


# The user:password part of a URL: a git token in a clone URL, a password in a DSN.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]+:[^/\s@]+@")


class Masker:
    """Replaces every known secret value with ``****``; add values as they become known."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._keys: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        # Very short values would mask ordinary words; they are still masked by key
        # (``add_keys``).  Each is also known in the escaped forms a server or a log may
        # echo it in: JSON (``\"``, ``\u00e9``) and Python (``\x``, ``\n``).
        for value in values:
            text = "" if value is None else str(value)
            if len(text) < 4:
                continue
            self._values.add(text)
            for escaped in (
                json.dumps(text)[1:-1],
                json.dumps(text, ensure_ascii=False)[1:-1],
                text.encode("unicode_escape").decode("ascii"),
                repr(text)[1:-1],
            ):
                if escaped != text:
                    self._values.add(escaped)

    def add_keys(self, paths: Iterable[str]) -> None:
        """Dotted body paths (``job_variables.env.DB_PIN``) whose values are secret,
        however short: masked wherever such a path is shown (``data``, plan diffs)."""
        self._keys.update(str(p) for p in paths)

    def is_secret_path(self, path: str) -> bool:
        """Whether the dotted ``path`` (or a table above it) was given to ``add_keys``."""
        parts = path.split(".")
        return any(".".join(parts[:n]) in self._keys for n in range(1, len(parts) + 1))

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def text(self, text: str) -> str:
        """``text`` with every known secret, and the credentials of every URL
        (``https://user:token@host`` -> ``https://****@host``), replaced by ``****``."""
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        if "@" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<scheme>{MASK}@", text)
        return text

    def data(self, data: Any, secret_keys: Iterable[str] = (), _prefix: str = "") -> Any:
        """A copy of ``data`` with secret values (by value, by key name, or by dotted
        key listed in ``secret_keys``) replaced by ``****``."""
        keys = frozenset(secret_keys) | self._keys
        if isinstance(data, Mapping):
            out = {}
            for k, v in data.items():
                dotted = f"{_prefix}.{k}" if _prefix else str(k)
                if (dotted in keys or is_secret_name(str(k))) and not isinstance(v, Mapping) and v not in ("", None):
                    out[k] = MASK
                else:
                    out[k] = self.data(v, keys, dotted)
            return out
        if isinstance(data, (list, tuple)):
            return [self.data(v, keys, _prefix) for v in data]
        if isinstance(data, str):
            return self.text(data)
        return data


UNKNOWN = "unknown"


@dataclass(frozen=True)
class GitInfo:
    """The commit (``sha``, ``short_sha``: its first 12 hex digits), the branch (``HEAD``
    when detached) and ``dirty``: tracked files differ from the commit (untracked files
    do not count, as with ``git describe --dirty``)."""

    sha: str = UNKNOWN
    short_sha: str = UNKNOWN
    branch: str = UNKNOWN
    dirty: bool = False

    @property
    def is_repo(self) -> bool:
        return self.sha != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "short_sha": self.short_sha,
            "branch": self.branch,
            "dirty": self.dirty,
            "is_repo": self.is_repo,
        }


@dataclass(frozen=True)
class Discovery:
    """What one discovery run found.

    ``flows`` are sorted by path then line; ``problems`` by path, line and message.
    ``files`` lists every ``.py`` file read (project-relative POSIX paths) and
    ``functions`` maps each readable file to its module-level functions that are *not*
    flows, so a caller can tell "no such file" from "that function is not a flow"
    (as ``validate`` does when an entrypoint is not a flow).  Only ``flows`` and ``problems`` are output by
    :meth:`to_dict`.
    """

    flows: tuple[FlowMetadata, ...] = ()
    problems: tuple[Problem, ...] = ()
    files: tuple[str, ...] = ()
    functions: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """``{"flows": [...], "problems": [...]}``, ready for ``json.dumps``."""
        return {
            "flows": [f.to_dict() for f in self.flows],
            "problems": [p.to_dict() for p in self.problems],
        }

    def raise_for_problems(self) -> None:
        """Raise :class:`DiscoveryError` listing every problem, if there is any."""
        if self.problems:
            lines = [f"discovery found {len(self.problems)} problem(s):"]
            lines += [f"  - {p}" for p in self.problems]
            raise DiscoveryError("\n".join(lines))


@dataclass(frozen=True)
class Skipped:
    """A flow or file left out of a run, and why: the others go on without it.

    ``flow`` is the flow's name (None for a whole file, a folder or a flow root);
    ``path`` the project-relative file or folder; ``line`` where it is, when known.
    """

    path: str
    reason: str
    flow: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        what = f"flow {self.flow!r} ({where})" if self.flow else where
        return f"skipped {what}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "flow": self.flow, "line": self.line, "reason": self.reason}


def skipped_of(discovery: Discovery) -> tuple[Skipped, ...]:
    """Every flow with problems and every other problem of ``discovery`` (a file that
    cannot be read or parsed, a missing root) as one ``Skipped`` each."""
    out: list[Skipped] = []
    flagged: set[tuple[str, int | None, str]] = set()
    for flow in discovery.flows:
        if flow.problems:
            out.append(Skipped(flow.path, "; ".join(flow.problems), flow.name, flow.line))
            flagged |= {(flow.path, flow.line, message) for message in flow.problems}
    for problem in discovery.problems:
        if (problem.path or "", problem.line, problem.message) not in flagged:
            out.append(Skipped(problem.path or ".", problem.message, None, problem.line))
    return tuple(sorted(out, key=lambda s: (s.path, s.line or 0, s.flow or "")))


def protected_files(discovery: Discovery) -> dict[str, str]:
    """Where a prune must not delete: each file with a problem (or a flow with one), in
    path and module form, and each folder that could not be walked (as ``dir/`` and
    ``dir.``, for everything under it), with the reason."""
    out: dict[str, str] = {}
    for item in skipped_of(discovery):
        if item.path.endswith(".py"):
            reason = f"flow file {item.path} has problems"
            out[item.path] = reason
            out[module_path_for(item.path)] = reason
        elif not item.reason.startswith("no flows found"):
            reason = f"{item.path} could not be read"
            folder = "" if item.path == "." else item.path.rstrip("/")
            out[f"{folder}/" if folder else "/"] = reason
            out[f"{folder.replace('/', '.')}." if folder else "."] = reason
    return out


CREATE = "create"
UPDATE = "update"
UNCHANGED = "unchanged"
DELETE = "delete"
# A deployment with a desired flow and name exists on the server, but is not this
# project's (made by hand, by `prefect deploy`, or by another project or environment):
# it is left alone unless adopted.
CONFLICT = "conflict"
# The same entrypoint under a new flow or deployment name: one of ours is replaced by a
# new one (the old is deleted with --prune, like a delete).
RENAME = "rename"
ACTIONS = (CREATE, UPDATE, UNCHANGED, DELETE, CONFLICT, RENAME)


@dataclass(frozen=True)
class FieldChange:
    """One differing value: ``path`` is dotted (``job_variables.env.PYTHONPATH``);
    ``old``/``new`` are ``None`` when the key is absent on that side."""

    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Change:
    """What the plan will do with one deployment.

    ``deployment`` is ``flow-name/deployment-name``; ``type`` is ``python``/``docker``
    (for a delete, read from the live ``runtime:<type>`` tag, ``None`` if absent);
    ``spec`` is the desired spec (``None`` for a delete); ``live_id`` the server's id
    (``None`` for a create); ``diff`` the differing fields of an update; ``body`` what
    apply sends for a create or an update (the desired body, with the live schedule
    state carried over), ``None`` otherwise.
    """

    action: str
    deployment: str
    type: str | None
    spec: DeploymentSpec | None = None
    live_id: str | None = None
    diff: tuple[FieldChange, ...] = ()
    body: Mapping[str, Any] | None = None
    # The top-level fields changed on the server since this tool last wrote them
    # (compared with the fingerprint recorded on the deployment).
    drift: tuple[str, ...] = ()
    # For a conflict: who the deployment belongs to, in words.
    owner: str | None = None
    # The live deployment's ``updated`` stamp when the plan was made (saved plans).
    live_updated: str | None = None
    # For a rename: the deployment it replaces (``live_id`` is that one's id).
    renamed_from: str | None = None
    # For a delete that must not happen even with --prune, why (its flow's file could
    # not be read or has problems: the flow may well still be there).
    kept: str | None = None
    # The automations (of the deployment's triggers) apply writes in place of those
    # the deployment owns; None leaves them as they are.
    automations: tuple[Mapping[str, Any], ...] | None = None
    # The Secret blocks to write before the deployment: (block name, value).  Never
    # printed or saved (``to_dict`` leaves them out).
    secret_writes: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # For a rename: the deployment it replaces had triggers, whose automations go when
    # it is deleted.
    drop_old_automations: bool = False

    @property
    def flow_name(self) -> str:
        return self.deployment.split("/", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "action": self.action,
            "deployment": self.deployment,
            "type": self.type,
            "id": self.live_id,
            "diff": [c.to_dict() for c in self.diff],
            "drift": list(self.drift),
        }
        if self.owner is not None:
            data["owner"] = self.owner
        if self.renamed_from is not None:
            data["renamed_from"] = self.renamed_from
        if self.kept is not None:
            data["kept"] = self.kept
        return data


@dataclass(frozen=True)
class Plan:
    """Every change for one environment, sorted by deployment name (then action)."""

    env: str
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def by_action(self, action: str) -> list[Change]:
        """The changes of ``action`` that would happen (a kept delete never does)."""
        return [c for c in self.changes if c.action == action and c.kept is None]

    @property
    def kept(self) -> list[Change]:
        """Deletes that never happen, even with --prune (see ``Change.kept``)."""
        return [c for c in self.changes if c.kept is not None]

    @property
    def counts(self) -> dict[str, int]:
        """``{"create": n, "update": n, "unchanged": n, "delete": n, "conflict": n,
        "rename": n}`` (kept deletes are not counted: see ``kept``)."""
        counted = Counter(c.action for c in self.changes if c.kept is None)
        return {action: counted.get(action, 0) for action in ACTIONS}

    @property
    def has_changes(self) -> bool:
        """True when anything would be created, updated or deleted, or a conflict stands
        (deletes need --prune to happen, but they are still pending, as in
        ``terraform plan``).  A kept delete is no change."""
        return any(c.action != UNCHANGED and c.kept is None for c in self.changes)

    @property
    def drifted(self) -> list[Change]:
        """The updates that would overwrite changes made on the server."""
        return [c for c in self.changes if c.drift and c.action == UPDATE]

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "changes": [c.to_dict() for c in self.changes],
            "summary": self.counts,
        }


CREATED = "created"
UPDATED = "updated"
UNCHANGED_STATUS = "unchanged"
DELETED = "deleted"
FAILED = "failed"
# Not written on purpose: a delete without --prune, drift kept with --keep-drift.
SKIPPED = "skipped"
# Left alone: the deployment is not this project's (see CONFLICT).
CONFLICT_STATUS = "conflict"
STATUSES = (CREATED, UPDATED, UNCHANGED_STATUS, DELETED, SKIPPED, FAILED, CONFLICT_STATUS)


@dataclass(frozen=True)
class Result:
    """What happened to one deployment.

    ``status`` is one of created, updated, unchanged, deleted, skipped (a delete without
    prune, drift kept), failed or conflict (not this project's, left alone); ``error``
    the message of a failure or a conflict; ``note`` why it was skipped; ``duration``
    seconds spent on its requests; ``exception`` the original error (not part of
    ``to_dict``).
    """

    action: str
    deployment: str
    type: str | None
    status: str
    id: str | None = None
    error: str | None = None
    duration: float = 0.0
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    note: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "type": self.type,
            "action": self.action,
            "status": self.status,
            "id": self.id,
            "error": self.error,
            "duration_ms": round(self.duration * 1000, 1),
            **({"note": self.note} if self.note else {}),
        }


@dataclass(frozen=True)
class ApplyResult:
    """Every deployment's ``Result``, in plan order."""

    env: str
    results: tuple[Result, ...]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.failed]

    @property
    def counts(self) -> dict[str, int]:
        """``{"created": n, "updated": n, "unchanged": n, "deleted": n, "skipped": n,
        "failed": n}``."""
        counted = Counter(r.status for r in self.results)
        return {status: counted.get(status, 0) for status in STATUSES}

    @property
    def conflicts(self) -> list[Result]:
        return [r for r in self.results if r.status == CONFLICT_STATUS]

    def raise_if_failed(self) -> None:
        """Raise ``PartialFailure`` (exit 4) naming each failed deployment, if any; when
        every write failed and none landed, ``DeployError`` (exit 1): nothing is partial.
        Deployments left alone as conflicts (not this project's) are exit 4 too."""
        failed = self.failed
        if not failed:
            if conflicts := self.conflicts:
                lines = [
                    f"{len(conflicts)} deployment(s) in env {self.env!r} were left alone: they "
                    "exist on the server but are not this project's (take one over with "
                    "`invoke adopt --env ENV --flow NAME`, or rename ours):"
                ]
                lines += [f"  - {r.deployment}: {r.error}" for r in conflicts]
                raise PartialFailure("\n".join(lines))
            return
        applied = len(self.results) - len(failed)
        written = sum(1 for r in self.results if r.status in (CREATED, UPDATED, DELETED))
        what = (
            f"the other {applied} were applied"
            if written
            else f"nothing was written (the other {applied} needed no change)"
            if applied
            else "nothing was written"
        )
        lines = [
            f"{len(failed)} of {len(self.results)} deployment(s) failed in env {self.env!r}; "
            f"{what}:"
        ]
        lines += [f"  - {r.deployment}: {r.error}" for r in failed]
        raise (PartialFailure if written else DeployError)("\n".join(lines))

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "results": [r.to_dict() for r in self.results],
            "summary": self.counts,
        }


# The values build computes beside the body keys: for templates and messages, never sent.
BUILD_EXTRAS = ("type", "image", "slug", "sources", "triggers", "secrets")


@dataclass(frozen=True)
class BuildContext:
    """One deployment to render: its type, its flow, and ``deployment``, the computed
    values (the body keys plus ``type``, ``image``, ``slug`` and ``sources``, which maps
    a dotted body key to the settings key its value came from)."""

    type: str
    flow: FlowMetadata
    deployment: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.deployment["name"])


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


def dotted_leaves(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``("a.b.c", value)`` for every leaf of nested mappings (an empty table is a leaf)."""
    rows: list[tuple[str, Any]] = []
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            rows += dotted_leaves(value, dotted)
        else:
            rows.append((dotted, value))
    return rows
