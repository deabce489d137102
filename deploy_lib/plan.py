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
import hashlib
import json
import secrets
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deploy_lib.errors import ApiError, ValidationFailed
from deploy_lib.models import (
    ACTIONS,
    CONFLICT,
    CREATE,
    DELETE,
    LABEL_FIELDS,
    LABEL_FINGERPRINT,
    LABEL_SECRET_PREFIX,
    LABEL_TRIGGERS,
    MANAGED_BY_TAG,
    RENAME,
    SECRET_CHANGE_PREFIX,
    UNCHANGED,
    UPDATE,
    Change,
    DeploymentSpec,
    FieldChange,
    Owner,
    Plan,
    Problem,
    matches_salted_hash,
    plain,
    salted_hash,
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
    "concurrency_options",
    "paused",
    "enforce_parameter_schema",
)
_IDENTITY_KEYS = ("name", "flow_name")
_DEFAULT_PARAMETER_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_RRULE_DTSTART = "DTSTART:"


def make_plan(
    desired: Sequence[DeploymentSpec],
    live: Sequence[Mapping[str, Any]],
    env: str,
    *,
    project: str | None = None,
    protected: Mapping[str, str] | None = None,
    automations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    live_automations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    secret_blocks: Collection[str] = (),
) -> Plan:
    """Compare ``desired`` specs with ``live`` DeploymentResponse dicts for ``env``.

    A desired deployment with no live one of the same flow and name is a create; one
    whose normalised fields differ is an update (with its field diff), else unchanged.
    With ``project``, ownership decides (``Owner``): a live deployment of the same flow
    and name that is not this project's in this environment is a ``conflict`` (left
    alone, its owner named), except one this tool wrote for ``env`` before projects were
    recorded, which is claimed; and only this project's deployments in ``env`` that are
    not desired are deletes.  Without ``project`` every same-name deployment is ours and
    a delete is any ``managed-by:deploy-lib`` + ``env:<env>`` deployment.
    ``protected`` maps flow files (path or module form) to a reason: a delete whose
    live entrypoint is in one of them is ``kept`` with that reason, never deleted.
    ``automations`` maps a desired deployment (``flow/name``) to the automations its
    triggers make, and ``live_automations`` a live deployment's id to those it owns
    (read only for deployments that have or had triggers): a difference is a
    ``triggers`` change, and ``Change.automations`` what apply writes.
    ``secret_blocks`` names the Secret blocks of this project and env that exist: a
    spec's secret whose block is missing, or whose value no live deployment's label
    (a salted hash) was made from, is a ``secrets.<VAR>`` change ("secret changed",
    never the value), and ``Change.secret_writes`` the blocks apply writes first.

    Every create and update carries, as labels, the fingerprint of the body it writes;
    an update names the fields changed on the server since (``Change.drift``).  Raises
    ``ValidationFailed`` when two desired specs share a name, ``ApiError`` when a live
    item lacks ``name``/``flow_name``.
    """
    _check_unique(desired)
    live_by_name: dict[str, Mapping[str, Any]] = {}
    for item in live:
        live_by_name[_live_full_name(item)] = item

    current_blocks = _current_secret_blocks(desired, live_by_name, set(secret_blocks))
    changes: list[Change] = []
    desired_names: set[str] = set()
    for spec in desired:
        desired_names.add(spec.full_name)
        current = live_by_name.get(spec.full_name)
        made = tuple((automations or {}).get(spec.full_name) or ())
        want = _normal_automations(made)
        labels, secret_diff, writes = _secret_state(spec, current, current_blocks)
        if want:  # the automations' hash, so an edit of them on the server is drift
            labels[LABEL_TRIGGERS] = _hash(want)
        if current is None:
            changes.append(
                Change(
                    CREATE, spec.full_name, spec.type, spec=spec,
                    body=_with_labels(stamped(spec.body), labels),
                    automations=made or None,
                    secret_writes=writes,
                )
            )
            continue
        live_id = str(current["id"]) if current.get("id") is not None else None
        updated = str(current["updated"]) if current.get("updated") is not None else None
        owner = Owner.of(current)
        if project is not None and not owner.may_write(project, env):
            changes.append(
                Change(
                    CONFLICT,
                    spec.full_name,
                    spec.type,
                    spec,
                    live_id,
                    tuple(diff_bodies(spec.body, current)),
                    owner=owner.describe(),
                    live_updated=updated,
                )
            )
            continue
        have_normal = normalise_live(current)  # once, for the diff and the drift
        diff = diff_bodies(spec.body, current, have_normal)
        diff += secret_diff
        drift = drifted_fields(current, have_normal)
        write_automations = None
        have = (live_automations or {}).get(str(live_id)) if live_id is not None else None
        if have is not None or want:
            have_automations = _normal_automations(have or ())
            if have_automations != want:
                diff.append(FieldChange("triggers", have_automations or None, want or None))
                write_automations = made
            recorded = _recorded_triggers(current)
            if have is not None and recorded is not None and recorded != _hash(have_automations):
                drift = (*drift, "triggers")
        if diff:
            body = _with_labels(
                stamped(carry_schedule_state(spec.body, current.get("schedules") or [])), labels
            )
            changes.append(
                Change(
                    UPDATE, spec.full_name, spec.type, spec, live_id, tuple(diff), body,
                    drift=drift, live_updated=updated, automations=write_automations,
                    secret_writes=writes,
                )
            )
        else:
            changes.append(
                Change(
                    UNCHANGED, spec.full_name, spec.type, spec, live_id,
                    drift=drift, live_updated=updated,
                )
            )

    env_tag = f"env:{env}"
    for name, item in live_by_name.items():
        if name in desired_names:
            continue
        tags = set(item.get("tags") or ())
        if project is not None:
            if not Owner.of(item).is_ours(project, env):
                continue
        elif MANAGED_BY_TAG not in tags or env_tag not in tags:
            continue
        changes.append(
            Change(
                DELETE,
                name,
                _runtime_from_tags(tags),
                live_id=str(item.get("id")),
                live_updated=str(item["updated"]) if item.get("updated") is not None else None,
                kept=_protected(item, protected or {}),
                automations=() if has_triggers(item) else None,
            )
        )

    changes = _renames(changes, live_by_name)
    order = {action: i for i, action in enumerate(ACTIONS)}
    changes.sort(key=lambda c: (c.deployment, c.type or "", order[c.action]))
    return Plan(env=env, changes=tuple(changes))


