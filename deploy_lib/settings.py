"""settings.toml, .secrets.toml, DEPLOY_* variables and .env files -> one frozen Settings.

The layers, lowest first; each merges into the ones below it table by table, and any
other value (a list, a string, a number) replaces the one below:

    settings.toml  [default]                 source "default"
    settings.toml  [<env>], then [global]    source "environment [<env>]" / "[global]"
    .secrets.toml  [default], [<env>], [global]   source "secrets file"
    DEPLOY_* environment variables           source "env var DEPLOY_X"
                                             (DEPLOY_WORK_POOL__PYTHON=x sets work_pool.python)

and for ``env_vars`` (the job's environment) three more on top:
``.env`` < ``.env.<env>`` < ``DEPLOY_ENV_VARS__NAME`` (its raw string wins last).

One engine layers them: ``_Layering`` below, which records where each value came from
as it merges (``invoke config --explain``) and which keys a secrets layer set.  It
follows Dynaconf's conventions (the file names, ``[default]``/``[<env>]``/``[global]``,
the ``DEPLOY_`` prefix with ``__`` for nesting, ``DEPLOY_ENV`` as the switch, keys
matched ignoring case, a variable's value read as TOML), but not its merge, which
concatenates lists at every depth with no way to replace one (its maintainers track a
list strategy as dynaconf#299).  Dynaconf then validates the merged result: its
``Validator`` rules below check every key and ``validate_all`` reports every problem at
once.  This is the only module that imports Dynaconf.  Its own ``*_FOR_DYNACONF``
variables and side files (``settings.local.toml``, ``dynaconf_hooks.py``) are refused,
so nothing outside ``root`` and ``DEPLOY_*`` decides what is read; ``DEPLOY_ENV`` and
``DEPLOY_DEBUG`` share our prefix: they are switches, never settings.  Values are plain
TOML: Dynaconf's ``@format`` / ``@jinja`` / ``@read_file`` tokens are not interpreted.

Reading the files and the environment is the only side effect; the result is a value.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dynaconf import Dynaconf, ValidationError, Validator

from deploy_lib.errors import DeployError, SettingsError, UnknownEnvironmentError
from deploy_lib.models import (
    COLLISION_STRATEGIES,
    RESERVED_TAG_PREFIXES,
    Masker,
    Settings,
    is_secret_name,
    is_type_name,
    used_types,
)
from deploy_lib.models import plain as _plain
from deploy_lib.pools import parse_cpu, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, as Dynaconf vendors it
    from dynaconf.vendor import tomllib

__all__ = [
    "DEFAULT_ENV",
    "environments",
    "load_settings",
]

SETTINGS_FILE = "settings.toml"
SECRETS_FILE = ".secrets.toml"
DEFAULT_ENV = "development"
ENV_SWITCH = "DEPLOY_ENV"
PREFIX = "DEPLOY_"
# DEPLOY_ENV picks the environment, DEPLOY_DEBUG shows tracebacks: neither is a setting.
_SWITCHES = frozenset({"ENV", "DEBUG"})
# Top-level tables of settings.toml that are not environments.
_NOT_ENVIRONMENTS = frozenset({"default", "global"})
# Dynaconf would read these beside settings.toml on its own; their values would be neither
# attributed nor masked, and dynaconf_hooks.py would run code, so they are refused.
_UNSUPPORTED_FILES = ("settings.local.toml", ".secrets.local.toml", "dynaconf_hooks.py")
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


# -- public -----------------------------------------------------------------------------


def load_settings(env: str | None, root: Path) -> Settings:
    """Load the settings of ``env`` (else ``$DEPLOY_ENV``, else development) under ``root``.

    Reads ``root/settings.toml`` (required), ``root/.secrets.toml``, ``root/.env`` and
    ``root/.env.<env>`` (optional) and the ``DEPLOY_*`` environment variables; nothing
    from the current directory.  Returns a frozen ``Settings``.  Raises
    ``UnknownEnvironmentError`` for an environment settings.toml does not define, and
    ``SettingsError`` naming the file, line or key for anything else wrong, listing every
    invalid key at once.
    """
    root = Path(root).resolve()
    settings_path = root / SETTINGS_FILE
    secrets_path = root / SECRETS_FILE
    _refuse_dynaconf_variables()
    _refuse_unsupported_files(root)

    base = _read_toml(settings_path)
    valid = _environment_names(base, settings_path)
    name = env or os.environ.get(ENV_SWITCH) or DEFAULT_ENV
    if name not in valid:
        raise UnknownEnvironmentError(name, valid, path=str(settings_path))
    secrets = _read_toml(secrets_path) if secrets_path.exists() else None
    try:
        return _load(name, root, base, secrets, secrets_path, valid)
    except DeployError as exc:
        # Whoever prints it (a --debug traceback included) can mask these.
        exc.secrets = frozenset(_secret_values({}, set(), secrets))
        raise


def _load(
    name: str,
    root: Path,
    base: Mapping[str, Any],
    secrets: dict[str, Any] | None,
    secrets_path: Path,
    valid: list[str],
) -> Settings:
    """``load_settings`` once the environment is known and the files are read."""
    if secrets is not None:
        _check_sections(secrets, secrets_path)

    layering = _Layering()
    for source, section in (
        ("default", "default"),
        (f"environment [{name}]", name),
        ("environment [global]", "global"),
    ):
        layering.add(source, _section(base, section))
    for section in ("default", name, "global"):
        layering.add("secrets file", _section(secrets, section), secret=True)
    for variable, tree in _variables():
        layering.add(f"env var {variable}", tree)
    data, sources = layering.data, layering.sources
    if "project" not in data:  # the project folder's name, as a slug
        data["project"] = _slug(root.name)
        sources["project"] = "the project folder's name"
    unknown, unknown_warnings = _unknown_keys(data, sources)
    _validate(name, data, sources, Masker(_secret_values({}, set(), secrets)), unknown)

    sources.update(_layer_env_vars(data, root, name))
    secret_keys = _secret_keys(data, layering.secret_paths)
    return Settings(
        env=name,
        root=root,
        data=data,
        sources=sources,
        secret_keys=frozenset(secret_keys),
        secret_values=frozenset(_secret_values(data, secret_keys, secrets)),
        warnings=tuple(
            [*_warnings(secrets_path, secrets, valid), *unknown_warnings]
        ),
    )


def environments(root: Path) -> list[str]:
    """The environments ``root/settings.toml`` defines, in file order.

    Raises ``SettingsError`` when the file is missing or is not valid TOML.
    """
    path = Path(root).resolve() / SETTINGS_FILE
    return _environment_names(_read_toml(path), path)


# -- files ------------------------------------------------------------------------------


def _refuse_dynaconf_variables() -> None:
    found = sorted(name for name in os.environ if name.endswith("_FOR_DYNACONF"))
    if found:
        raise SettingsError(
            f"environment variable(s) {', '.join(found)} configure Dynaconf itself and would "
            "change which files and variables are read; deploy_lib configures it explicitly, "
            "so unset them"
        )


def _refuse_unsupported_files(root: Path) -> None:
    for name in _UNSUPPORTED_FILES:
        path = root / name
        if path.exists():
            raise SettingsError(
                "is not supported: put local values in .secrets.toml or DEPLOY_ "
                "environment variables so they are attributed and masked",
                path=str(path),
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        if path.exists() and not path.is_file():
            raise SettingsError("is not a regular file (a FIFO, device or folder)", path=str(path))
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise SettingsError(
            "file not found; every project needs settings.toml at its root", path=str(path)
        ) from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"is not UTF-8 text (byte {exc.start} cannot be decoded)", path=str(path)
        ) from exc
    except OSError as exc:
        raise SettingsError(f"cannot be read: {exc.strerror}", path=str(path)) from exc
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise SettingsError(
            f"tables nested too deeply to read (more than {MAX_DEPTH} levels are no settings)",
            path=str(path),
        ) from None
    except tomllib.TOMLDecodeError as exc:
        reason = str(exc)
        match = _TOML_POSITION.search(reason)
        if match:
            reason = reason[: match.start()].strip()
            where = f"line {match.group(1)}, column {match.group(2)}"
            raise SettingsError(
                f"invalid TOML at {where}: {reason}", path=f"{path}:{match.group(1)}"
            ) from exc
        raise SettingsError(f"invalid TOML: {reason}", path=str(path)) from exc
    deepest = _too_deep(data)
    if deepest is not None:
        raise SettingsError(
            f"key {deepest}... is nested more than {MAX_DEPTH} levels deep; no setting is",
            path=str(path),
        )
    return data


# Settings are a few tables deep; far deeper nesting is an attack on the recursion limit.
MAX_DEPTH = 32


def _too_deep(data: Any, depth: int = 0, path: str = "") -> str | None:
    """The dotted start of a key nested deeper than ``MAX_DEPTH``, else None (iterative
    over lists, so it cannot overflow itself)."""
    stack: list[tuple[Any, int, str]] = [(data, depth, path)]
    while stack:
        node, level, where = stack.pop()
        if level > MAX_DEPTH:
            return ".".join(where.split(".")[:3])
        if isinstance(node, Mapping):
            stack.extend((v, level + 1, f"{where}.{k}" if where else str(k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, level + 1, where) for v in node)
    return None


def _check_sections(raw: Mapping[str, Any], path: Path) -> None:
    """Every top-level entry must be a [section]; anything else Dynaconf would ignore."""
    for key, value in raw.items():
        if not isinstance(value, Mapping):
            raise SettingsError(
                "is outside any [section]; put it under [default] or an environment",
                path=str(path),
                key=key,
            )


_ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")


def _environment_names(raw: Mapping[str, Any], path: Path) -> list[str]:
    """The environments of a settings file: its top-level tables but [default] and
    [global].  A name becomes part of paths (build/<env>, the lock file) and tags, so it
    must be a safe slug: letters, digits, '_' and '-'."""
    _check_sections(raw, path)
    names = [
        key
        for key in raw
        if key.lower() not in _NOT_ENVIRONMENTS and not key.lower().startswith("dynaconf")
    ]
    settings_keys = _known_keys()
    for name in names:
        if name.lower() in settings_keys:
            raise SettingsError(
                f"[{name}] is a settings table outside any environment; put it under "
                f"[default.{name}] or [<env>.{name}]",
                path=str(path),
            )
        if not _ENV_NAME.match(name):
            raise SettingsError(
                f"environment [{name!r}] is not a safe name: use letters, digits, '_' and "
                "'-' (at most 63), since it becomes part of file paths and tags",
                path=str(path),
            )
    return names


def _section(raw: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """A section of a settings file, found the way Dynaconf finds it (ignoring case)."""
    for key, value in (raw or {}).items():
        if key.lower() == name.lower() and isinstance(value, Mapping):
            return value
    return {}


# -- layering ---------------------------------------------------------------------------

KeyPath = tuple[str, ...]


class _Layering:
    """Merges layers, lowest first, into ``data``: a table merges into the table below it
    key by key (keys matched ignoring case, the first spelling kept); anything else
    replaces what was below.  ``sources`` maps each dotted leaf to the layer that set
    it; ``secret_paths`` holds the (lower-cased) key paths a secret layer set."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.secret_paths: set[KeyPath] = set()

    def add(self, source: str, tree: Mapping[str, Any], *, secret: bool = False) -> None:
        self._merge(self.data, tree, (), source, secret)

    def _merge(
        self, into: dict[str, Any], tree: Mapping[str, Any], prefix: KeyPath, source: str,
        secret: bool,
    ) -> None:
        for raw_key, value in tree.items():
            key = str(raw_key)
            if key.lower().startswith("dynaconf_"):  # Dynaconf's own markers
                continue
            key = _spelling(into, key)
            path = (*prefix, key)
            below = into.get(key)
            if isinstance(value, Mapping) and isinstance(below, dict):
                self._merge(below, value, path, source, secret)  # an empty table adds nothing
                continue
            self._forget(path)
            into[key] = _plain(value)
            for leaf, _ in _leaves(into[key], path) if isinstance(value, Mapping) and value else [
                (path, value)
            ]:
                self.sources[".".join(leaf)] = source
                if secret:
                    self.secret_paths.add(_fold(leaf))

    def _forget(self, path: KeyPath) -> None:
        dotted = ".".join(path)
        for key in [k for k in self.sources if k == dotted or k.startswith(dotted + ".")]:
            del self.sources[key]


