"""settings.toml, .secrets.toml, DEPLOY_* variables and .env files -> one frozen Settings.

The layers, lowest first; each merges into the ones below it table by table:

    settings.toml  [default]                 source "default"
    settings.toml  [<env>]                   source "environment [<env>]"
    .secrets.toml  [default], then [<env>]   source "secrets file"
    DEPLOY_* environment variables           source "env var DEPLOY_X"
                                             (DEPLOY_WORK_POOL__PYTHON=x sets work_pool.python)

and for ``env_vars`` (the job's environment) three more on top:
``.env`` < ``.env.<env>`` < ``DEPLOY_ENV_VARS__NAME`` (its raw string wins last).

Dynaconf does the layering and the validation; this is the only module that imports it.
Three of its habits are not ours, so this module corrects them:

* its merge concatenates lists; here a list is replaced by the highest layer that sets it;
* its own ``*_FOR_DYNACONF`` environment variables beat the arguments it is given (they
  can add files, switch merging off, change the prefix); we refuse to load while one is
  set, so nothing outside ``root`` and ``DEPLOY_*`` decides what is read;
* ``DEPLOY_ENV`` and ``DEPLOY_DEBUG`` share our prefix: they are switches, never settings.

Reading the files and the environment is the only side effect; the result is a value.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_lib.errors import SettingsError, UnknownEnvironmentError
from deploy_lib.masking import Masker, is_secret_name
from deploy_lib.models import DEPLOYMENT_TYPES, Settings
from deploy_lib.models import plain as _plain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, as Dynaconf vendors it
    from dynaconf.vendor import tomllib

__all__ = [
    "DEFAULT_ENV",
    "effective",
    "environments",
    "explain",
    "format_config",
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
# Keys Dynaconf adds to its own data from the arguments we give it.
_DYNACONF_OWN_KEYS = frozenset({"LOAD_DOTENV", "FILTER_STRATEGY"})
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
    if secrets is not None:
        _check_sections(secrets, secrets_path)

    layers = _file_layers(base, secrets, name) + _variable_layers()
    dyn = _dynaconf(root, name, [settings_path] + ([secrets_path] if secrets else []))
    data = _normalise(_as_dict(dyn, settings_path), base, secrets)
    for key in _replace_lists(data, layers):
        # Hand the corrected value back so the validators see what we return.
        dyn.set(key.upper(), copy.deepcopy(data[key]), merge=False, dotted_lookup=False)
    sources = _sources(data, layers)
    _validate(dyn, name, data, sources, Masker(_secret_values({}, set(), secrets)))

    env_sources = _layer_env_vars(data, root, name)
    sources.update(env_sources)
    secret_keys = _secret_keys(data, layers)
    return Settings(
        env=name,
        root=root,
        data=data,
        sources=sources,
        secret_keys=frozenset(secret_keys),
        secret_values=frozenset(_secret_values(data, secret_keys, secrets)),
        warnings=tuple(_warnings(secrets_path, secrets, valid)),
    )


def environments(root: Path) -> list[str]:
    """The environments ``root/settings.toml`` defines, in file order.

    Raises ``SettingsError`` when the file is missing or is not valid TOML.
    """
    path = Path(root).resolve() / SETTINGS_FILE
    return _environment_names(_read_toml(path), path)


def effective(settings: Settings, show_secrets: bool = False) -> dict[str, Any]:
    """A deep copy of ``settings.data`` with every secret replaced by ``****``
    (unless ``show_secrets``)."""
    data = copy.deepcopy(dict(settings.data))
    if show_secrets:
        return data
    masked: dict[str, Any] = Masker(settings.secret_values).data(data, settings.secret_keys)
    return masked


def explain(settings: Settings, show_secrets: bool = False) -> list[tuple[str, Any, str]]:
    """One ``(dotted key, value, source)`` row per leaf value, secrets masked
    unless ``show_secrets``."""
    return [
        (key, value, settings.sources.get(key, "default"))
        for key, value in _dotted_leaves(effective(settings, show_secrets))
    ]


def format_config(
    settings: Settings,
    *,
    with_sources: bool = False,
    as_json: bool = False,
    show_secrets: bool = False,
) -> str:
    """The text ``invoke config`` prints: aligned ``key  value  <- source`` lines, or one
    JSON object ``{"env", "settings"[, "sources"]}``.  Secrets masked unless asked."""
    if as_json:
        out: dict[str, Any] = {
            "env": settings.env,
            "settings": effective(settings, show_secrets),
        }
        if with_sources:
            out["sources"] = {key: source for key, _, source in explain(settings, True)}
        return json.dumps(out, indent=2, ensure_ascii=False, default=str)
    rows = [
        (key, json.dumps(value, ensure_ascii=False, default=str), source)
        for key, value, source in explain(settings, show_secrets)
    ]
    key_width = max((len(key) for key, _, _ in rows), default=0)
    value_width = min(max((len(shown) for _, shown, _ in rows), default=0), 48)
    lines = [f"# environment: {settings.env}"]
    for key, shown, source in rows:
        if with_sources:
            lines.append(f"{key.ljust(key_width)}  {shown.ljust(value_width)}  <- {source}")
        else:
            lines.append(f"{key.ljust(key_width)}  {shown}")
    return "\n".join(lines)


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
        return tomllib.loads(text)
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


def _check_sections(raw: Mapping[str, Any], path: Path) -> None:
    """Every top-level entry must be a [section]; anything else Dynaconf would ignore."""
    for key, value in raw.items():
        if not isinstance(value, Mapping):
            raise SettingsError(
                "is outside any [section]; put it under [default] or an environment",
                path=str(path),
                key=key,
            )


def _environment_names(raw: Mapping[str, Any], path: Path) -> list[str]:
    _check_sections(raw, path)
    return [
        key
        for key in raw
        if key.lower() not in _NOT_ENVIRONMENTS and not key.lower().startswith("dynaconf")
    ]


def _section(raw: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    """A section of a settings file, found the way Dynaconf finds it (ignoring case)."""
    for key, value in (raw or {}).items():
        if key.lower() == name.lower() and isinstance(value, Mapping):
            return value
    return {}


# -- Dynaconf ---------------------------------------------------------------------------


def _dynaconf(root: Path, env: str, files: list[Path]) -> Any:
    from dynaconf import Dynaconf  # the only Dynaconf import in deploy_lib

    return Dynaconf(
        settings_files=[str(path) for path in files],
        root_path=str(root),
        environments=True,
        force_env=env,
        env_switcher=ENV_SWITCH,
        envvar_prefix=PREFIX.rstrip("_"),
        nested_separator="__",
        merge_enabled=True,
        load_dotenv=False,
        core_loaders=["TOML"],
        loaders=["dynaconf.loaders.env_loader"],
        secrets=None,
        includes=[],
        preload=[],
        filter_strategy=_drop_switches,
    )


def _drop_switches(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key.upper() not in _SWITCHES}


def _as_dict(dyn: Any, settings_path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = dyn.as_dict()
    except Exception as exc:  # Dynaconf's own errors (bad @format token, ...) enter here
        raise SettingsError(f"could not be loaded: {exc}", path=str(settings_path)) from exc
    return loaded



def _normalise(
    loaded: Mapping[str, Any], base: Mapping[str, Any], secrets: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Top-level keys back to the spelling of the files (Dynaconf upper-cases them)."""
    spelling: dict[str, str] = {}
    for raw in (base, secrets or {}):
        for section in raw.values():
            if isinstance(section, Mapping):
                for key in section:
                    spelling.setdefault(str(key).upper(), str(key))
    return {
        spelling.get(key.upper(), key.lower()): _plain(value)
        for key, value in loaded.items()
        if key.upper() not in _DYNACONF_OWN_KEYS
    }