def _protected(item: Mapping[str, Any], protected: Mapping[str, str]) -> str | None:
    """Why the live deployment ``item`` must be kept, when its entrypoint's file is one
    of ``protected`` (``flows/a.py:f`` and ``flows.a:f`` name the same file)."""
    entrypoint = item.get("entrypoint")
    if not isinstance(entrypoint, str) or ":" not in entrypoint:
        return None
    where = entrypoint.rsplit(":", 1)[0].removeprefix("./")
    if where in protected:
        return protected[where]
    for prefix, reason in protected.items():
        if prefix in ("/", ".") or (prefix[-1] in "/." and where.startswith(prefix)):
            return reason
    return None


def _renames(changes: list[Change], live: Mapping[str, Mapping[str, Any]]) -> list[Change]:
    """A create and a delete of ours with the same entrypoint and type are one rename."""
    deletes: dict[tuple[str, str | None], Change] = {}
    for change in changes:
        entrypoint = (
            live[change.deployment].get("entrypoint")
            if change.action == DELETE and change.kept is None
            else None
        )
        if isinstance(entrypoint, str):
            deletes.setdefault((entrypoint, change.type), change)
    out: list[Change] = []
    used: set[str] = set()
    for change in changes:
        if change.action == CREATE and change.spec is not None:
            old = deletes.get((str(change.spec.body.get("entrypoint")), change.type))
            if old is not None and old.deployment not in used:
                used.add(old.deployment)
                out.append(
                    replace(
                        change,
                        action=RENAME,
                        live_id=old.live_id,
                        live_updated=old.live_updated,
                        renamed_from=old.deployment,
                        drop_old_automations=old.automations is not None,
                    )
                )
                continue
        out.append(change)
    return [c for c in out if not (c.action == DELETE and c.deployment in used)]


# -- fingerprints: what we wrote, recorded on the deployment ----------------------------

# Fields whose hash is recorded; the schedules' active flags are recorded apart from
# their definitions (the server owns them, see carry_schedule_state).
_ACTIVE = "schedules.active"


