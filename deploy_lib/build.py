"""Flows + the settings of one environment -> the values of each deployment (pure).

``build_deployments`` turns every valid flow into one ``BuildContext`` per deployment
type: the ``deployment.*`` values a template puts into the body (see
``DeploymentSpec`` for the body keys). The only I/O is ``flow_version``, which reads the
flow's own files to hash them.

Decisions worth knowing:

- Types: a flow gets the types in ``deployment_types`` (or its per-flow ``types``):
  python (a process pool) and any work pool type whose job template is known; a
  container type (its template has ``image``: docker, kubernetes, ecs, cloud-run, ...)
  only when the flow has a Dockerfile or its settings name an ``image``. Invalid flows
  get no deployment.
- Resources: ``resources`` (then ``resources.<type>``, then the flow's own) in one
  vocabulary, mapped onto the type's job variables by ``pools.map_resources``; a limit a
  type cannot say is one warning per type. ``collision_strategy`` becomes
  ``concurrency_options``.
- Secrets: a secret job environment variable becomes a reference to the Secret block
  that holds it (``secret_blocks``); the value travels beside the body, never in it.
- Triggers: the flow's ``triggers``, each named ``<deployment>__automation_<n>`` unless
  named, travel beside the body too (applied as automations).
- Names: with two types, ``naming.<type>`` formats (``{flow}``, ``{env}``, ``{type}``);
  with one, the flow name unless ``naming.always_suffix``. Per flow, ``name`` replaces
  ``{flow}`` and ``names.<type>`` fixes one name outright.
- Parameters: the environment's ``parameters`` reach only flows whose signature accepts
  them (``**kwargs`` accepts all); the others are skipped, with one warning per set of
  flows naming the parameters. Per-flow ``parameters`` are kept as written, so validation reports one the
  flow does not accept instead of dropping it quietly.
- ``job_variables.env``: ``env_vars`` first, then ``PREFECT_FLOWS_DEFAULT_RETRIES`` /
  ``PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS`` (``retries.*``),
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (``health.heartbeat_frequency``) and
  ``DEPLOY_ENV_NAME``; an explicit ``env_vars`` entry wins over a computed one. Values
  are strings (booleans as ``true``/``false``).
- Pull steps, python type: ``set_working_directory`` to the absolute project root
  (``pull.strategy = "local"``), or ``git_clone`` of ``pull.repository`` at
  ``pull.branch`` with ``git_access_token`` (a literal or a ``{{ prefect.blocks... }}``
  reference) when ``"git"``; the clone is assumed to hold the project at its top. Then
  ``pip_install_requirements`` for the flow's requirements.txt, and for
  ``pull.extra_packages`` a ``run_shell_script`` running ``python -m pip install ...``
  (so the ``python`` on the worker's PATH must be the one running flows).
  ``pull.pip_index_url`` becomes ``PIP_INDEX_URL`` in the run's env, which every pip
  call of the run (both steps above) honours.
- Docker type: image ``<docker.registry>/<flow-slug>:<tag>``, tag ``docker.tag`` or a
  hash of the build context (the Dockerfile's folder): it changes only when a file the
  image is built from changes, not at any edit elsewhere. The docker pool template has no ``working_dir``, so the in-image
  ``docker.working_dir`` is a ``set_working_directory`` pull step (the code is in the
  image, so ``pull.*`` does not apply); requirements belong in the image; ``docker.extra_pip_packages`` becomes ``EXTRA_PIP_PACKAGES``. Other
  docker job variables (networks, volumes, ...) belong in a ``docker_<env>.yaml``
  template.
- Job variables that are ``None`` (an unset ``mem_limit``) are dropped after rendering,
  so the pool's default applies.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy_lib.errors import DiscoveryError, SettingsError
from deploy_lib.models import (
    DEPLOYMENT_TYPES,
    ENV_TAG_PREFIX,
    MANAGED_BY_TAG,
    PROJECT_TAG_PREFIX,
    RUNTIME_TAG_PREFIX,
    BuildContext,
    FlowMetadata,
    GitInfo,
    Settings,
    secret_placeholder,
)
from deploy_lib.models import plain as _plain
from deploy_lib.pools import (
    RESOURCE_ALIASES,
    deployment_type,
    is_container,
    map_resources,
    pool_type,
)

STEP = "prefect.deployments.steps."
CLONE_STEP_ID = "clone-step"
VERSION_LENGTH = 12
_SCHEDULE_KINDS = ("cron", "interval", "rrule")
_SCHEDULE_ITEM_KEYS = ("active", "parameters", "slug")
_VAR_KINDS = ("var_positional", "var_keyword")
SchemaOf = Callable[[FlowMetadata], Mapping[str, Any]]
Templates = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class BuildResult:
    """The deployments, the warnings (worth a look), and the notes: what is expected of
    ordinary settings (environment parameters some flows do not take), told once by
    ``validate`` rather than in every cron mail."""

    contexts: tuple[BuildContext, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...] = ()


def build_deployments(
    flows: Iterable[FlowMetadata],
    settings: Settings,
    *,
    git: GitInfo,
    schema_of: SchemaOf,
    templates: Templates | None = None,
) -> BuildResult:
    """Compute every deployment of ``flows`` for ``settings.env``; ``schema_of`` gives a
    flow's parameter schema (``parameters.parameter_schema``, handed in by the pipeline)
    and ``templates`` each work pool type's base job template (what a type's job
    variables can say: its image, its resources).

    Reads each flow's files once to hash its version (``flow_version``); otherwise pure.
    Returns the contexts sorted by flow name then type, and the warnings as sentences.
    ``settings`` are valid (``settings.load_settings`` checked every key); raises
    ``SettingsError`` only when two types of one flow would share a deployment name.
    """
    flows = sorted(flows, key=lambda f: (f.name, f.path, f.function))
    env = _EnvValues.read(settings, git, schema_of, templates or {})
    problems: list[tuple[str, str]] = []
    warnings: list[str] = list(env.warnings)
    contexts: list[BuildContext] = []
    skipped_params: dict[str, list[str]] = {}
    required: list[tuple[bool, str]] = []
    bases = deployment_bases([f for f in flows if f.is_valid], settings.flow_roots)

    known = {f.name for f in flows} | {e for f in flows for e in (f.entrypoint, f.module_entrypoint)}
    for name in sorted(_all_override_names(settings)):
        if name not in known:
            warnings.append(
                f"settings key 'flows.{name}' names no discovered flow; its overrides are unused"
            )
    warnings += _shared_name_notes(flows, bases)
    warnings += _unknown_type_warnings(settings.used_types, env.templates)

    for flow in flows:
        if not flow.is_valid:
            warnings.append(
                f"flow {flow.name!r} ({flow.path}) has problems and gets no deployment: "
                + "; ".join(flow.problems)
            )
            continue
        overrides = settings.flow_overrides(flow.name, (flow.entrypoint, flow.module_entrypoint))
        if not overrides.get("enabled", True):
            continue
        types = _types_for(flow, overrides, env, warnings)
        if not types:
            continue
        names = _names_for(flow, types, overrides, env, problems, bases.get(flow.entrypoint))
        if problems:
            continue
        shared = _shared_values(flow, overrides, env, skipped_params)
        required += _required_without_value(flow, shared)
        for type_ in types:
            contexts.append(
                BuildContext(
                    type_,
                    flow,
                    _deployment(
                        flow,
                        type_,
                        names[type_],
                        shared,
                        env,
                        _image(flow, type_, shared.overrides, settings, bases, env),
                    ),
                )
            )

    if problems:
        lines = [f"  - key {key!r}: {message}" for key, message in problems]
        raise SettingsError(
            f"{len(problems)} settings problem(s) stop the build:\n" + "\n".join(lines)
        )
    notes = _skipped_parameter_warnings(skipped_params)
    warnings += _unexpressed_warnings(env.unexpressed)
    warnings += _plaintext_warnings(env.plaintext)
    warnings += [line for is_warning, line in required if is_warning]
    notes += [line for is_warning, line in required if not is_warning]
    return BuildResult(tuple(contexts), tuple(warnings), tuple(notes))


def deployment_bases(flows: Iterable[FlowMetadata], flow_roots: Sequence[str] = ()) -> dict[str, str]:
    """The default deployment name of each flow whose name another file shares,
    keyed by entrypoint: its file's path below its flow root, as a slug
    (``pipelines/dup_a/report.py`` -> ``dup-a-report``), and the function's name too
    when one file holds both.  Stable: it depends on the flow's own place only."""
    by_name: dict[str, list[FlowMetadata]] = {}
    for flow in flows:
        by_name.setdefault(flow.name, []).append(flow)
    roots = sorted((r.strip("/").removeprefix("./") for r in flow_roots), key=len, reverse=True)
    out: dict[str, str] = {}
    for same in by_name.values():
        if len(same) < 2:
            continue
        per_file: dict[str, int] = {}
        for flow in same:
            per_file[flow.path] = per_file.get(flow.path, 0) + 1
        for flow in same:
            rel = flow.path
            for root in roots:
                if root and root != "." and rel.startswith(root + "/"):
                    rel = rel[len(root) + 1 :]
                    break
            stem = rel[:-3] if rel.endswith(".py") else rel
            stem = stem.removesuffix("/__init__") or stem
            base = flow_slug(stem)
            if per_file[flow.path] > 1:
                base = f"{base}-{flow_slug(flow.function)}"
            out[flow.entrypoint] = base
    return out