# -- layers: what each source set, for lists, sources and secrets -----------------------

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class _Layer:
    source: str
    leaves: dict[KeyPath, Any]  # lower-cased key path -> value
    secret: bool = False


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


def _layer(source: str, tree: Mapping[str, Any], secret: bool = False) -> _Layer:
    return _Layer(source, {_fold(p): v for p, v in _leaves(tree)}, secret)


def _file_layers(
    base: Mapping[str, Any], secrets: Mapping[str, Any] | None, env: str
) -> list[_Layer]:
    # Dynaconf's order within a file: [default], [<env>], [global].
    layers = [
        _layer("default", _section(base, "default")),
        _layer(f"environment [{env}]", _section(base, env)),
        _layer("environment [global]", _section(base, "global")),
    ]
    for name in ("default", env, "global"):
        layers.append(_layer("secrets file", _section(secrets, name), secret=True))
    return layers


def _variable_layers() -> list[_Layer]:
    from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

    layers = []
    for name, raw in os.environ.items():
        rest = name[len(PREFIX) :]
        if not name.startswith(PREFIX) or not rest or rest.upper() in _SWITCHES:
            continue
        parts = rest.replace("__", ".").split(".")
        tree: Any = parse_conf_data(boolean_fix(raw), tomlfy=True, box_settings={})
        for part in reversed(parts):
            tree = {part: tree}
        layers.append(_layer(f"env var {name}", tree))
    return layers