def _spelling(table: Mapping[str, Any], key: str) -> str:
    """``key`` as ``table`` already spells it (matched ignoring case), else as given."""
    if key in table:
        return key
    folded = key.lower()
    return next((k for k in table if k.lower() == folded), key)


def _variables() -> list[tuple[str, dict[str, Any]]]:
    """``(name, tree)`` for each DEPLOY_* variable that is a setting: its name split on
    ``__`` into a key path (setting names lower-cased, names a user chose kept: see
    ``_NAMED_BY_USER``) and its value read as TOML, as
    Dynaconf reads it (``8`` an integer, ``["a"]`` a list, ``True``/``true`` a boolean,
    anything that does not parse a string)."""
    found = []
    for name, raw in os.environ.items():
        rest = name[len(PREFIX) :]
        if not name.startswith(PREFIX) or not rest or rest.upper() in _SWITCHES:
            continue
        parts = [part for part in rest.split("__") if part]
        if not parts:
            continue
        tree: Any = _variable_value(raw)
        for part in reversed(_key_path(parts)):
            tree = {part: tree}
        found.append((name, tree))
    return found


# Tables whose keys are names a user chose (a variable, a parameter, a flow): a variable
# keeps their spelling; every other key of a variable's name is a setting, lower-cased.
_NAMED_BY_USER = frozenset({"env_vars", "parameters", "flows"})


