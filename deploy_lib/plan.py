"""Desired deployments against live ones -> a plan of creates, updates, unchanged, deletes.

Pure: no network, no files.  The live side is the server's DeploymentResponse JSON
(plus ``flow_name``), which is first brought into the shape of our deployment body
(see ``models.DeploymentSpec``) and then compared key by key, so that what the server
adds on its own does not look like a change:

- ``concurrency_limit`` comes back as ``null``; the real value is
  ``global_concurrency_limit.limit``;
- schedules come back in no particular order, with ids, timestamps and ``active``;
  an interval becomes float seconds with an ``anchor_date`` the server chose, an rrule
  gains a ``DTSTART:`` line, a cron gains ``day_or``; a missing timezone means UTC;
- ``parameter_openapi_schema`` defaults to ``{"type": "object", "properties": {}}``;
- ``description``/``version`` ``""`` and ``null`` both mean "none"; tags are a set;
- ``work_queue_name`` left out means the pool's default queue, whatever its name.

Schedules are compared on their definitions only.  Each schedule's ``active`` flag
belongs to the server once the schedule exists (people pause schedules in the UI),
so an update carries the live flag for every schedule that is still desired, and the
live ``anchor_date`` of an interval whose desired definition names none (otherwise
each redeploy would re-phase the interval).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deploy_lib.errors import ApiError, ValidationFailed
from deploy_lib.models import (
    ACTIONS,
    CREATE,
    DELETE,
    MANAGED_BY_TAG,
    UNCHANGED,
    UPDATE,
    Change,
    DeploymentSpec,
    FieldChange,
    Plan,
    Problem,
    plain,
)

# The keys of a deployment body that the plan compares, in the order diffs are shown.
COMPARED_KEYS = (
    "entrypoint",
    "description",
    "version",
    "work_pool_name",
    "work_queue_name",
    "tags",
    "parameters",
    "parameter_openapi_schema",
    "job_variables",
    "pull_steps",
    "schedules",
    "concurrency_limit",
    "paused",
    "enforce_parameter_schema",
)
_IDENTITY_KEYS = ("name", "flow_name")
_DEFAULT_PARAMETER_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_RRULE_DTSTART = "DTSTART:"


def make_plan(
    desired: Sequence[DeploymentSpec], live: Sequence[Mapping[str, Any]], env: str
) -> Plan:
    """Compare ``desired`` specs with ``live`` DeploymentResponse dicts for ``env``.

    A desired deployment with no live one of the same flow and name is a create; one
    whose normalised fields differ is an update (with its field diff), else unchanged.
    A live deployment tagged ``managed-by:deploy-lib`` and ``env:<env>`` that is not
    desired is a delete; other live deployments are ignored.  Raises
    ``ValidationFailed`` when two desired specs share a name, ``ApiError`` when a live
    item lacks ``name``/``flow_name``.
    """
    _check_unique(desired)
    live_by_name: dict[str, Mapping[str, Any]] = {}
    for item in live:
        live_by_name[_live_full_name(item)] = item

    changes: list[Change] = []
    desired_names: set[str] = set()
    for spec in desired:
        desired_names.add(spec.full_name)
        current = live_by_name.get(spec.full_name)
        if current is None:
            changes.append(
                Change(CREATE, spec.full_name, spec.type, spec=spec, body=plain(spec.body))
            )
            continue
        diff = diff_bodies(spec.body, current)
        live_id = str(current["id"]) if current.get("id") is not None else None
        if diff:
            body = carry_schedule_state(spec.body, current.get("schedules") or [])
            changes.append(
                Change(UPDATE, spec.full_name, spec.type, spec, live_id, tuple(diff), body)
            )
        else:
            changes.append(Change(UNCHANGED, spec.full_name, spec.type, spec, live_id))

    env_tag = f"env:{env}"
    for name, item in live_by_name.items():
        tags = set(item.get("tags") or ())
        if name in desired_names or MANAGED_BY_TAG not in tags or env_tag not in tags:
            continue
        changes.append(Change(DELETE, name, _runtime_from_tags(tags), live_id=str(item.get("id"))))

    order = {action: i for i, action in enumerate(ACTIONS)}
    changes.sort(key=lambda c: (c.deployment, c.type or "", order[c.action]))
    return Plan(env=env, changes=tuple(changes))


def diff_bodies(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[FieldChange]:
    """The field-level differences between a desired body and a live response, after
    both are normalised (see the module docstring).  Empty when nothing differs."""
    want = normalise_desired(desired)
    have = normalise_live(live)
    changes: list[FieldChange] = []
    keys = [k for k in COMPARED_KEYS if k in want]
    keys += sorted(k for k in want if k not in COMPARED_KEYS and k not in _IDENTITY_KEYS)
    for key in keys:
        if key == "work_queue_name" and want[key] is None:
            continue  # the server picks the pool's default queue
        _diff_value(key, have.get(key), want[key], changes)
    return changes


def normalise_desired(body: Mapping[str, Any]) -> dict[str, Any]:
    """A desired body in the comparable form (JSON types, server defaults filled in)."""
    out: dict[str, Any] = plain(body)
    return _normalise_common(out)


def normalise_live(item: Mapping[str, Any]) -> dict[str, Any]:
    """A live DeploymentResponse in the comparable body form."""
    raw = plain(item)
    out: dict[str, Any] = {key: raw.get(key) for key in (*_IDENTITY_KEYS, *COMPARED_KEYS)}
    for key, value in raw.items():
        out.setdefault(key, value)  # so a body key beyond the documented ones compares too
    limit = raw.get("global_concurrency_limit")
    if isinstance(limit, Mapping) and limit.get("limit") is not None:
        out["concurrency_limit"] = limit["limit"]
    out["schedules"] = [
        {k: s.get(k) for k in ("schedule", "parameters", "slug")}
        for s in raw.get("schedules") or []
    ]
    return _normalise_common(out)


def carry_schedule_state(
    body: Mapping[str, Any], live_schedules: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A copy of ``body`` whose schedules keep the live ``active`` flag (and the live
    ``anchor_date`` of an interval that names none) when the same schedule exists live.
    Schedules new to the server keep the desired flag."""
    out: dict[str, Any] = plain(body)
    items = out.get("schedules") or []
    pairs = _pair_schedules(
        [_normalise_schedule_item(s) for s in items],
        [_normalise_schedule_item(s) for s in live_schedules],
    )
    for item, index in zip(items, pairs, strict=True):
        if index is None:
            continue
        match = live_schedules[index]
        if match.get("active") is not None:
            item["active"] = bool(match["active"])
        definition = item.get("schedule")
        live_definition = match.get("schedule")
        if (
            isinstance(definition, dict)
            and isinstance(live_definition, Mapping)
            and "interval" in definition
            and definition.get("anchor_date") is None
            and live_definition.get("anchor_date") is not None
        ):
            definition["anchor_date"] = live_definition["anchor_date"]
    return out


