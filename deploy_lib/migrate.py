"""An existing prefect.yaml -> the per-flow settings that reproduce its deployments.

``invoke migrate --prefect-yaml PATH`` reads the deployments of a prefect.yaml (YAML
anchors and aliases resolved, as Prefect's loader does) and, for each whose entrypoint is
a discovered flow, writes a ``[default.flows."<flow>"]`` table: the deployment's name
(``names.python``), description, tags, parameters, schedules (with their own
parameters and slug), work pool and queue, concurrency limit and collision strategy,
triggers and paused flag.  What our settings cannot say per flow (job variables,
build/push/pull steps, a per-deployment ``enforce_parameter_schema``, SLAs) is listed
as a note, never silently dropped.  With
``--write`` the tables are appended to settings.toml (a flow that already has a table
there is refused, so nothing of the user's is overwritten); after ``invoke adopt`` the
plan against a server deployed from that prefect.yaml is empty.

Pure but for reading the file; the TOML is written by a small emitter of the subset the
tables use (strings, numbers, booleans, lists and tables of those).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy_lib.errors import InputError
from deploy_lib.models import RESERVED_TAG_PREFIXES, FlowMetadata

# Keys of a prefect.yaml deployment that become settings, and those we note instead.
_SCHEDULE_KEYS = (
    "cron", "interval", "rrule", "timezone", "anchor_date", "day_or", "active", "parameters", "slug",
)
_NOTED = ("build", "push", "pull", "version", "enforce_parameter_schema", "sla")


@dataclass(frozen=True)
class Migration:
    """The per-flow tables (``flow name -> settings``) and the notes, one per thing that
    was not carried over, each naming the deployment."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def toml(self) -> str:
        """The tables as TOML, ready to append to settings.toml."""
        blocks = []
        for flow, table in self.tables.items():
            blocks.append(_toml_table(["default", "flows", flow], table))
        return "\n".join(blocks)