def _highest(layers: list[_Layer], path: KeyPath) -> _Layer | None:
    folded = _fold(path)
    for layer in reversed(layers):
        if folded in layer.leaves:
            return layer
    return None


def _replace_lists(data: dict[str, Any], layers: list[_Layer]) -> set[str]:
    """Undo Dynaconf's list concatenation: each list is the highest layer's list.

    Returns the top-level keys that changed."""
    changed = set()
    for path, value in list(_leaves(data)):
        layer = _highest(layers, path) if isinstance(value, list) else None
        if layer is None:
            continue
        wanted = copy.deepcopy(layer.leaves[_fold(path)])
        if wanted != value:
            node = data
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = wanted
            changed.add(path[0])
    return changed


def _sources(data: Mapping[str, Any], layers: list[_Layer]) -> dict[str, str]:
    sources = {}
    for path, _ in _leaves(data):
        layer = _highest(layers, path)
        sources[".".join(path)] = layer.source if layer else "default"
    return sources


# -- validation -------------------------------------------------------------------------


def _is_int(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


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


def _is_types(v: Any) -> bool:
    return _is_str_list(v) and bool(v) and set(v) <= set(DEPLOYMENT_TYPES)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool))


def _is_url(v: Any) -> bool:
    return isinstance(v, str) and (v == "" or v.startswith(("http://", "https://")))


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda v: v in choices


