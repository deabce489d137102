"""Deployment bodies -> every problem with them, before anything touches a server (pure).

``validate_specs`` runs the Cerberus schema of ``schema.py`` over each body, flattens
Cerberus's nested errors to dotted key paths (``job_variables.env.PYTHONPATH``,
``schedules.0.schedule.cron``) with sentences a person can act on, then checks what a
schema cannot: the entrypoint points at a discovered flow, deployment names are unique,
and the parameters fit the flow's signature.  It returns every problem, sorted; the
caller raises once (``ensure_valid``).  ``format_problems`` groups them per deployment.

Schedules and triggers are judged by Prefect's own models (schedules, deployment
triggers), imported only when a deployment has one, so validating plain deployments
never imports Prefect.  ``job_variables`` are judged by rules derived from the work pool
type's job template (``schema.job_variables_schema``): Prefect's bundled templates
offline, the live pool's in ``pool_problems`` before a write.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar

import cerberus
from cerberus import Validator, errors
from cerberus.errors import ValidationError
from cerberus.validator import TypeDefinition

from deploy_lib.errors import ValidationFailed, format_problems, problem_sort_key
from deploy_lib.models import (
    AUTOMATION_DEPLOYMENT_MARK,
    ENV_TAG_PREFIX,
    MANAGED_BY_TAG,
    PROJECT_TAG_PREFIX,
    RESERVED_TAG_PREFIXES,
    RUNTIME_TAG_PREFIX,
    DeploymentSpec,
    FlowMetadata,
    Problem,
    module_path_for,
)
from deploy_lib.parameters import python_type_check
from deploy_lib.pools import is_container, pool_type
from deploy_lib.schema import (
    IMAGE_NAME_MAX_LENGTH,
    IMAGE_REFERENCE,
    SCHEDULE,
    SCHEDULE_KINDS,
    STEP_REQUIRED_INPUTS,
    deployment_schema,
    job_variables_schema,
)

__all__ = [
    "ensure_valid",
    "format_problems",
    "validate_specs",
]

_VAR_KINDS = ("var_positional", "var_keyword")
# The fields each Prefect schedule model accepts (extra="forbid" on all three).
_SCHEDULE_FIELDS = {
    "cron": ("cron", "timezone", "day_or"),
    "interval": ("interval", "anchor_date", "timezone"),
    "rrule": ("rrule", "timezone"),
}


class _DeploymentValidator(Validator):  # type: ignore[misc]
    """Cerberus with our check_with rules, and an ``integer`` that refuses booleans
    (Cerberus's accepts ``True``, a subclass of int)."""

    types_mapping: ClassVar[dict[str, TypeDefinition]] = {
        **Validator.types_mapping,
        "integer": TypeDefinition("integer", (int,), (bool,)),
    }

    def _check_with_image_reference(self, field: str, value: Any) -> None:
        if not isinstance(value, str):
            return
        problem = image_reference_problem(value)
        if problem:
            self._error(field, problem)

    def _check_with_schedule(self, field: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            return
        kinds = [kind for kind in SCHEDULE_KINDS if kind in value]
        if len(kinds) != 1:
            found = f"; found {' and '.join(kinds)}" if kinds else ""
            self._error(field, f"needs exactly one of cron, interval or rrule{found}")
            return
        if not _schedule_shape_ok(value):
            return  # the schedule's own schema rules report the wrong key or type
        for loc, message in _schedule_errors(kinds[0], _frozen(value)):
            self._error_at((field, *loc), message, value.get(loc[0]) if loc else value)

    def _check_with_pull_step(self, field: Any, value: Any) -> None:
        if not isinstance(value, Mapping) or len(value) != 1:
            return
        ((step, inputs),) = value.items()
        required = STEP_REQUIRED_INPUTS.get(step)
        if not required or not isinstance(inputs, Mapping):
            return
        short = step.rsplit(".", 1)[-1]
        for name in required:
            given = inputs.get(name)
            if not isinstance(given, str) or not given.strip():
                self._error_at(
                    (field, step, name), f"step {short} needs {name!r}, a non-empty string", given
                )

    def _error_at(self, path: tuple[Any, ...], message: str, value: Any) -> None:
        """A custom error at a path below the current field (Cerberus's own ``_error``
        only reaches the field itself)."""
        self._error(
            [
                ValidationError(
                    (*self.document_path, *path),
                    (*self.schema_path, path[0], "check_with"),
                    errors.CUSTOM.code,
                    "check_with",
                    None,
                    value,
                    (message,),
                )
            ]
        )


# Where a body is split for checking: at each mapping (by key path), the keys whose
# values are checked on their own, because they are tables or lists that many
# deployments share.  ``job_variables`` is split further, since the docker image in it
# differs per flow while its ``env`` rarely does.
_SPLITS: dict[tuple[str, ...], tuple[str, ...]] = {
    (): (
        "tags",
        "parameters",
        "job_variables",
        "pull_steps",
        "schedules",
        "parameter_openapi_schema",
    ),
    ("job_variables",): ("env",),
}


_ENV_ONLY = {"variables": {"properties": {"env": {"type": "object"}}}}
# Schemas by key (``schema_key``): one per distinct job template seen in this process.
_SCHEMAS: dict[str, dict[str, Any]] = {}
Templates = Mapping[str, Mapping[str, Any] | None]


def schema_key(deployment_type: str, template: Mapping[str, Any] | None) -> str:
    """The key of the body schema for ``deployment_type`` on a pool with job
    ``template`` (derived and kept on first use)."""
    text = json.dumps(template, sort_keys=True, default=str)
    key = f"{deployment_type}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if key not in _SCHEMAS:
        _SCHEMAS[key] = deployment_schema(
            job_variables_schema(template, container=is_container(template))
        )
    return key


def _fields(kind: str, path: tuple[str, ...]) -> dict[str, Any]:
    """The field rules of the mapping at ``path`` in the schema ``kind`` (a
    ``schema_key``)."""
    fields = _SCHEMAS[kind]
    for key in path:
        fields = fields[key]["schema"]
    return fields


@cache
def _validator(kind: str, path: tuple[str, ...], part: str) -> _DeploymentValidator:
    """A validator for one split-off key (``part``) of the mapping at ``path``, or for
    all its other keys (``part=""``), built once: Cerberus checks a schema on
    construction, which costs far more than validating one document.  The ``required``
    flags at ``path`` itself are left to the caller, since each validator sees only
    part of the mapping.  A Cerberus validator keeps state while it validates: one
    thread at a time."""
    fields = _fields(kind, path)
    keys = [part] if part else [k for k in fields if k not in _SPLITS.get(path, ())]
    partial = {k: {r: v for r, v in fields[k].items() if r != "required"} for k in keys}
    return _DeploymentValidator(partial, allow_unknown=False)


# ------------------------------------------------------------------------ public surface


def validate_specs(
    specs: Sequence[DeploymentSpec],
    flows: Sequence[FlowMetadata],
    *,
    functions: Mapping[str, Sequence[str]] | None = None,
    templates: Templates | None = None,
    passed: Passed | None = None,
) -> list[Problem]:
    """Every problem with ``specs``, sorted by deployment, key path and message.

    ``templates`` maps a work pool type to its base job template (Prefect's bundled
    ones offline); a spec's ``job_variables`` are checked against the rules derived
    from its pool type's template (none known: only that they form a mapping).
    ``flows`` are the discovered flows the entrypoints must point at; ``functions``
    optionally maps a project-relative file to its module-level functions that are not
    flows (discovery knows them), so that an entrypoint naming one of those says so.
    ``passed`` (see ``Passed``) skips the parts that passed last run, and learns those
    that pass now.  Reads no files, and imports Prefect only to judge schedules and
    triggers.
    """
    index = _FlowIndex(flows, functions or {})
    checker = _BodyChecker(templates or {}, passed)
    problems: list[Problem] = []
    for spec in specs:
        problems.extend(checker.problems(spec))
        problems.extend(_cross_check(spec, index))
        problems.extend(_reserved_tags(spec))
        problems.extend(_trigger_problems(spec))
    problems.extend(_duplicate_names(specs))
    return sorted(set(problems), key=problem_sort_key)


# (key path, message) pairs: what Cerberus found in one value.
_Found = tuple[tuple[tuple[Any, ...], str], ...]


# The parts of a body whose passing verdict may be remembered from one run to the next
# (see ``Passed``): the top level's own scalars and the parameter schema.  The others
# hold job variables and parameter values, where a secret may be.
_REMEMBERED = frozenset({((), ""), ((), "parameter_openapi_schema")})


# The modules whose code decides a verdict: a change to any makes the last run's void.
_JUDGES = (
    __name__,
    "deploy_lib.models",
    "deploy_lib.parameters",
    "deploy_lib.pools",
    "deploy_lib.schema",
)


class Passed:
    """Digests of the parts of bodies that passed validation in the last run, kept in
    ``validated.json`` in a cache folder, so that an unchanged deployment's own values
    are not judged again (most of validating thousands of deployments).

    Only the parts in ``_REMEMBERED`` are kept.  The file is keyed by this format, by
    Cerberus's version and by the code that judged them; one that cannot be read or is
    of another key counts as empty.  ``save`` keeps just the digests met this run."""

    FILE = "validated.json"
    VERSION = 1

    def __init__(self, folder: Path | None = None, known: Iterable[str] = ()) -> None:
        self.folder = folder
        self._known = set(known)
        self._met: set[str] = set()

    @classmethod
    def load(cls, folder: Path) -> Passed:
        try:
            with open(folder / cls.FILE, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("key") != cls._key() or not isinstance(data.get("passed"), list):
                raise ValueError("another version's verdicts")
            return cls(folder, (d for d in data["passed"] if isinstance(d, str)))
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            return cls(folder)

    def __contains__(self, digest: object) -> bool:
        if digest in self._known:
            self._met.add(str(digest))
            return True
        return False

    def add(self, digest: str) -> None:
        self._met.add(digest)

    def save(self) -> None:
        """Write the digests met this run (atomically, mode 0600) when they differ from
        those read; a failure is ignored: the file only saves time."""
        if self.folder is None or self._met == self._known:
            return
        document = {"key": self._key(), "passed": sorted(self._met)}
        tmp = self.folder / f".{self.FILE}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, separators=(",", ":"))
            os.replace(tmp, self.folder / self.FILE)
        except (OSError, TypeError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()

    @classmethod
    def _key(cls) -> list[Any]:
        code = [
            [os.path.getsize(path), os.path.getmtime(path)]
            for path in (sys.modules[name].__file__ or "" for name in _JUDGES)
        ]
        return [cls.VERSION, str(getattr(cerberus, "__version__", "")), code]


class _BodyChecker:
    """Runs the Cerberus schema over bodies, remembering what it found per split-off
    value.  No rule looks across keys, so each key's value can be checked alone: a
    table shared by many deployments (the env, the pull steps, the schedules) is
    checked once per run, and the remaining scalars of a mapping in one call.  With
    ``passed``, a remembered part (``_REMEMBERED``) that passed last run is not checked
    again."""

    def __init__(self, templates: Templates, passed: Passed | None = None) -> None:
        self._seen: dict[tuple[str, tuple[str, ...], str, str], _Found] = {}
        self._templates = templates
        self._kinds: dict[str, str] = {}
        self._passed = passed

    def problems(self, spec: DeploymentSpec) -> list[Problem]:
        body = spec.body
        if not isinstance(body, Mapping):
            return [_problem(spec, None, f"the deployment must be a mapping, got {_kind(body)}")]
        template = self._templates.get(pool_type(spec.type))
        if spec.type not in self._kinds:
            self._kinds[spec.type] = schema_key(spec.type, template or _ENV_ONLY)
        kind = self._kinds[spec.type]
        variables = body.get("job_variables")
        if template is None and isinstance(variables, Mapping):
            # A pool type known only to the server: its live template judges the
            # variables before a write (pipeline.check_server); here only env.
            body = {**body, "job_variables": {k: v for k, v in variables.items() if k == "env"}}
        found = self._mapping(kind, (), body)
        return [_problem(spec, path, message) for path, message in found]

    def _mapping(self, kind: str, path: tuple[str, ...], value: Mapping[str, Any]) -> _Found:
        fields = _fields(kind, path)
        found = [
            ((*path, key), "required key is missing")
            for key, rules in fields.items()
            if rules.get("required") and key not in value
        ]
        split = _SPLITS.get(path, ())
        rest: dict[str, Any] = {}
        for key, item in value.items():
            if key not in split:
                rest[key] = item
            elif (*path, key) in _SPLITS and isinstance(item, Mapping):
                found.extend(self._mapping(kind, (*path, key), item))
            else:
                found.extend(self._split_value(kind, path, key, item))
        if rest and path:
            # The rest of a nested mapping (job_variables' working_dir, image...) is
            # often the same across deployments: checked once per distinct value.
            found.extend(self._split_value(kind, path, "", rest, whole=True))
        elif rest:
            found.extend(self._judged(kind, path, "", rest))
        return tuple(found)

    def _split_value(
        self, kind: str, path: tuple[str, ...], key: str, value: Any, *, whole: bool = False
    ) -> _Found:
        memo = (kind, path, key, repr(value))
        if memo not in self._seen:
            self._seen[memo] = self._judged(kind, path, key, value, whole=whole)
        return self._seen[memo]

    def _judged(
        self, kind: str, path: tuple[str, ...], key: str, value: Any, *, whole: bool = False
    ) -> _Found:
        """What Cerberus finds in ``value`` (the part ``key`` of the mapping at ``path``,
        or with ``whole`` or no ``key`` the mapping's other keys): () at once for a
        remembered part that passed last run."""
        document = value if whole or not key else {key: value}
        if self._passed is None or (path, key) not in _REMEMBERED:
            return _run(kind, path, key, document)
        text = repr((kind, path, key, value)).encode()
        digest = hashlib.blake2b(text, digest_size=16).hexdigest()
        if digest in self._passed:
            return ()
        found = _run(kind, path, key, document)
        if not found:
            self._passed.add(digest)
        return found


def _run(kind: str, path: tuple[str, ...], part: str, document: dict[str, Any]) -> _Found:
    """Cerberus over part of the mapping at ``path``; key paths start at the body's
    top, and messages quote the mapping's whole schema (its allowed keys)."""
    validator = _validator(kind, path, part)
    if validator.validate(document, normalize=False):
        return ()
    fields = _fields(kind, path)
    return tuple(
        ((*path, *error.document_path), _message(error, fields))
        for error in _leaves(validator._errors)
    )


def ensure_valid(
    specs: Sequence[DeploymentSpec],
    flows: Sequence[FlowMetadata],
    *,
    functions: Mapping[str, Sequence[str]] | None = None,
    templates: Templates | None = None,
) -> None:
    """Raise ``ValidationFailed`` carrying every problem, if there is any."""
    problems = validate_specs(specs, flows, functions=functions, templates=templates)
    if problems:
        raise ValidationFailed(problems)


def image_reference_problem(reference: str) -> str | None:
    """None for a well-formed docker image reference, else what is wrong with it."""
    match = IMAGE_REFERENCE.fullmatch(reference)
    if match is None:
        expected = (
            "[registry[:port]/]path[:tag][@digest], e.g. registry.example.com:5000/team/flow:1.0"
        )
        if reference != reference.strip() or any(c.isspace() for c in reference):
            why = "it contains whitespace"
        elif IMAGE_REFERENCE.fullmatch(_lower_path(reference)):
            why = "the repository path must be lowercase"
        else:
            why = f"expected {expected}"
        return f"is not a valid docker image reference ({why}; got {_shown(reference)})"
    if len(match.group("name")) > IMAGE_NAME_MAX_LENGTH:
        return f"the image name is longer than {IMAGE_NAME_MAX_LENGTH} characters"
    return None


def _lower_path(reference: str) -> str:
    """The reference with its path (not its registry host, tag or digest) lowercased."""
    name, sep, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = name[colon:] if colon > slash else ""
    name = name[: len(name) - len(tag)] if tag else name
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = f"{first}/{rest.lower()}"
    else:
        name = name.lower()
    return name + tag + sep + digest


# ------------------------------------------------------------ flattening Cerberus errors


def _leaves(errs: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """The errors that name a rule, with Cerberus's group errors opened up."""
    for error in errs:
        if error.is_logic_error:
            for definition_errors in error.definitions_errors.values():
                yield from _leaves(definition_errors)
        elif error.is_group_error:
            yield from _leaves(error.child_errors)
        else:
            yield error


def _rules_at(schema: Mapping[str, Any], path: Sequence[Any]) -> Any:
    """Follow a Cerberus schema path through our plain schema.  List indexes and
    dict keys that Cerberus puts into child schemas have no node of their own."""
    node: Any = schema
    for part in path:
        if isinstance(node, Mapping):
            child = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            child = node[part]
        else:
            child = None
        if isinstance(child, (Mapping, list)):
            node = child
    return node


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "float": "a number",
    "boolean": "true or false",
    "dict": "a mapping",
    "list": "a list",
    "datetime": "a date and time",
    "date": "a date",
}


def _message(error: ValidationError, schema: Mapping[str, Any]) -> str:
    code = error.code
    value = error.value
    if code == errors.UNKNOWN_FIELD.code:
        fields = _rules_at(schema, error.schema_path)
        allowed = ", ".join(sorted(str(k) for k in fields)) if isinstance(fields, Mapping) else ""
        return f"unknown key (allowed: {allowed})" if allowed else "unknown key"
    if code == errors.CUSTOM.code:
        return str(error.info[0])
    if code == errors.REQUIRED_FIELD.code:
        return "required key is missing"
    rules = _rules_at(schema, error.schema_path[:-1])
    meta = rules.get("meta", {}) if isinstance(rules, Mapping) else {}
    hint = meta.get("hint") if isinstance(meta, Mapping) else None
    is_key = "keysrules" in error.schema_path
    subject = "key name " if is_key else ""
    if code == errors.NOT_NULLABLE.code:
        return "must not be null"
    if code == errors.EMPTY_NOT_ALLOWED.code:
        return f"{subject}must not be empty"
    if code == errors.BAD_TYPE.code:
        wanted = error.constraint if isinstance(error.constraint, list) else [error.constraint]
        words = hint or " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in wanted)
        return f"{subject}must be {words} (got {_kind(value)} {_shown(value)})"
    if code == errors.REGEX_MISMATCH.code:
        words = hint or f"text matching {error.constraint}"
        return f"{subject}must be {words} (got {_shown(value)})"
    if code == errors.MIN_VALUE.code:
        return f"must be at least {error.constraint} (got {_shown(value)})"
    if code == errors.MAX_VALUE.code:
        return f"must be at most {error.constraint} (got {_shown(value)})"
    if code in (errors.MIN_LENGTH.code, errors.MAX_LENGTH.code):
        size = len(value) if hasattr(value, "__len__") else "?"
        if hint:
            return f"must be {hint} (got {size} keys)"
        bound = "at least" if code == errors.MIN_LENGTH.code else "at most"
        return f"must have {bound} {error.constraint} item(s) (got {size})"
    if code == errors.UNALLOWED_VALUE.code:
        choices = ", ".join(str(c) for c in error.constraint)
        return f"must be one of: {choices} (got {_shown(value)})"
    if code == errors.BAD_TYPE_FOR_SCHEMA.code:
        return f"must be a mapping or list (got {_kind(value)})"
    return f"breaks the {error.rule!r} rule ({error.constraint!r}; got {_shown(value)})"


def _kind(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        dict: "mapping",
        list: "list",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------------------- schedules


def _schedule_shape_ok(schedule: Mapping[str, Any]) -> bool:
    """True when every key is known and every value has its type (else Cerberus has
    reported it, and Prefect's model would only repeat it in other words)."""
    checks = {
        "cron": lambda v: isinstance(v, str),
        "rrule": lambda v: isinstance(v, str),
        "interval": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "timezone": lambda v: v is None or isinstance(v, str),
        "anchor_date": lambda v: isinstance(v, (str, datetime)),
        "day_or": lambda v: isinstance(v, bool),
    }
    return all(key in SCHEDULE and checks[key](value) for key, value in schedule.items())


def _frozen(schedule: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    # The type is part of the key: 0 == 0.0 == False, but messages quote the value.
    return tuple(sorted((k, type(v).__name__, v) for k, v in schedule.items()))


@lru_cache(maxsize=1024)
def _schedule_errors(
    kind: str, items: tuple[tuple[str, str, Any], ...]
) -> tuple[tuple[tuple[str, ...], str], ...]:
    """Prefect's verdict on one schedule: ``((key path, message), ...)``, empty when the
    schedule is valid.  Cached: the same schedule is usually shared by many flows."""
    # Imported here: Prefect costs seconds to import, and most runs need no schedule.
    import pydantic
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    model = {"cron": CronSchedule, "interval": IntervalSchedule, "rrule": RRuleSchedule}[kind]
    values = {key: value for key, _, value in items}
    try:
        model(**values)
    except pydantic.ValidationError as exc:
        found = []
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"])
            found.append(_schedule_message(kind, loc, err, values))
        return tuple(found)
    return ()


def _schedule_message(
    kind: str, loc: tuple[str, ...], err: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[tuple[str, ...], str]:
    message = str(err["msg"]).removeprefix("Value error, ")
    if not loc and "timezone" in message.lower() and "timezone" in values:
        loc = ("timezone",)  # IntervalSchedule checks the timezone in a model validator
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(_SCHEDULE_FIELDS[kind])
        return loc, f"not allowed in a {kind} schedule (allowed: {allowed})"
    if loc == ("interval",) and err["type"] == "greater_than":
        return loc, f"must be a positive number of seconds (got {_shown(values.get('interval'))})"
    return loc, message


# ----------------------------------------------------------------------- cross checks


class _FlowIndex:
    """The discovered flows, looked up by either entrypoint form."""

    def __init__(self, flows: Sequence[FlowMetadata], functions: Mapping[str, Sequence[str]]):
        self.flows = list(flows)
        self.functions = {path: tuple(names) for path, names in functions.items()}
        self.by_entrypoint: dict[str, FlowMetadata] = {}
        self.by_file: dict[str, list[FlowMetadata]] = defaultdict(list)
        for flow in self.flows:
            self.by_entrypoint[flow.entrypoint] = flow
            self.by_entrypoint.setdefault(flow.module_entrypoint, flow)
            self.by_file[flow.path].append(flow)

    def find(self, entrypoint: str) -> FlowMetadata | None:
        return self.by_entrypoint.get(entrypoint.removeprefix("./"))

    def why_missing(self, entrypoint: str) -> str:
        target, _, function = entrypoint.removeprefix("./").rpartition(":")
        path_form = target.endswith(".py")
        if path_form:
            path: str | None = target
        else:
            known = {*self.by_file, *self.functions}
            path = next((p for p in sorted(known) if module_path_for(p) == target), None)
        if path is not None and function in self.functions.get(path, ()):
            return (
                f"{function}() in {path} is not a flow: decorate it with @flow "
                "(from prefect import flow)"
            )
        if path is not None and path in self.by_file:
            there = ", ".join(sorted(f.function for f in self.by_file[path]))
            return f"{path} has no flow {function!r}; flows in that file: {there}"
        if path is not None and path in self.functions:
            return f"{path} defines no flow {function!r} (and no flow at all)"
        candidates = sorted(
            e for e in self.by_entrypoint if e.partition(":")[0].endswith(".py") == path_form
        )
        close = difflib.get_close_matches(entrypoint, candidates, n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        shown = path or target
        return (
            f"no discovered flow at {entrypoint!r} ({shown} is not a flow file under the "
            f"flow roots){hint}"
        )


def _cross_check(spec: DeploymentSpec, index: _FlowIndex) -> Iterator[Problem]:
    body = spec.body
    if not isinstance(body, Mapping):
        return
    entrypoint = body.get("entrypoint")
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        return  # the schema reports it
    flow = index.find(entrypoint)
    if flow is None:
        yield _problem(spec, ("entrypoint",), index.why_missing(entrypoint))
        return
    if not flow.is_valid:
        yield _problem(
            spec,
            ("entrypoint",),
            f"points at flow {flow.name!r}, which has problems: {'; '.join(flow.problems)}",
        )
    flow_name = body.get("flow_name")
    if isinstance(flow_name, str) and flow_name and flow_name != flow.name:
        yield _problem(
            spec,
            ("flow_name",),
            f"is {flow_name!r}, but the flow at {entrypoint} is named {flow.name!r}",
        )
    parameters = body.get("parameters")
    if isinstance(parameters, Mapping):
        yield from _parameter_problems(spec, flow, parameters)


def _parameter_problems(
    spec: DeploymentSpec, flow: FlowMetadata, parameters: Mapping[str, Any]
) -> Iterator[Problem]:
    named = [p for p in flow.parameters if p.kind not in _VAR_KINDS]
    by_name = {p.name: p for p in named}
    takes_any = any(p.kind == "var_keyword" for p in flow.parameters)
    accepted = ", ".join(by_name) or "no parameters"
    for name, value in parameters.items():
        key = ("parameters", str(name))
        source = _parameter_source(spec, flow, str(name))
        param = by_name.get(name)
        if param is None:
            if not takes_any:
                yield _problem(
                    spec,
                    key,
                    f"unknown parameter {name!r}: flow {flow.name!r} accepts {accepted}",
                    source=source,
                )
            continue
        if param.annotation and python_type_check(param.annotation, value) is False:
            yield _problem(
                spec,
                key,
                f"parameter {name!r} of flow {flow.name!r} expects {param.annotation}, "
                f"got {_kind(value)} {_shown(value)}",
                source=source,
            )
    # A required parameter without a value is no problem: each run passes it (build
    # notes it, and warns when a schedule would start runs without it).


def _parameter_source(spec: DeploymentSpec, flow: FlowMetadata, name: str) -> str:
    known = spec.sources.get(f"parameters.{name}")
    if known:
        return f"settings key {known!r}"
    return f"settings key 'parameters.{name}' or 'flows.{flow.name}.parameters.{name}'"


def _duplicate_names(specs: Sequence[DeploymentSpec]) -> Iterator[Problem]:
    """Two deployments of one flow with one name: Prefect would keep only one."""
    users: dict[str, list[DeploymentSpec]] = defaultdict(list)
    for spec in specs:
        name = spec.body.get("name") if isinstance(spec.body, Mapping) else None
        if isinstance(name, str) and name:
            users[f"{spec.body.get('flow_name')}/{name}"].append(spec)
    for full_name, same in users.items():
        if len(same) < 2:
            continue
        who = "; ".join(
            sorted(
                f"{s.body.get('entrypoint')} ({s.type}, {s.source or 'no template'})" for s in same
            )
        )
        yield Problem(
            message=(
                f"deployment {full_name!r} is used by {len(same)} deployments: {who}; "
                "each deployment of a flow needs its own name (see the naming settings, "
                "or name one per file with settings key 'flows.\"<entrypoint>\".name')"
            ),
            deployment=full_name,
            key="name",
            source=", ".join(sorted({s.source for s in same if s.source})) or None,
        )


# ----------------------------------------------------------------------------- helpers


def _problem(
    spec: DeploymentSpec,
    path: Sequence[Any] | None,
    message: str,
    *,
    source: str | None = None,
) -> Problem:
    key = ".".join(str(part) for part in path) if path else None
    name = spec.body.get("name") if isinstance(spec.body, Mapping) else None
    deployment = name if isinstance(name, str) and name else _fallback_name(spec)
    if source is None:
        source = spec.source or None
        settings_key = _settings_key(spec, key)
        if settings_key:
            message = f"{message}; settings key {settings_key!r}"
    return Problem(message=message, deployment=deployment, key=key, source=source)


def _settings_key(spec: DeploymentSpec, key: str | None) -> str | None:
    """The settings key a body value came from, when build recorded it (the key itself,
    or the nearest recorded parent: ``schedules.0.schedule.cron`` -> ``schedules``)."""
    parts = key.split(".") if key else []
    while parts:
        found = spec.sources.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return None


def _fallback_name(spec: DeploymentSpec) -> str:
    return f"{spec.flow.name} ({spec.type})"


# One checker per live template: it remembers what it found in each shared value (the
# env of a thousand deployments is checked once).
_LIVE_CHECKERS: dict[str, _BodyChecker] = {}


def pool_problems(
    spec: DeploymentSpec, pool_name: str, pool: Mapping[str, Any] | None, *, api_url: str = ""
) -> list[Problem]:
    """Why ``spec`` does not fit work pool ``pool`` (the server's JSON, None if missing)."""
    def problem(message: str, key: str) -> Problem:
        return Problem(message, key=key, deployment=spec.full_name, source=spec.source)

    expected = pool_type(spec.type)
    if pool is None:
        server = f" on {api_url}" if api_url else ""
        return [
            problem(
                f"work pool {pool_name!r} does not exist{server}; create it with "
                f"`invoke pools --env {spec.env} --create` (a {expected} pool)",
                "work_pool_name",
            )
        ]
    if pool.get("type") != expected:
        return [
            problem(
                f"work pool {pool_name!r} is a {pool.get('type')!r} pool, but {spec.type} "
                f"deployments need a {expected!r} pool",
                "work_pool_name",
            )
        ]
    where = f"work pool {pool_name!r} ({pool.get('type')})"
    template = pool.get("base_job_template")
    problems = job_variable_problems(spec, template, pool=where)
    if problems or not isinstance(template, Mapping) or not isinstance(spec.body, Mapping):
        return problems
    # The values too, by the live template's own rules (a pool may narrow its defaults'
    # types or enums), and the variables it requires that neither it nor the
    # deployment gives a value.
    variables = spec.body.get("job_variables")
    if isinstance(variables, Mapping):
        kind = schema_key(spec.type, template)
        checker = _LIVE_CHECKERS.setdefault(kind, _BodyChecker({expected: template}))
        for path, message in checker._mapping(kind, ("job_variables",), variables):
            problems.append(_problem(spec, path, f"{message} (by the job template of {where})"))
        props = (template.get("variables") or {}).get("properties") or {}
        for name in (template.get("variables") or {}).get("required") or ():
            prop = props.get(name)
            if name in variables or (isinstance(prop, Mapping) and "default" in prop):
                continue
            problems.append(
                _problem(
                    spec,
                    ("job_variables", name),
                    f"{where} requires job variable {name!r} and gives it no default; set it "
                    f"in the deployment (a {pool_type(spec.type)}_<env>.yaml template, or "
                    "a default in the pool's base job template)",
                )
            )
    return problems


def job_variable_problems(
    spec: DeploymentSpec, template: Mapping[str, Any] | None, *, pool: str
) -> list[Problem]:
    """One problem per job variable of ``spec`` that the base job ``template`` does not
    define (the server silently accepts unknown ones, so a typo such as ``mem_limt``
    would be lost); ``pool`` says in words whose template it is.  No template, or one
    that defines no variables, checks nothing."""
    defined = set(((template or {}).get("variables") or {}).get("properties") or {})
    if not defined:
        return []
    return [
        Problem(
            f"job variable {name!r} is not defined by {pool}; it accepts: "
            f"{', '.join(sorted(defined))}",
            deployment=spec.full_name,
            key=f"job_variables.{name}",
            source=spec.source,
        )
        for name in sorted(spec.body.get("job_variables") or {})
        if name not in defined
    ]


def default_job_variable_problems(
    specs: Iterable[DeploymentSpec], templates: Mapping[str, Mapping[str, Any] | None]
) -> list[Problem]:
    """Offline: each spec's job variables against the default base job template of the
    work pool type it needs (``templates`` maps a pool type to Prefect's bundled
    template; the live pool is checked again before a deploy, ``pool_problems``)."""
    problems: list[Problem] = []
    for spec in specs:
        kind = pool_type(spec.type)
        where = (
            f"the default job template of {kind} work pools "
            f"(work pool {spec.body.get('work_pool_name')!r})"
        )
        problems += job_variable_problems(spec, templates.get(kind), pool=where)
    return problems




def _trigger_problems(spec: DeploymentSpec) -> Iterator[Problem]:
    """Each trigger judged by Prefect's own deployment-trigger models (imported only
    when a deployment has triggers), with the key path of what it refused."""
    for index, trigger in enumerate(spec.triggers):
        try:
            trigger_automation(trigger)
        except _TriggerInvalid as exc:
            for loc, message in exc.errors:
                path = ("triggers", index, *loc)
                yield _problem(spec, path, message, source=spec.source or None)


class _TriggerInvalid(Exception):
    def __init__(self, errors: list[tuple[tuple[Any, ...], str]]) -> None:
        super().__init__("; ".join(m for _, m in errors))
        self.errors = errors


def trigger_automation(trigger: Mapping[str, Any]) -> dict[str, Any]:
    """The automation Prefect creates for a deployment ``trigger`` (event, compound,
    sequence or metric; Prefect's own ``DeploymentTriggerTypes`` and ``as_automation``),
    as JSON, with ``AUTOMATION_DEPLOYMENT_MARK`` where the deployment's id goes.  Raises
    ``_TriggerInvalid`` naming each refused key."""
    from prefect.events import DeploymentTriggerTypes  # about a second: only when used
    from pydantic import TypeAdapter
    from pydantic import ValidationError as PydanticError

    if not isinstance(trigger, Mapping):
        raise _TriggerInvalid([((), f"must be a table, got {_kind(trigger)}")])
    try:
        model = _trigger_adapter(TypeAdapter, DeploymentTriggerTypes).validate_python(dict(trigger))
    except PydanticError as exc:
        errors = []
        for error in exc.errors():
            # Drop pydantic's union tag ("event", "compound", ...) from the path.
            loc = tuple(p for p in error["loc"][1:] if not str(p).endswith("]"))
            errors.append((loc, str(error["msg"])))
        raise _TriggerInvalid(errors) from exc
    import uuid

    model.set_deployment_id(uuid.UUID(AUTOMATION_DEPLOYMENT_MARK))
    data: dict[str, Any] = json.loads(model.as_automation().model_dump_json())
    return data


@cache
def _trigger_adapter(adapter: Any, kind: Any) -> Any:
    return adapter(kind)


def _reserved_tags(spec: DeploymentSpec) -> Iterator[Problem]:
    """A tag that looks like this tool's own (``env:``, ``runtime:``, ``project:``,
    ``managed-by``) must be exactly the one build gives the deployment: another would
    make it pass for a deployment of another environment, type or project."""
    tags = spec.body.get("tags") if isinstance(spec.body, Mapping) else None
    if not isinstance(tags, list):
        return
    own = {f"{RUNTIME_TAG_PREFIX}{spec.type}", f"{ENV_TAG_PREFIX}{spec.env}", MANAGED_BY_TAG}
    projects = [t for t in tags if isinstance(t, str) and t.startswith(PROJECT_TAG_PREFIX)]
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.startswith(RESERVED_TAG_PREFIXES):
            continue
        if tag in own or (tag.startswith(PROJECT_TAG_PREFIX) and len(projects) == 1):
            continue
        yield _problem(
            spec,
            ("tags", index),
            f"tag {tag!r} is reserved: tags starting with "
            f"{', '.join(RESERVED_TAG_PREFIXES)} say who owns a deployment, and this tool "
            "sets them itself",
        )