def read_prefect_yaml(path: Path) -> list[dict[str, Any]]:
    """The deployments of the prefect.yaml at ``path``; ``InputError`` naming the file
    when it cannot be read or holds no ``deployments`` list."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    deployments = data.get("deployments") if isinstance(data, Mapping) else None
    if not isinstance(deployments, list) or not all(isinstance(d, Mapping) for d in deployments):
        raise InputError(f"{path}: has no 'deployments' list of tables")
    return [dict(d) for d in deployments]


def migrate(
    deployments: Sequence[Mapping[str, Any]],
    find_flow: Callable[[str], FlowMetadata | None],
    *,
    source: str = "prefect.yaml",
) -> Migration:
    """The settings that reproduce ``deployments`` (a prefect.yaml's); ``find_flow``
    looks a flow up by entrypoint (discovery's ``find_flow``)."""
    tables: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for index, deployment in enumerate(deployments):
        name = str(deployment.get("name") or f"#{index + 1}")
        where = f"{source}: deployment {name!r}"
        entrypoint = deployment.get("entrypoint")
        flow = find_flow(str(entrypoint)) if isinstance(entrypoint, str) else None
        if flow is None:
            notes.append(f"{where}: entrypoint {entrypoint!r} is not a discovered flow; skipped")
            continue
        if flow.name in tables:
            notes.append(
                f"{where}: flow {flow.name!r} has another deployment in {source} already; "
                "one flow gets one deployment per type here, so this one is skipped"
            )
            continue
        tables[flow.name] = _table(deployment, name, where, notes)
    return Migration(tables, tuple(notes))


def _table(
    deployment: Mapping[str, Any], name: str, where: str, notes: list[str]
) -> dict[str, Any]:
    table: dict[str, Any] = {"types": ["python"], "names": {"python": name}}
    if deployment.get("description"):
        table["description"] = str(deployment["description"])
    tags = [str(t) for t in deployment.get("tags") or ()]
    kept = [t for t in tags if not t.startswith(RESERVED_TAG_PREFIXES)]
    if kept != tags:
        notes.append(f"{where}: tags {sorted(set(tags) - set(kept))} are reserved; left out")
    if kept:
        table["tags"] = kept
    if deployment.get("parameters"):
        table["parameters"] = dict(deployment["parameters"])
    schedules = _schedules(deployment, where, notes)
    if schedules:
        table["schedules"] = schedules
    pool = deployment.get("work_pool")
    if isinstance(pool, Mapping):
        wanted = {}
        if pool.get("name"):
            wanted["python"] = str(pool["name"])
        if pool.get("work_queue_name"):
            wanted["queue"] = str(pool["work_queue_name"])
        if wanted:
            table["work_pool"] = wanted
        if pool.get("job_variables"):
            notes.append(
                f"{where}: work_pool.job_variables {sorted(pool['job_variables'])} are not "
                "per-flow settings here; put them in env_vars or a template overlay"
            )
    limit = deployment.get("concurrency_limit")
    if isinstance(limit, Mapping):  # {limit: N, collision_strategy: X}
        if limit.get("limit") is not None:
            table["concurrency_limit"] = limit["limit"]
        if limit.get("collision_strategy"):
            table["collision_strategy"] = str(limit["collision_strategy"]).upper()
    elif limit is not None:
        table["concurrency_limit"] = limit
    options = deployment.get("concurrency_options")
    if isinstance(options, Mapping) and options.get("collision_strategy"):
        table["collision_strategy"] = str(options["collision_strategy"]).upper()
    triggers = deployment.get("triggers")
    if isinstance(triggers, list) and triggers:
        table["triggers"] = [dict(t) for t in triggers if isinstance(t, Mapping)]
    if deployment.get("paused") is not None:
        table["paused"] = bool(deployment["paused"])
    for key in _NOTED:
        if deployment.get(key) not in (None, [], {}):
            notes.append(f"{where}: {key!r} is not carried over (settings.toml says it)")
    return table


def _schedules(deployment: Mapping[str, Any], where: str, notes: list[str]) -> list[dict[str, Any]]:
    items = list(deployment.get("schedules") or ())
    if deployment.get("schedule"):
        items.append(deployment["schedule"])
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            notes.append(f"{where}: schedule {item!r} is not a table; left out")
            continue
        extra = sorted(k for k in item if k not in _SCHEDULE_KEYS and item[k] not in (None, {}))
        if extra:
            notes.append(f"{where}: schedule keys {extra} are not carried over")
        out.append({k: item[k] for k in _SCHEDULE_KEYS if item.get(k) is not None})
    return out


def append_to_settings(path: Path, migration: Migration, existing: Mapping[str, Any]) -> None:
    """Append ``migration``'s tables to the settings file at ``path``; refuses (naming
    them) flows that already have a per-flow table in ``existing`` (the settings' data),
    and writes nothing then."""
    taken = sorted(set(migration.tables) & set(existing))
    if taken:
        raise InputError(
            f"{path}: flows.{', flows.'.join(taken)} already exist; merge those by hand "
            "(nothing was written)"
        )
    text = path.read_text(encoding="utf-8")
    addition = "\n# Migrated from prefect.yaml by `invoke migrate`.\n" + migration.toml()
    path.write_text(text.rstrip("\n") + "\n" + addition, encoding="utf-8")


def restore(path: Path, text: str) -> None:
    """Put ``text`` back as the settings file (a migration the settings refused)."""
    path.write_text(text, encoding="utf-8")


# -- a small TOML emitter -----------------------------------------------------------------


def _toml_table(path: list[str], table: Mapping[str, Any]) -> str:
    header = ".".join(_key(part) for part in path)
    lines = [f"[{header}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in nested:
        text += "\n" + _toml_table([*path, key], value)
    return text


def _key(key: str) -> str:
    bare = key.replace("-", "").replace("_", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"the value {value!r} cannot be written as TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (dt.datetime, dt.date)):
        return json.dumps(value.isoformat())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise InputError("a null value cannot be written as TOML")
    return json.dumps(str(value))