NON_EMPTY = "a non-empty string"
STR_LIST = "a list of strings"
# key, what a valid value is, test, required
_RULES: list[tuple[str, str, Callable[[Any], bool], bool]] = [
    ("flow_roots", "a non-empty list of folder names", lambda v: _is_str_list(v) and bool(v), True),
    ("exclude", STR_LIST, _is_str_list, False),
    ("entrypoint_style", '"path" or "module"', _one_of("path", "module"), True),
    ("deployment_types", 'a non-empty list of "python" and/or "docker"', _is_types, True),
    ("api_url", 'a string: "" (the embedded server) or an http(s):// URL', _is_url, True),
    ("api_key", "a string", _is_str, False),
    ("apply_concurrency", "an integer of at least 1", _is_int(1), True),
    ("tags", STR_LIST, _is_str_list, True),
    ("paused", "true or false", _is_bool, False),
    ("enforce_parameter_schema", "true or false", _is_bool, False),
    ("masked_env_vars", STR_LIST, _is_str_list, False),
    ("work_pool.python", NON_EMPTY, _is_filled_str, True),
    ("work_pool.docker", NON_EMPTY, _is_filled_str, True),
    ("work_pool.queue", NON_EMPTY, _is_filled_str, True),
    ("naming.python", NON_EMPTY, _is_filled_str, False),
    ("naming.docker", NON_EMPTY, _is_filled_str, False),
    ("naming.always_suffix", "true or false", _is_bool, False),
    ("parameters", "a table of flow parameters", _is_table, True),
    ("env_vars", "a table of environment variable names to values", _is_table, True),
    ("retries.retries", "an integer of at least 0", _is_int(0), True),
    ("retries.retry_delay_seconds", "an integer of at least 0", _is_int(0), True),
    ("health.heartbeat_frequency", "an integer of at least 30 (seconds)", _is_int(30), True),
    ("resources.concurrency_limit", "an integer of at least 1", _is_int(1), True),
    ("resources.mem_limit", 'a string such as "1g"', _is_str, False),
    ("resources.memswap_limit", 'a string such as "2g"', _is_str, False),
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
# Per-flow overrides, checked for every [default.flows.<name>] / [<env>.flows.<name>].
_FLOW_RULES: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("enabled", "true or false", _is_bool),
    ("types", 'a list of "python" and/or "docker"', _is_types),
    ("parameters", "a table of flow parameters", _is_table),
    ("tags", STR_LIST, _is_str_list),
    ("concurrency_limit", "an integer of at least 1", _is_int(1)),
    ("paused", "true or false", _is_bool),
]


def _validator(
    key: str, what: str, test: Callable[[Any], bool], required: bool, **extra: Any
) -> Any:
    from dynaconf import Validator

    braced = key.replace("{", "{{").replace("}", "}}")
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
    from dynaconf import Validator

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
    env_vars = data.get("env_vars")
    for name in env_vars if isinstance(env_vars, Mapping) else ():
        if "." not in name:
            validators.append(
                _validator(f"env_vars.{name}", "a string, number or boolean", _is_scalar, False)
            )
    flows = data.get("flows")
    for flow, override in flows.items() if isinstance(flows, Mapping) else ():
        if "." in flow:  # a dotted name cannot be addressed by a dotted key
            continue
        validators.append(_validator(f"flows.{flow}", "a table", _is_table, False))
        if isinstance(override, Mapping):
            for key, what, test in _FLOW_RULES:
                validators.append(_validator(f"flows.{flow}.{key}", what, test, False))
    return validators


def _validate(
    dyn: Any, env: str, data: Mapping[str, Any], sources: Mapping[str, str], masker: Masker
) -> None:
    """Run every validator (``validate_all``) and raise one SettingsError listing all;
    ``masker`` hides the values of .secrets.toml that a message would quote."""
    from dynaconf import ValidationError

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
        raise SettingsError(
            f"{len(lines)} problem(s) in the settings of environment {env!r}:\n" + "\n".join(lines)
        ) from exc


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
    """``KEY=value`` lines parsed by python-dotenv; {} when the file does not exist."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

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
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise SettingsError(
                f"line {binding.original.line} is not KEY=value: "
                f"{binding.original.string.strip()[:40]!r}",
                path=f"{path}:{binding.original.line}",
            )
        if binding.key is not None and binding.value is None:
            raise SettingsError(
                f"line {binding.original.line}: {binding.key} has no '='; "
                f"write {binding.key}= for an empty value",
                path=f"{path}:{binding.original.line}",
            )
    values = dotenv_values(stream=io.StringIO(text))
    return {name: value for name, value in values.items() if value is not None}


# -- secrets and warnings ---------------------------------------------------------------


def _secret_keys(data: Mapping[str, Any], layers: list[_Layer]) -> set[str]:
    """Dotted keys set by .secrets.toml, named like a secret, or listed in
    ``masked_env_vars``."""
    secret_paths = {path for layer in layers if layer.secret for path in layer.leaves}
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