def _key_path(parts: list[str]) -> list[str]:
    path: list[str] = []
    for part in parts:
        path.append(part if path and path[-1].lower() in _NAMED_BY_USER else part.lower())
    return path


def _variable_value(raw: str) -> Any:
    text = raw.strip()
    if text in ("True", "False"):
        return text == "True"
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw  # not a TOML value (or an absurdly nested one): the text itself
    return raw if _too_deep(value) is not None else value


def _leaves(tree: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    for key, value in tree.items():
        if str(key).lower().startswith("dynaconf_"):
            continue
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _dotted_leaves(tree: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(".".join(path), value) for path, value in _leaves(tree)]


def _fold(path: KeyPath) -> KeyPath:
    return tuple(part.lower() for part in path)


# -- validation -------------------------------------------------------------------------


def _is_int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 10**7


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_filled_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(item, str) for item in v)


_is_type = is_type_name


def _is_types(v: Any) -> bool:
    return _is_str_list(v) and bool(v) and all(map(_is_type, v))


def _parses(parse: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """A rule that holds when ``parse`` reads the value (``pools.parse_size``, ...)."""

    def check(v: Any) -> bool:
        try:
            parse(v)
        except ValueError:
            return False
        return True

    return check


_is_cpu = _parses(parse_cpu)
_is_size = _parses(parse_size)


_STRATEGY = '"ENQUEUE" or "CANCEL_NEW"'
# What a [resources] table (or a [resources.<type>] table in it, or a flow's) may hold.
_RESOURCE_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "concurrency_limit": ("an integer of at least 1", _is_int(1)),
    "collision_strategy": (_STRATEGY, lambda v: v in COLLISION_STRATEGIES),
    "cpu": ('a number of CPUs such as 0.5, 2 or "500m"', _is_cpu),
    "memory": ('a size such as "512m", "2g" or "1Gi"', _is_size),
    "memory_swap": ('a size such as "2g"', _is_size),
    "mem_limit": ('a size such as "1g" (the older name of memory)', _is_size),
    "memswap_limit": ('a size such as "2g" (the older name of memory_swap)', _is_size),
}