def image_name(flow: FlowMetadata, bases: Mapping[str, str]) -> str:
    """What a flow's docker image is named after: its flow name, and its file's too when
    another file shares the name (each builds from its own folder)."""
    base = bases.get(flow.entrypoint)
    return f"{flow.name}-{base}" if base else flow.name


def _shared_name_notes(flows: Sequence[FlowMetadata], bases: Mapping[str, str]) -> list[str]:
    """Said once per shared flow name: which deployment name each file gets."""
    by_name: dict[str, list[FlowMetadata]] = {}
    for flow in flows:
        if flow.entrypoint in bases:
            by_name.setdefault(flow.name, []).append(flow)
    return [
        f"flow name {name!r} is defined in {len(same)} places; each gets its own deployment, "
        "named after its file: "
        + ", ".join(f"{name}/{bases[f.entrypoint]} ({f.entrypoint})" for f in same)
        + f"; name them yourself with settings key 'flows.\"{same[0].entrypoint}\".name'"
        for name, same in sorted(by_name.items())
    ]


def _required_without_value(flow: FlowMetadata, shared: _Shared) -> list[tuple[bool, str]]:
    """A line for a flow with required parameters no setting gives a value: every run
    must pass them (a note).  With an active schedule each scheduled run would fail:
    then it is a warning (the flag is True)."""
    missing = [
        p.name
        for p in flow.parameters
        if p.required and p.kind not in _VAR_KINDS and p.name not in shared.parameters
    ]
    if not missing:
        return []
    names = ", ".join(missing)
    scheduled = isinstance(shared.schedules, list) and any(
        isinstance(s, Mapping) and s.get("active", True) for s in shared.schedules
    )
    if scheduled:
        return [
            (
                True,
                f"flow {flow.name!r} ({flow.entrypoint}) is scheduled, but has no value for "
                f"required parameter(s) {names}: each scheduled run would fail; set "
                f"flows.{flow.name}.parameters",
            )
        ]
    return [
        (
            False,
            f"flow {flow.name!r} ({flow.entrypoint}): every run must pass {names} "
            "(required, and no value in the settings)",
        )
    ]


