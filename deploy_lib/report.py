"""Plans and results as text, as JSON-ready dicts, and as progress output.

Pure formatting: the functions return strings or dicts; only ``ApplyProgress`` writes,
and only to the stream it is given.  Everything shown passes through the run's
``Masker``, and a diff value under a secret-looking key (``job_variables.env.API_KEY``)
is shown as ``****`` whatever it is.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO

from deploy_lib.apply import (
    DELETED,
    FAILED,
    SKIPPED,
    STATUSES,
    UNCHANGED_STATUS,
    ApplyResult,
    Result,
)
from deploy_lib.masking import MASK, Masker, is_secret_name
from deploy_lib.plan import CREATE, DELETE, UNCHANGED, UPDATE, Change, FieldChange, Plan

MAX_VALUE = 80
_MARK = {CREATE: "+", UPDATE: "~", UNCHANGED: "=", DELETE: "-"}
_PRUNE_HINT = "kept: deploy with --prune to delete it"


def format_plan(
    plan: Plan,
    masker: Masker | None = None,
    *,
    prune: bool | None = None,
    show_unchanged: bool = True,
    max_value: int = MAX_VALUE,
) -> str:
    """The plan as a table: one line per deployment (``+ create``, ``~ update``,
    ``= unchanged``, ``- delete``), each update followed by its changed fields as
    ``path: old -> new``.  ``prune=False`` marks deletes as kept; ``show_unchanged``
    lists unchanged deployments (they are always counted in the heading)."""
    masker = masker or Masker()
    counts = plan.counts
    summary = (
        f"{counts[CREATE]} to create, {counts[UPDATE]} to update, "
        f"{counts[UNCHANGED]} unchanged, {counts[DELETE]} to delete"
    )
    if not plan.has_changes:
        return masker.text(f"No changes for env {plan.env!r}: {summary}.")
    lines = [f"Plan for env {plan.env!r}: {summary}"]
    shown = [c for c in plan.changes if show_unchanged or c.action != UNCHANGED]
    width = max((len(c.deployment) for c in shown), default=0)
    for change in shown:
        line = f"  {_MARK[change.action]} {change.action:<10} {change.deployment:<{width}}  {change.type or '-'}"
        if change.action == DELETE and prune is False:
            line += f"  ({_PRUNE_HINT})"
        lines.append(line.rstrip())
        lines += [f"      {format_field_change(fc, masker, max_value)}" for fc in change.diff]
    return masker.text("\n".join(lines))


def format_field_change(
    change: FieldChange, masker: Masker | None = None, max_value: int = MAX_VALUE
) -> str:
    """``path: old -> new`` with both values masked and truncated to ``max_value``."""
    masker = masker or Masker()
    old_value, new_value = _mask_pair(change, masker)
    old = _show(change.path, old_value, masker, max_value)
    new = _show(change.path, new_value, masker, max_value)
    return masker.text(f"{change.path}: {old} -> {new}")


def format_results(result: ApplyResult, masker: Masker | None = None) -> str:
    """The counts per status as a small table, then each failure with its message."""
    masker = masker or Masker()
    counts = result.counts
    lines = [f"Results for env {result.env!r}:"]
    for status in STATUSES:
        line = f"  {status:<10} {counts[status]:>5}"
        if status == SKIPPED and counts[status]:
            line += "  (deletes kept: deploy with --prune to delete them)"
        lines.append(line)
    failed = result.failed
    if failed:
        lines.append(f"Failed ({len(failed)}):")
        for item in failed:
            message = (item.error or "unknown error").replace("\n", "\n      ")
            lines.append(f"  - {item.deployment}: {message}")
    return masker.text("\n".join(lines))


def plan_json(plan: Plan, masker: Masker | None = None) -> dict[str, Any]:
    """``{"env": ..., "changes": [{action, deployment, type, id, diff}], "summary": {...}}``
    with secrets masked."""
    masker = masker or Masker()
    data = plan.to_dict()
    data["changes"] = [_change_json(c, masker) for c in plan.changes]
    masked: dict[str, Any] = masker.data(data)
    return masked


def results_json(result: ApplyResult, masker: Masker | None = None) -> dict[str, Any]:
    """``{"env": ..., "results": [one record per deployment], "summary": {...}}`` with
    secrets masked."""
    masker = masker or Masker()
    masked: dict[str, Any] = masker.data(result.to_dict())
    return masked


def to_json(data: Mapping[str, Any]) -> str:
    """Stable JSON text for ``--json`` output."""
    return json.dumps(data, indent=2, default=str, ensure_ascii=False)


def progress_line(
    result: Result, masker: Masker | None = None, now: dt.datetime | None = None
) -> str:
    """One plain line per deployment for logs and cron:
    ``2026-11-26T06:30:01Z created flow/name (123 ms)``."""
    masker = masker or Masker()
    moment = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} {result.status} {result.deployment}"
    if result.status == SKIPPED:
        line += f" ({_PRUNE_HINT})"
    elif result.status != UNCHANGED_STATUS:
        line += f" ({result.duration * 1000:.0f} ms)"
    if result.status == FAILED:
        line += f": {(result.error or 'unknown error')}".replace("\n", " ")
    return masker.text(line)


class ApplyProgress:
    """The ``on_result`` callback of ``apply_plan``: a rich progress bar on a terminal
    (failures printed above it), plain timestamped lines otherwise.

    Use as a context manager around the apply; ``tty`` is usually
    ``stream.isatty()``, passed in so that both forms can be tested.  ``clock`` returns
    the time stamped on plain lines.
    """

    def __init__(
        self,
        total: int,
        *,
        tty: bool,
        stream: TextIO,
        masker: Masker | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        description: str = "deploying",
    ) -> None:
        self.total = total
        self.tty = tty
        self._stream = stream
        self._masker = masker or Masker()
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self._description = description
        self._bar: Any = None
        self._task: Any = None
        self.done = 0

    def __enter__(self) -> ApplyProgress:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=self._stream, force_terminal=True)
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._description, total=self.total)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, result: Result) -> None:
        self.done += 1
        if self._bar is None:
            self._stream.write(progress_line(result, self._masker, self._clock()) + "\n")
            self._stream.flush()
            return
        if result.status in (FAILED, DELETED):
            self._bar.console.print(
                progress_line(result, self._masker, self._clock()), markup=False, highlight=False
            )
        self._bar.update(self._task, advance=1)


# --- value rendering ---------------------------------------------------------------


def _change_json(change: Change, masker: Masker) -> dict[str, Any]:
    data = change.to_dict()
    data["diff"] = [
        dict(zip(("path", "old", "new"), (fc.path, *_mask_pair(fc, masker)), strict=True))
        for fc in change.diff
    ]
    return data


def _mask_pair(change: FieldChange, masker: Masker) -> tuple[Any, Any]:
    """``old`` and ``new`` masked; when one side is a secret, so is the other.  A rotated
    secret's old value comes from the server, so the masker cannot know it, and its key
    (``DATABASE_URL``) need not look secret: it is the previous value of a secret."""
    old = _mask_value(change.path, change.old, masker)
    new = _mask_value(change.path, change.new, masker)
    if old != change.old and new == change.new and new not in (None, ""):
        new = MASK
    elif new != change.new and old == change.old and old not in (None, ""):
        old = MASK
    return old, new


def _mask_value(path: str, value: Any, masker: Masker) -> Any:
    if value not in (None, "") and any(is_secret_name(part) for part in path.split(".")):
        return MASK
    return masker.data(value)


def _show(path: str, value: Any, masker: Masker, max_value: int) -> str:
    masked = _mask_value(path, value, masker)
    if path == "schedules" and isinstance(masked, list):
        text = "[" + "; ".join(_describe_schedule(s) for s in masked) + "]"
    elif value is None:
        text = "(none)"
    else:
        text = json.dumps(masked, sort_keys=True, default=str, ensure_ascii=False)
    limit = max_value * 3 if path == "schedules" else max_value  # a list of short lines
    if len(text) > limit:
        text = text[: max(limit - 3, 1)] + "..."
    return text


def _describe_schedule(item: Any) -> str:
    """``cron 0 6 * * * UTC`` / ``every 3600s UTC`` / ``rrule FREQ=DAILY UTC``."""
    if not isinstance(item, Mapping):
        return str(item)
    definition = item.get("schedule") or {}
    zone = definition.get("timezone") or "UTC"
    if "cron" in definition:
        text = f"cron {definition['cron']} {zone}"
    elif "interval" in definition:
        interval = definition["interval"]
        seconds = f"{interval:g}s" if isinstance(interval, (int, float)) else str(interval)
        text = f"every {seconds} {zone}"
        if definition.get("anchor_date"):
            text += f" from {definition['anchor_date']}"
    elif "rrule" in definition:
        text = f"rrule {str(definition['rrule']).replace(chr(10), ' ')} {zone}"
    else:
        text = json.dumps(definition, sort_keys=True, default=str)
    if item.get("parameters"):
        text += f" with {json.dumps(item['parameters'], sort_keys=True, default=str)}"
    if item.get("slug"):
        text += f" [{item['slug']}]"
    return text