def _resource_problems(table: Any, prefix: str, nested: bool = True) -> list[tuple[str, str]]:
    """``(dotted key, what is wrong)`` for each bad key of a resources table; with
    ``nested``, a table named after a deployment type holds that type's own (kept even
    where the type is not in use: [default] may hold the limits of a type only one
    environment deploys)."""
    if not isinstance(table, Mapping):
        return [(prefix, f"must be a table of resource limits, got {table!r}")]
    out: list[tuple[str, str]] = []
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if nested and isinstance(value, Mapping) and _is_type(key):
            out += _resource_problems(value, dotted, nested=False)
        elif prefix == "resources" and key == "concurrency_limit":
            continue  # a rule of its own (required)
        elif key not in _RESOURCE_RULES:
            close = difflib.get_close_matches(str(key), list(_RESOURCE_RULES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((dotted, f"must be one of {', '.join(_RESOURCE_RULES)}{hint}, got an unknown key"))
        elif not _RESOURCE_RULES[key][1](value):
            out.append((dotted, f"must be {_RESOURCE_RULES[key][0]}, got {value!r}"))
    return out


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _is_url(v: Any) -> bool:
    return isinstance(v, str) and (v == "" or v.startswith(("http://", "https://")))


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:63]
    return slug or "project"


def _is_slug(v: Any) -> bool:
    return isinstance(v, str) and bool(_SLUG.match(v))


def _has_no_reserved_tag(v: Any) -> bool:
    """No tag of the list starts like the tool's own (env:, runtime:, project:, ...)."""
    if not isinstance(v, list):
        return True  # the list rule reports it
    return not any(isinstance(t, str) and t.startswith(RESERVED_TAG_PREFIXES) for t in v)


def _is_user_tags(v: Any) -> bool:
    return _is_str_list(v) and _has_no_reserved_tag(v)


_RESERVED = ", ".join(RESERVED_TAG_PREFIXES)
_NO_RESERVED = f"a list of tags none of which starts with {_RESERVED} (this tool's own tags)"


def _is_name_table(v: Any) -> bool:
    return isinstance(v, Mapping) and all(
        _is_type(k) and _is_filled_str(name) for k, name in v.items()
    )


def _is_pool_override(v: Any) -> bool:
    if isinstance(v, Mapping):
        return all(_is_type(k) for k in v) and all(map(_is_filled_str, v.values()))
    return _is_filled_str(v)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(item, Mapping) for item in v)


def _is_name_format(v: Any) -> bool:
    """A ``str.format`` pattern using only ``{flow}``, ``{env}`` and ``{type}``."""
    if not _is_filled_str(v):
        return False
    try:
        str(v).format(flow="f", env="e", type="t")
    except (KeyError, IndexError, ValueError):
        return False
    return True