# --- normalisation -----------------------------------------------------------------


def _normalise_common(body: dict[str, Any]) -> dict[str, Any]:
    for key in ("description", "version"):
        if key in body and body[key] == "":
            body[key] = None
    if "tags" in body:
        body["tags"] = sorted(set(body["tags"] or ()))
    for key in ("parameters", "job_variables"):
        if key in body and body[key] is None:
            body[key] = {}
    if "parameter_openapi_schema" in body and body["parameter_openapi_schema"] is None:
        body["parameter_openapi_schema"] = copy.deepcopy(_DEFAULT_PARAMETER_SCHEMA)
    if "pull_steps" in body and not body["pull_steps"]:
        body["pull_steps"] = None
    if "paused" in body and body["paused"] is None:
        body["paused"] = False
    if "enforce_parameter_schema" in body and body["enforce_parameter_schema"] is None:
        body["enforce_parameter_schema"] = True
    if "schedules" in body:
        body["schedules"] = sorted(
            (_normalise_schedule_item(s) for s in body["schedules"] or ()), key=_sort_key
        )
    return body


def _normalise_schedule_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable part of one schedule: its definition, parameters and slug (not the
    id, timestamps, ``active`` or ``max_scheduled_runs``, which an upsert drops)."""
    return {
        "schedule": _normalise_definition(item.get("schedule") or {}),
        "parameters": dict(item.get("parameters") or {}),
        "slug": item.get("slug") or None,
    }


def _normalise_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(definition)
    timezone = out.get("timezone") or "UTC"
    out["timezone"] = timezone
    if "cron" in out:
        out["day_or"] = True if out.get("day_or") is None else bool(out["day_or"])
    if "interval" in out:
        if isinstance(out["interval"], (int, float)) and not isinstance(out["interval"], bool):
            out["interval"] = float(out["interval"])
        # Without a desired anchor the server picks "now": not part of the definition.
        anchor = out.pop("anchor_date", None)
        if anchor is not None:
            out["anchor_date"] = _utc_instant(anchor, timezone)
    if isinstance(out.get("rrule"), str):
        out["rrule"] = out["rrule"].strip()
    return out


def _utc_instant(value: Any, timezone: str) -> Any:
    """An ISO datetime string as a UTC ISO string (naive means the schedule's zone)."""
    if not isinstance(value, str):
        return value
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).isoformat()


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- diffing -----------------------------------------------------------------------