def field_hashes(
    body: Mapping[str, Any], *, live: bool = False, normal: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """A short hash per compared field of ``body`` (a desired body, or with ``live`` a
    DeploymentResponse), taken on the normalised form (``normal``, when the caller has
    it already), so that what the server adds on its own does not count as a change."""
    if normal is None:
        normal = normalise_live(body) if live else normalise_desired(body)
    hashes = {key: _hash(normal.get(key)) for key in COMPARED_KEYS if key in normal}
    if not live and normal.get("work_queue_name") is None:
        hashes.pop("work_queue_name", None)  # the server picks the pool's default queue
    if "schedules" in body:
        items = [s for s in body.get("schedules") or () if isinstance(s, Mapping)]
        hashes["schedules"] = _hash(sorted(_sort_key(_drift_schedule(s)) for s in items))
        flags = sorted((_sort_key(_drift_schedule(s)), bool(s.get("active", True))) for s in items)
        hashes[_ACTIVE] = _hash(flags)
    return hashes


def _drift_schedule(item: Mapping[str, Any]) -> dict[str, Any]:
    """A schedule as both sides can say it: without what the server adds on its own (an
    interval's anchor_date, an rrule's DTSTART line), so only a real edit differs."""
    normal = _normalise_schedule_item(item)
    definition = dict(normal["schedule"])
    definition.pop("anchor_date", None)
    rule = definition.get("rrule")
    if isinstance(rule, str) and rule.upper().startswith(_RRULE_DTSTART) and "\n" in rule:
        definition["rrule"] = rule.split("\n", 1)[1].strip()
    return {**normal, "schedule": definition}


def stamped(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` as written: plain JSON, with labels that record its fingerprint (the
    hash of every field, and each field's own)."""
    out: dict[str, Any] = plain(body)
    hashes = field_hashes(out)
    labels = dict(out.get("labels") or {})
    labels[LABEL_FINGERPRINT] = _hash(hashes)
    labels[LABEL_FIELDS] = ",".join(f"{key}={value}" for key, value in sorted(hashes.items()))
    out["labels"] = labels
    return out


def recorded_hashes(item: Mapping[str, Any]) -> dict[str, str]:
    """The field hashes a live deployment's labels record; {} when it has none."""
    labels = item.get("labels") or {}
    text = labels.get(LABEL_FIELDS) if isinstance(labels, Mapping) else None
    if not isinstance(text, str):
        return {}
    pairs = (part.partition("=") for part in text.split(",") if "=" in part)
    return {key: value for key, _, value in pairs}


def drifted_fields(
    item: Mapping[str, Any], normal: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The fields of a live deployment changed since this tool wrote it (by hand in the
    UI, say), in display order; () when it records no fingerprint.  ``normal`` is
    ``normalise_live(item)`` when the caller has it."""
    recorded = recorded_hashes(item)
    if not recorded:
        return ()
    now = field_hashes(item, live=True, normal=normal)
    order = [*COMPARED_KEYS, _ACTIVE]
    return tuple(key for key in order if key in recorded and now.get(key) != recorded[key])


# The automation fields a trigger decides; the rest (ids, stamps, the deployment's own
# id in the action and the owner) is the server's or follows from the deployment.
_AUTOMATION_KEYS = ("name", "description", "enabled", "trigger", "actions",
                    "actions_on_trigger", "actions_on_resolve")


def _normal_automations(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Automations in a comparable form, sorted by name: their own fields, the
    trigger without its id, and actions without the deployment id they run."""
    out = []
    for item in items:
        normal = {k: plain(item.get(k)) for k in _AUTOMATION_KEYS}
        if isinstance(normal["trigger"], dict):
            normal["trigger"] = _without_ids(normal["trigger"])
        for key in ("actions", "actions_on_trigger", "actions_on_resolve"):
            normal[key] = [
                {k: v for k, v in a.items() if k != "deployment_id"} if isinstance(a, dict) else a
                for a in normal[key] or []
            ]
        out.append(normal)
    return sorted(out, key=lambda a: (str(a["name"]), _hash(a)))


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _current_secret_blocks(
    desired: Sequence[DeploymentSpec],
    live_by_name: Mapping[str, Mapping[str, Any]],
    existing: set[str],
) -> set[str]:
    """The Secret blocks that exist and hold the desired value: some live deployment
    of a desired spec records a salted hash made from that value."""
    current: set[str] = set()
    for spec in desired:
        item = live_by_name.get(spec.full_name)
        labels = (item or {}).get("labels") or {}
        for var, (block, value) in spec.secrets.items():
            if block in existing and matches_salted_hash(value, labels.get(LABEL_SECRET_PREFIX + var)):
                current.add(block)
    return current


def _secret_state(
    spec: DeploymentSpec,
    current: Mapping[str, Any] | None,
    current_blocks: Collection[str],
) -> tuple[dict[str, str], list[FieldChange], tuple[tuple[str, str], ...]]:
    """For ``spec``'s secrets: the labels it is written with (a live label kept when it
    was made from the same value, else a new salted hash), a change per secret that
    differs on a live deployment, saying so without the value, and the Secret blocks
    to write first (``current_blocks``: those that exist with the desired value)."""
    labels: dict[str, str] = {}
    diff: list[FieldChange] = []
    live = (current or {}).get("labels") or {}
    for var, (block, value) in sorted(spec.secrets.items()):
        key = LABEL_SECRET_PREFIX + var
        recorded = live.get(key) if isinstance(live, Mapping) else None
        if matches_salted_hash(value, recorded):
            labels[key] = str(recorded)
            state = None if block in current_blocks else "secret block missing"
        else:
            labels[key] = salted_hash(value, secrets.token_hex(8))
            state = "secret changed" if recorded is not None else "new secret"
        if current is not None and state is not None:
            old = "(stored)" if recorded is not None else None
            diff.append(FieldChange(f"{SECRET_CHANGE_PREFIX}{var}", old, state))
    writes = tuple(
        (block, value) for block, value in sorted(spec.secrets.values())
        if block not in current_blocks
    )
    return labels, diff, writes


def _with_labels(body: dict[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """``body`` with ``labels`` added to its own (the fingerprint ``stamped`` wrote)."""
    if labels:
        body["labels"] = {**(body.get("labels") or {}), **labels}
    return body


def _recorded_triggers(item: Mapping[str, Any]) -> str | None:
    labels = item.get("labels") or {}
    value = labels.get(LABEL_TRIGGERS) if isinstance(labels, Mapping) else None
    return value if isinstance(value, str) else None


def has_triggers(item: Mapping[str, Any]) -> bool:
    """Whether a live deployment was written with triggers by this tool."""
    return _recorded_triggers(item) is not None


# json.dumps with these options, without building an encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":")).encode


def _hash(value: Any) -> str:
    return hashlib.sha256(_CANONICAL(value).encode()).hexdigest()[:10]


def diff_bodies(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    have: Mapping[str, Any] | None = None,
) -> list[FieldChange]:
    """The field-level differences between a desired body and a live response, after
    both are normalised (see the module docstring; ``have`` is the live one's normal
    form when the caller has it).  Empty when nothing differs."""
    want = normalise_desired(desired)
    if have is None:
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
    options = body.get("concurrency_options")
    if isinstance(options, dict):  # the server adds grace_period_seconds: null
        body["concurrency_options"] = {k: v for k, v in options.items() if v is not None} or None
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


# -- saved plans ---------------------------------------------------------------------------

SAVED_PLAN_VERSION = 1


def source_fingerprint(desired: Sequence[DeploymentSpec], *, project: str, api_url: str) -> str:
    """One hash of everything the desired side was computed from: the project, the API,
    and every desired body (so the flow files, settings and templates that shape them)."""
    bodies = sorted((spec.full_name, spec.type, plain(spec.body)) for spec in desired)
    return _hash({"project": project, "api_url": api_url, "bodies": bodies})


def saved_plan(
    plan: Plan,
    *,
    project: str,
    fingerprint: str,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
) -> dict[str, Any]:
    """The plan as ``plan --out`` writes it, with what it was computed from: the source
    fingerprint, the selection, and each live deployment's ``updated`` stamp."""
    return {
        "version": SAVED_PLAN_VERSION,
        "project": project,
        "env": plan.env,
        "fingerprint": fingerprint,
        "flow_names": list(flow_names),
        "types": list(types),
        # No field values: they are recomputed when the plan is applied, and may be secret.
        "changes": [
            {
                **{k: v for k, v in change.to_dict().items() if k != "diff"},
                "fields": sorted({fc.path.split(".", 1)[0] for fc in change.diff}),
                "live_updated": change.live_updated,
            }
            for change in plan.changes
        ],
    }


def stale_reasons(saved: Mapping[str, Any], plan: Plan, *, project: str, fingerprint: str) -> list[str]:
    """What moved since ``saved`` was computed, judged by the plan computed now: [] when
    applying ``plan`` is applying exactly the saved one."""
    reasons: list[str] = []
    if saved.get("project") != project or saved.get("env") != plan.env:
        reasons.append(
            f"the plan is for project {saved.get('project')!r}, env {saved.get('env')!r}, "
            f"not project {project!r}, env {plan.env!r}"
        )
        return reasons
    if saved.get("fingerprint") != fingerprint:
        reasons.append("the flow files, settings or templates changed since the plan was made")

    def key(change: Mapping[str, Any]) -> tuple[Any, ...]:
        return (change.get("action"), change.get("id"), change.get("live_updated"))

    before = {str(c.get("deployment")): c for c in saved.get("changes") or ()}
    now = {c.deployment: {**c.to_dict(), "live_updated": c.live_updated} for c in plan.changes}
    for name in sorted(before.keys() | now.keys()):
        was, is_ = before.get(name), now.get(name)
        if was is None:
            reasons.append(f"{name}: not in the saved plan (now {is_['action'] if is_ else '?'})")
        elif is_ is None:
            reasons.append(f"{name}: in the saved plan ({was.get('action')}), no longer planned")
        elif key(was) != key(is_):
            if was.get("live_updated") != is_.get("live_updated"):
                reasons.append(f"{name}: changed on the server since the plan was made")
            else:
                reasons.append(f"{name}: planned {was.get('action')}, now {is_['action']}")
    return reasons