_TYPES = (
    'a non-empty list of deployment types ("python", "docker", or a work pool type such '
    'as "kubernetes", "ecs", "cloud-run")'
)
_NAME_FORMAT = "a format such as \"{flow}-python\" using only {flow}, {env} and {type}"
NON_EMPTY = "a non-empty string"
STR_LIST = "a list of strings"
# key, what a valid value is, test, required
_RULES: list[tuple[str, str, Callable[[Any], bool], bool]] = [
    ("flow_roots", "a non-empty list of folder names", lambda v: _is_str_list(v) and bool(v), True),
    ("exclude", STR_LIST, _is_str_list, False),
    ("follow_outside_links", "true or false", _is_bool, False),
    ("entrypoint_style", '"path" or "module"', _one_of("path", "module"), True),
    ("deployment_types", _TYPES, _is_types, True),
    ("api_url", 'a string: "" (the embedded server) or an http(s):// URL', _is_url, True),
    ("api_urls", "a list of http(s):// URLs (the API processes of one server)",
     lambda v: _is_str_list(v) and all(_is_url(u) and u for u in v), False),
    ("api_key", "a string", _is_str, False),
    ("ca_bundle", '"" or the path of a CA bundle file (PEM)', _is_str, False),
    ("apply_concurrency", "an integer of at least 1", _is_int(1), True),
    ("deadline", "a number of seconds, 0 for none", _is_seconds, False),
    ("tags", STR_LIST, _is_str_list, True),
    ("tags", _NO_RESERVED, _has_no_reserved_tag, False),
    (
        "project",
        "a slug: lower-case letters, digits, '.', '_' and '-', at most 63",
        _is_slug,
        True,
    ),
    ("paused", "true or false", _is_bool, False),
    ("secret_blocks", "true or false", _is_bool, False),
    ("enforce_parameter_schema", "true or false", _is_bool, False),
    ("masked_env_vars", STR_LIST, _is_str_list, False),
    ("work_pool.queue", NON_EMPTY, _is_filled_str, True),
    ("naming.python", _NAME_FORMAT, _is_name_format, False),
    ("naming.docker", _NAME_FORMAT, _is_name_format, False),
    ("naming.always_suffix", "true or false", _is_bool, False),
    ("naming.env_suffix", "true or false", _is_bool, False),
    ("parameters", "a table of flow parameters", _is_table, True),
    ("env_vars", "a table of environment variable names to values", _is_table, True),
    ("retries.retries", "an integer of at least 0", _is_int(0), True),
    ("retries.retry_delay_seconds", "an integer of at least 0", _is_int(0), True),
    ("health.heartbeat_frequency", "an integer of at least 30 (seconds)", _is_int(30), True),
    ("resources.concurrency_limit", "an integer of at least 1", _is_int(1), True),
    ("docker.registry", "a string", _is_str, False),
    ("docker.tag", "a string", _is_str, False),
    (
        "docker.image_pull_policy",
        '"IfNotPresent", "Always" or "Never"',
        _one_of("IfNotPresent", "Always", "Never"),
        False,
    ),
    ("docker.working_dir", "a string", _is_str, False),
    ("docker.extra_pip_packages", STR_LIST, _is_str_list, False),
    ("pull.strategy", '"local" or "git"', _one_of("local", "git"), True),
    ("pull.branch", "a string", _is_str, False),
    ("pull.pip_index_url", "a string", _is_str, False),
    ("pull.extra_packages", STR_LIST, _is_str_list, False),
    ("flows", "a table of per-flow tables", _is_table, False),
]
# Per-flow overrides, checked for every [default.flows.<name>] / [<env>.flows.<name>]
# (whatever the flow's name holds: dots too); no other key is known.
_FLOW_RULES: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("enabled", "true or false", _is_bool),
    ("types", _TYPES, _is_types),
    ("name", NON_EMPTY, _is_filled_str),
    ("names", "a table of deployment types to deployment names", _is_name_table),
    ("work_pool", "a pool name or a table of deployment types (and queue) to pools", _is_pool_override),
    ("image", "an image reference such as registry/flows:1.2", _is_filled_str),
    ("collision_strategy", _STRATEGY, lambda v: v in COLLISION_STRATEGIES),
    ("resources", "a table of resource limits (cpu, memory, memory_swap)", _is_table),
    ("triggers", "a list of trigger tables (Prefect's deployment trigger shape)", _is_table_list),
    ("parameters", "a table of flow parameters", _is_table),
    ("tags", _NO_RESERVED, _is_user_tags),
    ("schedules", "a list of schedule tables", _is_table_list),
    ("concurrency_limit", "an integer of at least 1", _is_int(1)),
    ("paused", "true or false", _is_bool),
    ("description", NON_EMPTY, _is_filled_str),
]