def flow_version(flow: FlowMetadata, root: str | Path) -> str:
    """A 12-hex-digit hash of the flow file, its Dockerfile and its requirements.txt
    (path and content of each), so the version changes only when those files do.

    Reads those files; raises ``DiscoveryError`` naming a file that cannot be read.
    """
    digest = hashlib.sha256()
    for rel in (flow.path, flow.dockerfile, flow.requirements):
        if not rel:
            continue
        content = _read(Path(root) / rel, str(rel), f"compute the version of flow {flow.name!r}")
        digest.update(_relative(rel, root).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:VERSION_LENGTH]


def _read(path: Path, shown: str, purpose: str) -> bytes:
    """``path``'s bytes; ``DiscoveryError`` naming ``shown`` when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DiscoveryError(
            f"cannot read it to {purpose}: {exc.strerror or exc}", path=shown
        ) from exc


def flow_slug(flow_name: str) -> str:
    """The flow name as a docker repository component: ``Daily ETL`` -> ``daily-etl``."""
    slug = re.sub(r"[^a-z0-9]+", "-", flow_name.lower()).strip("-")
    return slug or "flow"


def context_digest(flow: FlowMetadata, root: str | Path) -> str:
    """The first 12 hex digits of a hash of the flow's build context (its Dockerfile's
    folder): every file's path and content below it, ``.git`` and ``__pycache__``
    left out.  It changes when, and only when, what ``docker build`` would be sent
    changes; an edit elsewhere in the repository leaves it as it was.  Raises
    ``DiscoveryError`` naming a file that cannot be read."""
    base = Path(root)
    folder = (base / (flow.dockerfile or flow.path)).parent
    digest = hashlib.sha256()
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
        for name in sorted(files):
            path = Path(current) / name
            shown = _relative(str(path.relative_to(base)), base)
            content = _read(path, shown, f"tag the image of flow {flow.name!r}")
            rel = path.relative_to(folder).as_posix()
            digest.update(rel.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:VERSION_LENGTH]


def image_tag(settings: Settings, digest: str) -> str:
    """``docker.tag`` when set, else ``digest``: the build context's own hash."""
    fixed = settings.get("docker.tag") or ""
    return str(fixed) if fixed else digest