def _diff_value(path: str, old: Any, new: Any, out: list[FieldChange]) -> None:
    if path == "schedules":
        _diff_schedules(old or [], new or [], out)
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff_value(f"{path}.{key}", old.get(key), new.get(key), out)
        return
    if not _same(old, new):
        out.append(FieldChange(path, old, new))


def _diff_schedules(old: list[Any], new: list[Any], out: list[FieldChange]) -> None:
    pairs = _pair_schedules(new, old)
    if None in pairs or len(old) != len(new):
        out.append(FieldChange("schedules", old, new))


def _pair_schedules(
    want: Sequence[Mapping[str, Any]], have: Sequence[Mapping[str, Any]]
) -> list[int | None]:
    """For each desired (normalised) schedule, the index of the live one it matches, or
    ``None``; each live schedule is used once, so duplicates pair up in order."""
    used: set[int] = set()
    pairs: list[int | None] = []
    for item in want:
        index = next(
            (i for i, h in enumerate(have) if i not in used and _schedule_matches(item, h)),
            None,
        )
        if index is not None:
            used.add(index)
        pairs.append(index)
    return pairs


def _schedule_matches(want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    """Same definition, parameters and slug.  What the server adds on its own does not
    count: an interval's ``anchor_date`` when the desired one names none, and the
    ``DTSTART:`` line the server puts before an rrule that has none."""
    definition = dict(want["schedule"])
    live = dict(have["schedule"])
    if "interval" in definition and "anchor_date" not in definition:
        live.pop("anchor_date", None)
    rule, live_rule = definition.get("rrule"), live.get("rrule")
    if (
        isinstance(rule, str)
        and isinstance(live_rule, str)
        and _RRULE_DTSTART not in rule.upper()
        and live_rule.upper().startswith(_RRULE_DTSTART)
        and "\n" in live_rule
    ):
        live["rrule"] = live_rule.split("\n", 1)[1].strip()
    return bool(
        definition == live
        and want["parameters"] == have["parameters"]
        and want["slug"] == have["slug"]
    )


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return type(old) is type(new) and old == new
    return bool(old == new)


# --- helpers -----------------------------------------------------------------------


def _live_full_name(item: Mapping[str, Any]) -> str:
    name, flow_name = item.get("name"), item.get("flow_name")
    if not name or not flow_name:
        raise ApiError(
            f"a listed deployment (id {item.get('id')!r}) has no name or flow_name; "
            "the deployment listing must add each deployment's flow name"
        )
    return f"{flow_name}/{name}"


def _runtime_from_tags(tags: set[str]) -> str | None:
    runtimes = sorted(t.split(":", 1)[1] for t in tags if t.startswith("runtime:"))
    return runtimes[0] if runtimes else None


def _check_unique(desired: Sequence[DeploymentSpec]) -> None:
    seen: Counter[str] = Counter(spec.full_name for spec in desired)
    problems = [
        Problem(
            message=f"{count} deployments share this flow and name; rename one of them",
            deployment=name,
            key="name",
        )
        for name, count in sorted(seen.items())
        if count > 1
    ]
    if problems:
        raise ValidationFailed(problems, what="duplicate deployments")