def _validator(
    key: str, what: str, test: Callable[[Any], bool], required: bool, **extra: Any
) -> Any:
    braced = key.replace("{", "{{").replace("}", "}}")
    what = what.replace("{", "{{").replace("}", "}}")  # Dynaconf formats the messages
    got = "" if is_secret_name(key) else ", got {value!r}"
    check = lambda v: test(v)  # noqa: E731 - Dynaconf names the check after __name__
    check.__name__ = f"check_{key}"
    return Validator(
        key,
        must_exist=True if required else None,
        condition=check,
        messages={
            "must_exist_true": f"{braced}: missing; it must be {what}",
            "condition": f"{braced}: must be {what}{got}",
        },
        **extra,
    )


def _validators(data: Mapping[str, Any]) -> list[Any]:
    validators = [_validator(*rule) for rule in _RULES]
    validators.append(
        _validator(
            "pull.repository",
            'a repository URL when pull.strategy is "git"',
            _is_filled_str,
            True,
            when=Validator("pull.strategy", must_exist=True, eq="git"),
        )
    )
    pools = data.get("work_pool")
    used = used_types(data)
    for type_ in pools if isinstance(pools, Mapping) else ():
        if type_ != "queue" and type_ not in used:
            validators.append(_validator(f"work_pool.{type_}", NON_EMPTY, _is_filled_str, False))
    for type_ in used:
        validators.append(
            _validator(
                f"work_pool.{type_}",
                f"a work pool name (deployment type {type_} is in use)",
                _is_filled_str,
                True,
            )
        )
        if type_ not in ("python", "docker"):
            validators.append(_validator(f"naming.{type_}", _NAME_FORMAT, _is_name_format, False))
    env_vars = data.get("env_vars")
    for name in env_vars if isinstance(env_vars, Mapping) else ():
        if "." not in name:
            validators.append(
                _validator(f"env_vars.{name}", "a string, number or boolean", _is_scalar, False)
            )
    return validators


def _validate(
    env: str,
    data: Mapping[str, Any],
    sources: Mapping[str, str],
    masker: Masker,
    unknown: Sequence[str] = (),
) -> None:
    """Run every validator over ``data`` (Dynaconf's ``validate_all``) and raise one
    SettingsError listing all, the per-flow problems and the ``unknown`` keys' lines
    too; ``masker`` hides the values of .secrets.toml that a
    message would quote."""
    dyn = Dynaconf(
        settings_files=[],
        environments=False,
        load_dotenv=False,
        core_loaders=[],
        loaders=[],
        auto_cast=False,  # a value is validated as written, "@int 1" stays a string
        envvar_prefix=False,
    )
    for key, value in data.items():
        dyn.set(key, copy.deepcopy(value), dotted_lookup=False, tomlfy=False)
    dyn.validators.register(*_validators(data))
    try:
        dyn.validators.validate_all()
    except ValidationError as exc:
        lines = []
        for validator, message in exc.details:
            key = validator.names[0]
            if message.startswith("Mismatched type"):
                key, message = _not_a_table(key, data)
            line = f"  - {masker.text(message)}{_from(key, sources)}"
            if line not in lines:
                lines.append(line)
        lines = [*lines, *_flow_problems(data, sources, masker), *unknown]
        raise SettingsError(
            f"{len(lines)} problem(s) in the settings of environment {env!r}:\n" + "\n".join(lines)
        ) from exc
    if lines := [*_flow_problems(data, sources, masker), *unknown]:
        raise SettingsError(
            f"{len(lines)} problem(s) in the settings of environment {env!r}:\n" + "\n".join(lines)
        )


# Keys that are settings without a rule of their own (read where they are used), and the
# tables whose keys a user names (parameters, job variables, flows).
_UNRULED = ("git_access_token", "registry_username", "registry_password", "pull.repository")
_FREE_TABLES = frozenset({"parameters", "env_vars", "flows", "resources"})
# Tables whose keys may be deployment types (any type's spelling).
_TYPED_TABLES = frozenset({"work_pool", "naming"})


def _known_keys() -> dict[str, set[str]]:
    """Top-level key -> the keys its table may hold (empty: not a table)."""
    known: dict[str, set[str]] = {}
    for dotted in [*(rule[0] for rule in _RULES), *_UNRULED]:
        head, _, rest = dotted.partition(".")
        known.setdefault(head, set())
        if rest:
            known[head].add(rest.split(".", 1)[0])
    return known