def image_reference(image_name: str, settings: Settings, tag: str) -> str:
    """``<docker.registry>/<image-name-slug>:<tag>`` (no registry part when it is empty)."""
    registry = str(settings.get("docker.registry") or "").rstrip("/")
    repo = f"{registry}/{flow_slug(image_name)}" if registry else flow_slug(image_name)
    return f"{repo}:{tag}"


def image_for(
    flow: FlowMetadata,
    settings: Settings,
    bases: Mapping[str, str] | None = None,
    digests: dict[str, str] | None = None,
) -> str:
    """The image a docker deployment of ``flow`` runs: named after the flow (and its
    file when another shares the name), tagged by its build context (``digests``
    caches one hash per Dockerfile for the run)."""
    key = str(flow.dockerfile or flow.path)
    if digests is None:
        digests = {}
    if key not in digests:
        fixed = settings.get("docker.tag")
        digests[key] = image_tag(settings, "" if fixed else context_digest(flow, Path(settings.root)))
    return image_reference(image_name(flow, bases or {}), settings, digests[key])


def convert_schedules(items: Any) -> Any:
    """Settings schedules (``{cron=..., timezone=..., active=..., parameters=...,
    slug=...}``) -> the server's ``{"schedule": {...}, "active": bool, "parameters":
    {...}, "slug": ...}`` items. Anything not a list of tables is
    returned unchanged, for validation to report."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        return items
    out: list[Any] = []
    for item in items:
        if not isinstance(item, Mapping):
            out.append(item)
            continue
        schedule = {k: _plain(v) for k, v in item.items() if k not in _SCHEDULE_ITEM_KEYS}
        if isinstance(schedule.get("interval"), int) and not isinstance(schedule["interval"], bool):
            schedule["interval"] = float(schedule["interval"])
        converted = {"schedule": schedule, "active": _plain(item.get("active", True))}
        # Per-schedule parameters (over the deployment's) and a slug, Prefect's own keys.
        for key in ("parameters", "slug"):
            if key in item:
                converted[key] = _plain(item[key])
        out.append(converted)
    return out


def accepted_parameters(flow: FlowMetadata) -> frozenset[str] | None:
    """The parameter names the flow's signature accepts; ``None`` when it takes
    ``**kwargs`` and so accepts any name."""
    if any(p.kind == "var_keyword" for p in flow.parameters):
        return None
    return frozenset(p.name for p in flow.parameters if p.kind not in _VAR_KINDS)


# -- environment-wide values, read once -------------------------------------------------


@dataclass(frozen=True)
class _EnvValues:
    settings: Settings
    env: str
    root: Path
    git: GitInfo
    entrypoint_style: str
    types: tuple[str, ...]
    strategy: str
    warnings: tuple[str, ...]
    schema_of: SchemaOf
    tags: list[str]
    parameters: dict[str, Any]
    env_vars: dict[str, str]
    queue: str
    templates: Templates = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, compare=False)
    # (deployment type, resource) -> (settings key, value, deployments it misses).
    unexpressed: dict[tuple[str, str], list[Any]] = field(default_factory=dict, compare=False)
    secret_vars: tuple[str, ...] = ()
    # Secret variables left in plain text (secret_blocks = false) -> deployments.
    plaintext: dict[str, int] = field(default_factory=dict, compare=False)
    # One build-context hash per Dockerfile, for the run.
    digests: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def read(
        cls, settings: Settings, git: GitInfo, schema_of: SchemaOf, templates: Templates
    ) -> _EnvValues:
        warnings: list[str] = []
        types = _known_types(settings.deployment_types)
        return cls(
            settings=settings,
            env=settings.env,
            root=Path(settings.root).resolve(),
            git=git,
            entrypoint_style=settings.entrypoint_style,
            types=types,
            strategy=str(settings.get("pull.strategy") or "local"),
            warnings=tuple(warnings),
            schema_of=schema_of,
            tags=settings.tags,
            parameters=settings.parameters,
            env_vars=settings.env_vars,
            queue=settings.work_queue,
            templates=templates,
            secret_vars=tuple(settings.secret_env_vars),
        )

    def template(self, type_: str) -> Mapping[str, Any] | None:
        """The base job template of the pool type ``type_`` deployments run on."""
        return self.templates.get(pool_type(type_))

    def is_container(self, type_: str) -> bool:
        return type_ == "docker" or is_container(self.template(type_))

    def get(self, key: str, default: Any = None) -> Any:
        # Read once per run: every flow asks for the same dozen keys.
        if key not in self.cache:
            self.cache[key] = _plain(self.settings.get(key))
        value = self.cache[key]
        return default if value is None else value


def _known_types(raw: Sequence[str]) -> tuple[str, ...]:
    """``raw`` without repeats: python and docker first, then the others as named
    (settings checked every name)."""
    first = [t for t in DEPLOYMENT_TYPES if t in raw]
    return tuple(_dedupe([*first, *raw]))


# -- per-flow overrides -----------------------------------------------------------------


def _all_override_names(settings: Settings) -> list[str]:
    table = settings.get("flows")
    return [str(k) for k in table] if isinstance(table, Mapping) else []


def _types_for(
    flow: FlowMetadata,
    overrides: Mapping[str, Any],
    env: _EnvValues,
    warnings: list[str],
) -> tuple[str, ...]:
    has_image = flow.supports_docker_deployment or bool(overrides.get("image"))
    if "types" in overrides:
        wanted = _known_types(overrides["types"])
        for t in wanted:
            if env.is_container(t) and not has_image:
                warnings.append(
                    f"flow {flow.name!r}: settings key 'flows.{flow.name}.types' asks for {t}, "
                    f"but no Dockerfile was found beside {flow.path} and "
                    f"'flows.{flow.name}.image' names no image; {t} skipped"
                )
    else:
        wanted = env.types
    return tuple(t for t in wanted if not env.is_container(t) or has_image)


def _image(
    flow: FlowMetadata,
    type_: str,
    overrides: Mapping[str, Any],
    settings: Settings,
    bases: Mapping[str, str],
    env: _EnvValues,
) -> str:
    """The image a container deployment runs: the flow's ``image`` setting, else the
    one built from its Dockerfile; "" for a type that runs no image."""
    if not env.is_container(type_):
        return ""
    if overrides.get("image"):
        return str(overrides["image"])
    return image_for(flow, settings, bases, env.digests)


def _names_for(
    flow: FlowMetadata,
    types: tuple[str, ...],
    overrides: Mapping[str, Any],
    env: _EnvValues,
    problems: list[tuple[str, str]],
    derived: str | None = None,
) -> dict[str, str]:
    base = str(overrides.get("name") or derived or flow.name)
    explicit = overrides.get("names") or {}
    suffix = len(types) > 1 or bool(env.get("naming.always_suffix", False))
    names: dict[str, str] = {}
    for type_ in types:
        if type_ in explicit:
            names[type_] = str(explicit[type_])
        elif suffix:
            fmt = env.get(f"naming.{type_}", "{flow}-" + type_)
            names[type_] = str(fmt).format(flow=base, env=env.env, type=type_)
        else:
            names[type_] = base
    if env.get("naming.env_suffix", False):
        # Environments that share one server keep their deployments apart by name.
        names = {t: f"{name}-{env.env}" for t, name in names.items()}
    if len(set(names.values())) < len(names):
        problems.append(
            (f"flows.{flow.name}.names", f"the types of flow {flow.name!r} share one name: {names}")
        )
    return names


# -- the values -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shared:
    """What both types of one flow have in common."""

    overrides: Mapping[str, Any]
    version: str
    description: str
    parameters: dict[str, Any]
    schema: dict[str, Any]
    schedules: Any
    env: dict[str, str]
    tags: list[Any]
    sources: dict[str, str]


def _shared_values(
    flow: FlowMetadata,
    overrides: Mapping[str, Any],
    env: _EnvValues,
    skipped_params: dict[str, list[str]],
) -> _Shared:
    fkey = f"flows.{flow.name}"
    sources: dict[str, str] = {}

    accepted = accepted_parameters(flow)
    parameters: dict[str, Any] = {}
    env_params = env.parameters
    if isinstance(env_params, Mapping):
        for name, value in env_params.items():
            if accepted is None or name in accepted:
                parameters[name] = value
                sources[f"parameters.{name}"] = f"parameters.{name}"
            else:
                skipped_params.setdefault(str(name), []).append(flow.name)
    for name, value in (overrides.get("parameters") or {}).items():
        parameters[name] = value
        sources[f"parameters.{name}"] = f"{fkey}.parameters.{name}"

    run_env: dict[str, str] = {}
    for name, value in env.env_vars.items():
        if value is not None:
            run_env[str(name)] = _env_text(value)
            sources[f"job_variables.env.{name}"] = f"env_vars.{name}"
    computed = (
        ("PREFECT_FLOWS_DEFAULT_RETRIES", "retries.retries"),
        ("PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS", "retries.retry_delay_seconds"),
        ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "health.heartbeat_frequency"),
    )
    for name, key in computed:
        value = env.get(key)
        if value is not None and name not in run_env:
            run_env[name] = _env_text(value)
            sources[f"job_variables.env.{name}"] = key
    run_env.setdefault("DEPLOY_ENV_NAME", env.env)

    schedules = convert_schedules(overrides.get("schedules", []))
    if "schedules" in overrides:
        sources["schedules"] = f"{fkey}.schedules"

    tags = _listed(env.tags) + _listed(overrides.get("tags", []))
    description = (
        overrides.get("description") or flow.description or (f"Flow {flow.name} ({flow.path})")
    )
    return _Shared(
        overrides=overrides,
        version=flow_version(flow, env.root),
        description=str(description),
        parameters=parameters,
        schema=dict(env.schema_of(flow)),
        schedules=schedules,
        env=run_env,
        tags=tags,
        sources=sources,
    )


def _deployment(
    flow: FlowMetadata,
    type_: str,
    name: str,
    shared: _Shared,
    env: _EnvValues,
    image_of: str,
) -> dict[str, Any]:
    fkey = f"flows.{flow.name}"
    ov = shared.overrides
    sources = dict(shared.sources)

    pool, pool_key, queue, queue_key = _work_pool(flow, type_, ov, env)
    sources["work_pool_name"] = pool_key
    sources["work_queue_name"] = queue_key

    run_env = dict(shared.env)
    image: str | None = None
    template = env.template(type_)
    job_variables: dict[str, Any]
    if env.is_container(type_):
        image = image_of
        extra = env.get("docker.extra_pip_packages", [])
        if extra:
            run_env["EXTRA_PIP_PACKAGES"] = " ".join(str(p) for p in _listed(extra))
            sources["job_variables.env.EXTRA_PIP_PACKAGES"] = "docker.extra_pip_packages"
        job_variables = {"image": image}
        sources["job_variables.image"] = f"{fkey}.image" if ov.get("image") else "docker.registry"
        if type_ == "docker" or "image_pull_policy" in (template or {}).get("variables", {}).get(
            "properties", {}
        ):
            job_variables["image_pull_policy"] = env.get("docker.image_pull_policy")
            sources["job_variables.image_pull_policy"] = "docker.image_pull_policy"
        job_variables["env"] = run_env
        pull_steps = [_step("set_working_directory", directory=env.get("docker.working_dir"))]
        sources["pull_steps"] = "docker.working_dir"
    else:
        index_url = env.get("pull.pip_index_url")
        if index_url:
            run_env.setdefault("PIP_INDEX_URL", str(index_url))
            sources["job_variables.env.PIP_INDEX_URL"] = "pull.pip_index_url"
        job_variables = {"env": run_env}
        if type_ == "python" or "working_dir" in (template or {}).get("variables", {}).get(
            "properties", {}
        ):
            job_variables["working_dir"] = str(env.root)
        pull_steps = _python_pull_steps(flow, env)
        sources["pull_steps"] = "pull"

    secrets = _secret_env(run_env, env)
    limits = _resources(flow, type_, ov, env)
    if template is not None:
        mapped, missing = map_resources({k: v for k, (v, _) in limits.items()}, template)
        for variable, (resource, value) in mapped.items():
            job_variables[variable] = value
            sources[f"job_variables.{variable}"] = limits[resource][1]
        for resource in missing:
            seen = env.unexpressed.setdefault(
                (type_, resource), [limits[resource][1], limits[resource][0], 0]
            )
            seen[2] += 1

    concurrency, sources["concurrency_limit"] = limits.get(
        "concurrency_limit", (None, "resources.concurrency_limit")
    )
    strategy, strategy_key = limits.get("collision_strategy", (None, ""))
    if strategy is not None:
        sources["concurrency_options.collision_strategy"] = strategy_key
    paused = ov.get("paused", env.get("paused", False))
    sources["paused"] = f"{fkey}.paused" if "paused" in ov else "paused"
    sources["enforce_parameter_schema"] = "enforce_parameter_schema"
    sources["entrypoint"] = "entrypoint_style"
    sources["tags"] = f"{fkey}.tags" if "tags" in ov else "tags"
    if "triggers" in ov:
        sources["triggers"] = f"{fkey}.triggers"

    owner = [f"{RUNTIME_TAG_PREFIX}{type_}", f"{ENV_TAG_PREFIX}{env.env}", MANAGED_BY_TAG]
    tags = _dedupe([*owner, f"{PROJECT_TAG_PREFIX}{env.settings.project}", *shared.tags])
    entrypoint = flow.module_entrypoint if env.entrypoint_style == "module" else flow.entrypoint
    return {
        "name": name,
        "flow_name": flow.name,
        "entrypoint": entrypoint,
        "description": shared.description,
        "version": shared.version,
        "work_pool_name": pool,
        "work_queue_name": queue,
        "tags": tags,
        "parameters": dict(shared.parameters),
        "parameter_openapi_schema": shared.schema,
        "job_variables": job_variables,
        "pull_steps": pull_steps,
        "schedules": shared.schedules,
        "concurrency_limit": concurrency,
        "concurrency_options": (
            {"collision_strategy": strategy} if strategy is not None else None
        ),
        "paused": paused,
        "enforce_parameter_schema": env.get("enforce_parameter_schema", True),
        "triggers": _triggers(ov.get("triggers"), name),
        "secrets": secrets,
        "type": type_,
        "image": image,
        "slug": flow_slug(flow.name),
        "sources": sources,
    }


def _secret_env(run_env: dict[str, str], env: _EnvValues) -> dict[str, tuple[str, str]]:
    """Put each secret variable of ``run_env`` into a Secret block: the job variable
    holds ``{{ prefect.blocks.secret.<block> }}`` (resolved by the worker at run time)
    and the value goes to the block.  Returns variable -> (block, value).  With
    ``secret_blocks = false`` the values stay as they are, and the run warns."""
    out: dict[str, tuple[str, str]] = {}
    for var in env.secret_vars:
        value = run_env.get(var)
        if value is None or value.strip().startswith("{{"):
            continue  # unset, or already a reference the worker resolves
        if not env.settings.secret_blocks:
            env.plaintext[var] = env.plaintext.get(var, 0) + 1
            continue
        block = env.settings.secret_block_name(var)
        out[var] = (block, value)
        run_env[var] = secret_placeholder(block)
    return out


def _plaintext_warnings(plaintext: Mapping[str, int]) -> list[str]:
    if not plaintext:
        return []
    count = max(plaintext.values())
    return [
        f"secret_blocks is false: secret environment variable(s) {', '.join(sorted(plaintext))} "
        f"are stored in plain text in the job variables of {count} deployment(s), where "
        "anyone who can read deployments sees them; leave secret_blocks on to keep them "
        "in Prefect Secret blocks"
    ]


def _triggers(raw: Any, name: str) -> list[Any]:
    """The flow's ``triggers``, each named as Prefect names them when it has no name
    (``<deployment>__automation_<n>``); anything not a table is kept for validation
    to report."""
    out: list[Any] = []
    for number, trigger in enumerate(_listed(raw), start=1):
        if isinstance(trigger, Mapping):
            trigger = {"name": f"{name}__automation_{number}", **_plain(trigger)}
        out.append(trigger)
    return out


def _resources(
    flow: FlowMetadata, type_: str, ov: Mapping[str, Any], env: _EnvValues
) -> dict[str, tuple[Any, str]]:
    """The resource limits of one deployment, each with the settings key it came from:
    ``resources``, then ``resources.<type>``, then the flow's ``resources`` (and its
    ``<type>`` table), then the flow's own ``concurrency_limit`` and
    ``collision_strategy``.  ``mem_limit``/``memswap_limit`` are read as ``memory`` /
    ``memory_swap``; the new name wins within one table."""
    out: dict[str, tuple[Any, str]] = {}
    fkey = f"flows.{flow.name}"
    layers = [("resources", env.get("resources", {})), (f"{fkey}.resources", ov.get("resources"))]
    for prefix, table in layers:
        if not isinstance(table, Mapping):
            continue
        for where, part in ((prefix, table), (f"{prefix}.{type_}", table.get(type_))):
            if not isinstance(part, Mapping):
                continue
            ordered = sorted(part.items(), key=lambda kv: kv[0] not in RESOURCE_ALIASES)
            for key, value in ordered:
                if isinstance(value, Mapping) or value is None:
                    continue
                out[RESOURCE_ALIASES.get(str(key), str(key))] = (value, f"{where}.{key}")
    for key in ("concurrency_limit", "collision_strategy"):
        if key in ov:
            out[key] = (ov[key], f"{fkey}.{key}")
    return out


def _unknown_type_warnings(types: Sequence[str], templates: Templates) -> list[str]:
    """A type whose pool type Prefect ships no job template for: a typo, or a pool type
    of the user's own (then the live pool's template is the only check)."""
    if not templates:
        return []
    known = sorted(deployment_type(t) for t in templates)
    out = []
    for type_ in types:
        if pool_type(type_) in templates:
            continue
        close = difflib.get_close_matches(type_, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        out.append(
            f"deployment type {type_!r} is no work pool type Prefect ships ({hint}known: "
            f"{', '.join(known)}); its job variables are checked against its live work pool only"
        )
    return out


def _unexpressed_warnings(unexpressed: Mapping[tuple[str, str], list[Any]]) -> list[str]:
    """One warning per deployment type and resource limit its pool type cannot say."""
    return [
        f"{key} = {value!r} is not applied to {count} {type_} deployment(s): the job template "
        f"of {pool_type(type_)} work pools has no variable for {resource.replace('_', ' ')}"
        for (type_, resource), (key, value, count) in sorted(unexpressed.items())
    ]


def _work_pool(
    flow: FlowMetadata, type_: str, ov: Mapping[str, Any], env: _EnvValues
) -> tuple[Any, str, Any, str]:
    fkey = f"flows.{flow.name}.work_pool"
    pool, pool_key = env.settings.work_pool(type_), f"work_pool.{type_}"
    queue, queue_key = env.queue, "work_pool.queue"
    override = ov.get("work_pool")
    if isinstance(override, str):
        pool, pool_key = override, fkey
    elif isinstance(override, Mapping):
        if type_ in override:
            pool, pool_key = override[type_], f"{fkey}.{type_}"
        if "queue" in override:
            queue, queue_key = override["queue"], f"{fkey}.queue"
    return pool, pool_key, queue, queue_key


def _python_pull_steps(flow: FlowMetadata, env: _EnvValues) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    directory: str
    if env.strategy == "git":
        clone: dict[str, Any] = {
            "id": CLONE_STEP_ID,
            "repository": env.get("pull.repository"),
            "branch": env.get("pull.branch") or None,
        }
        token = env.get("git_access_token")
        if token:
            clone["access_token"] = str(token)
        steps.append(_step("git_clone", **{k: v for k, v in clone.items() if v is not None}))
        directory = "{{ " + CLONE_STEP_ID + ".directory }}"
    else:
        directory = str(env.root)
        steps.append(_step("set_working_directory", directory=directory))
    if flow.requirements:
        steps.append(
            _step(
                "pip_install_requirements",
                directory=directory,
                requirements_file=_relative(flow.requirements, env.root),
            )
        )
    extra = _listed(env.get("pull.extra_packages", []))
    if extra:
        script = shlex.join(["python", "-m", "pip", "install", *(str(p) for p in extra)])
        steps.append(_step("run_shell_script", script=script, directory=directory))
    return steps


def _skipped_parameter_warnings(skipped: Mapping[str, list[str]]) -> list[str]:
    # One warning per set of flows, naming every parameter those flows do not accept.
    by_flows: dict[tuple[str, ...], list[str]] = {}
    for name in sorted(skipped):
        by_flows.setdefault(tuple(sorted(set(skipped[name]))), []).append(name)
    out = []
    for flows, names in sorted(by_flows.items(), key=lambda item: item[1]):
        shown = ", ".join(flows[:5]) + (f" and {len(flows) - 5} more" if len(flows) > 5 else "")
        keys = ", ".join(f"parameters.{n}" for n in names)
        out.append(
            f"environment parameter(s) {', '.join(map(repr, names))} (settings {keys}) "
            f"skipped for {len(flows)} flow(s) whose signature does not accept them: {shown}"
        )
    return out


# -- small helpers ----------------------------------------------------------------------


def _step(name: str, **inputs: Any) -> dict[str, Any]:
    return {STEP + name: inputs}


def _relative(path: str, root: str | Path) -> str:
    pure = Path(path)
    if pure.is_absolute():
        try:
            return PurePosixPath(pure.relative_to(Path(root).resolve())).as_posix()
        except ValueError:
            return pure.as_posix()
    return PurePosixPath(path).as_posix()


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _dedupe(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out