def _unknown_keys(data: Mapping[str, Any], sources: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """A key no rule knows (a typo such as ``apply_concurency``, ``[env_var]``), naming
    where it came from and, when close, the key that was meant: an error when a file
    holds it, a warning when a DEPLOY_ variable does (another tool may share the
    prefix).  Returns (error lines, warnings)."""
    known = _known_keys()
    types = set(used_types(data))
    lines: list[str] = []
    warnings: list[str] = []

    def unknown(dotted: str, candidates: Iterable[str]) -> None:
        close = difflib.get_close_matches(dotted.rsplit(".", 1)[-1], list(candidates), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        origin = sources.get(dotted) or next(
            (s for k, s in sources.items() if k.startswith(f"{dotted}.")), ""
        )
        if origin.startswith("env var "):
            warnings.append(f"{dotted}: unknown setting{hint} ({origin}); it is ignored")
        else:
            lines.append(f"  - {dotted}: unknown setting{hint}{_from(dotted, sources)}")

    for key, value in data.items():
        if key not in known:
            unknown(key, known)
            continue
        if key in _FREE_TABLES or not known[key] or not isinstance(value, Mapping):
            continue
        for sub in value:
            # work_pool.<type> / naming.<type>: any type's spelling (an environment may
            # keep the pools of types only another one deploys).
            if sub not in known[key] and not (key in _TYPED_TABLES and _is_type(sub)):
                unknown(f"{key}.{sub}", known[key] | (types if key in _TYPED_TABLES else set()))
    return lines, warnings


def _flow_problems(data: Mapping[str, Any], sources: Mapping[str, str], masker: Masker) -> list[str]:
    """The problems of the per-flow overrides, ``flows.<name>.<key>``, and of every
    resources table.  Checked here, not by dotted Dynaconf validators, because a flow's
    name may hold dots."""
    flows = data.get("flows")
    lines: list[str] = []
    found = _resource_problems(data.get("resources", {}), "resources")
    for flow, override in flows.items() if isinstance(flows, Mapping) else ():
        if isinstance(override, Mapping) and "resources" in override:
            found += _resource_problems(override["resources"], f"flows.{flow}.resources")
    for dotted, message in found:
        lines.append(f"  - {masker.text(f'{dotted}: {message}')}{_from(dotted, sources)}")
    rules = {key: (what, test) for key, what, test in _FLOW_RULES}
    for flow, override in flows.items() if isinstance(flows, Mapping) else ():
        prefix = f"flows.{flow}"
        if not isinstance(override, Mapping):
            lines.append(f"  - {prefix}: must be a table, got {override!r}{_from(prefix, sources)}")
            continue
        for key, value in override.items():
            dotted = f"{prefix}.{key}"
            if key not in rules:
                lines.append(
                    f"  - {dotted}: unknown per-flow setting; known: {', '.join(rules)}"
                    f"{_from(dotted, sources)}"
                )
                continue
            what, test = rules[key]
            if not test(value):
                got = "" if is_secret_name(key) else f", got {value!r}"
                lines.append(f"  - {masker.text(f'{dotted}: must be {what}{got}')}{_from(dotted, sources)}")
    return lines


def _not_a_table(key: str, data: Mapping[str, Any]) -> tuple[str, str]:
    """For a dotted key that cannot be followed: the key that is not a table, and why."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1], start=1):
        node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            above = ".".join(parts[:depth])
            return above, f"{above}: must be a table, got {node!r}"
    return key, f"{key}: cannot be read"


def _from(key: str, sources: Mapping[str, str]) -> str:
    """`` (from <where>)`` for a problem's key, or for the first value under it."""
    source = sources.get(key)
    if source is None:
        below = [where for dotted, where in sources.items() if dotted.startswith(f"{key}.")]
        source = below[0] if below else None
    if source is None:
        return ""
    if source == "default":
        return " (from settings.toml [default])"
    if source.startswith("environment ["):
        return f" (from settings.toml {source.removeprefix('environment ')})"
    if source == "secrets file":
        return f" (from {SECRETS_FILE})"
    return f" (from {source})"


# -- env files --------------------------------------------------------------------------


def _layer_env_vars(data: dict[str, Any], root: Path, env: str) -> dict[str, str]:
    """Put .env, .env.<env> and DEPLOY_ENV_VARS__* on top of ``env_vars``; returns their
    sources.  Every value becomes a string, as a process environment holds."""
    env_vars: dict[str, Any] = data.setdefault("env_vars", {})
    sources: dict[str, str] = {}
    files = [(".env", root / ".env"), (f".env.{env}", root / f".env.{env}")]
    for label, path in files:
        for name, value in _read_env_file(path).items():
            sources[f"env_vars.{_put(env_vars, name, value)}"] = label
    marker = f"{PREFIX}ENV_VARS__"
    for variable, value in os.environ.items():
        if variable.startswith(marker) and variable != marker:
            name = variable[len(marker) :]
            sources[f"env_vars.{_put(env_vars, name, value)}"] = f"env var {variable}"
    for name, value in env_vars.items():
        if isinstance(value, bool):
            env_vars[name] = "true" if value else "false"
        else:
            env_vars[name] = str(value)
    return sources


def _put(env_vars: dict[str, Any], name: str, value: str) -> str:
    """Set ``name`` keeping the spelling already there (Dynaconf matches names ignoring
    case); returns the spelling used."""
    for existing in env_vars:
        if existing.lower() == name.lower():
            name = existing
            break
    env_vars[name] = value
    return name


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines parsed by python-dotenv; {} when the file does not exist.

    A line python-dotenv cannot parse, or a name without ``=``, is an error naming the
    file and line (python-dotenv itself only logs the first and skips it)."""
    if not path.exists():
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"is not UTF-8 text (byte {exc.start} cannot be decoded)", path=str(path)
        ) from exc
    except OSError as exc:
        raise SettingsError(f"cannot be read: {exc.strerror}", path=str(path)) from exc
    unparsed = _UnparsedLines()
    logger = logging.getLogger("dotenv.main")
    logger.addHandler(unparsed)
    try:
        # ${VAR} is taken from the file's own earlier lines only: interpolating this
        # process's environment would copy a cloud key, say, into the runs' settings.
        values = _interpolate(dotenv_values(stream=io.StringIO(text), interpolate=False))
    finally:
        logger.removeHandler(unparsed)
    lines = text.splitlines()
    if unparsed.lines:
        number = unparsed.lines[0]
        shown = lines[number - 1].strip()[:40] if number <= len(lines) else ""
        raise SettingsError(f"line {number} is not KEY=value: {shown!r}", path=f"{path}:{number}")
    for name, value in values.items():
        if value is None:
            number = next(
                (i for i, line in enumerate(lines, 1) if line.strip().split()[-1:] == [name]), 0
            )
            raise SettingsError(
                f"line {number}: {name} has no '='; write {name}= for an empty value",
                path=f"{path}:{number}",
            )
    return {name: value for name, value in values.items() if value is not None}


_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _interpolate(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """``${NAME}`` / ``${NAME:-default}`` replaced by the value of an earlier line of the
    same file (else the default, else nothing), as python-dotenv does, but never from
    the process's environment."""
    seen: dict[str, str | None] = {}
    for name, value in values.items():
        if value is not None:
            value = _REFERENCE.sub(
                lambda m: seen.get(m.group("name")) or (m.group("default") or ""), value
            )
        seen[name] = value
    return seen


class _UnparsedLines(logging.Handler):
    """Collects the line numbers python-dotenv reports it could not parse."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if "could not parse" in record.getMessage() and args:
            with contextlib.suppress(TypeError, ValueError):
                self.lines.append(int(str(args[0])))


# -- secrets and warnings ---------------------------------------------------------------


def _secret_keys(data: Mapping[str, Any], secret_paths: set[KeyPath]) -> set[str]:
    """Dotted keys set by .secrets.toml, named like a secret, or listed in
    ``masked_env_vars``."""
    masked = data.get("masked_env_vars")
    masked_names = {str(n).lower() for n in masked} if isinstance(masked, list) else set()
    keys = set()
    for path, _ in _leaves(data):
        dotted = ".".join(path)
        masked_env = path[0] == "env_vars" and path[-1].lower() in masked_names
        if _fold(path) in secret_paths or is_secret_name(path[-1]) or masked_env:
            keys.add(dotted)
    return keys


def _secret_values(
    data: Mapping[str, Any], secret_keys: set[str], secrets: Mapping[str, Any] | None
) -> set[str]:
    """The raw strings to mask in any text: the values of the secret keys, and every
    value in .secrets.toml (all of its sections, loaded or not)."""
    values: list[Any] = [value for key, value in _dotted_leaves(data) if key in secret_keys]
    values += [value for _, value in _leaves(secrets or {})]
    out = set()
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            scalar = isinstance(item, (str, int, float)) and not isinstance(item, bool)
            if scalar and str(item).strip():
                out.add(str(item))
    return out


def _warnings(secrets_path: Path, secrets: Mapping[str, Any] | None, valid: list[str]) -> list[str]:
    if secrets is None:
        return []
    found = []
    mode = stat.S_IMODE(secrets_path.stat().st_mode)
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        found.append(
            f"{secrets_path} is readable by group or others (mode {mode:04o}); "
            f"run: chmod 600 {SECRETS_FILE}"
        )
    known = {name.lower() for name in valid} | _NOT_ENVIRONMENTS
    for section in secrets:
        if section.lower() not in known and not section.lower().startswith("dynaconf"):
            found.append(
                f"{secrets_path}: section [{section}] names no environment of "
                f"{SETTINGS_FILE}; its values are never used"
            )
    return found
