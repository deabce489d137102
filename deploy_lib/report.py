"""Everything the program shows: plans, results, images, pools, as text or JSON-ready
dicts, the progress of an apply, and ``Output``, the one place that writes.

The ``format_*`` functions are pure: they return strings or dicts.  ``Output`` is made
once per command and passed in (no module globals): it writes to stdout and stderr,
masks every line with the run's ``Masker``, appends each line to the ``--log-file``
(timestamped), and prints each warning once.  ``ApplyProgress`` writes only to the
stream it is given.  A diff value under a secret-looking key
(``job_variables.env.API_KEY``) is shown as ``****`` whatever it is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from deploy_lib.models import (
    CONFLICT,
    CREATE,
    DELETE,
    DELETED,
    FAILED,
    MASK,
    RENAME,
    SECRET_CHANGE_PREFIX,
    SECRET_STATES,
    SKIPPED,
    STATUSES,
    UNCHANGED,
    UNCHANGED_STATUS,
    UPDATE,
    ApplyResult,
    Change,
    DeploymentSpec,
    Discovery,
    FieldChange,
    ImageResult,
    Masker,
    Parameter,
    Plan,
    Problem,
    Result,
    Settings,
    Skipped,
    is_secret_name,
)

MAX_VALUE = 80
_MARK = {CREATE: "+", UPDATE: "~", UNCHANGED: "=", DELETE: "-", CONFLICT: "!", RENAME: ">"}
_PRUNE_HINT = "kept: deploy with --prune to delete it"
# ANSI colours of the plan on a terminal: green create, yellow update, red delete,
# magenta drift, bold red conflict.
_COLOUR = {CREATE: "32", UPDATE: "33", DELETE: "31", CONFLICT: "1;31", RENAME: "36"}
_DRIFT_COLOUR = "35"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")
_ON_SERVER = "changed on the server since the last deploy"


def use_colour(stream: TextIO, *, no_color: bool = False) -> bool:
    """Colour only on a terminal, unless ``--no-color`` or ``NO_COLOR`` says no."""
    if no_color or os.environ.get("NO_COLOR", "") != "":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if colour and code else text


def plan_summary(plan: Plan) -> str:
    """``1 to create, 2 to update, 3 unchanged, 0 to delete`` (and conflicts, drift)."""
    counts = plan.counts
    summary = (
        f"{counts[CREATE]} to create, {counts[UPDATE]} to update, "
        f"{counts[UNCHANGED]} unchanged, {counts[DELETE]} to delete"
    )
    if counts[RENAME]:
        summary += f", {counts[RENAME]} to rename"
    if counts[CONFLICT]:
        summary += f", {counts[CONFLICT]} in conflict"
    if kept := len(plan.kept):
        summary += f", {kept} kept (flow file has problems)"
    if drifted := len(plan.drifted):
        summary += f", {drifted} with drift"
    return summary


def _drift_of(change: Change, path: str) -> bool:
    return path.split(".", 1)[0] in change.drift or (
        path.startswith("schedules") and "schedules.active" in change.drift
    )


def format_plan(
    plan: Plan,
    masker: Masker | None = None,
    *,
    prune: bool | None = None,
    show_unchanged: bool = True,
    max_value: int = MAX_VALUE,
    colour: bool = False,
) -> str:
    """The plan as a table: one line per deployment (``+ create``, ``~ update``,
    ``= unchanged``, ``- delete``), each update followed by its changed fields as
    ``path: old -> new``.  ``prune=False`` marks deletes as kept; ``show_unchanged``
    lists unchanged deployments (they are always counted in the heading).  A conflict
    (``! conflict``) names who owns the deployment; fields changed on the server since
    the last deploy are marked as drift.  ``colour`` paints the lines (ANSI)."""
    masker = masker or Masker()
    summary = plan_summary(plan)
    if not plan.has_changes:
        return masker.text(f"No changes for env {plan.env!r}: {summary}.")
    lines = [f"Plan for env {plan.env!r}: {summary}"]
    shown = [c for c in plan.changes if show_unchanged or c.action != UNCHANGED]
    width = max((len(c.deployment) for c in shown), default=0)
    for change in shown:
        line = f"  {_MARK[change.action]} {change.action:<10} {change.deployment:<{width}}  {change.type or '-'}"
        if change.kept is not None:
            line = f"  = {'kept':<10} {change.deployment:<{width}}  {change.type or '-'}  ({change.kept})"
        elif change.action == DELETE and prune is False:
            line += f"  ({_PRUNE_HINT})"
        if change.action == CONFLICT:
            line += f"  ({change.owner}; left alone: `invoke adopt` takes it over)"
        if change.action == RENAME:
            kept = "" if prune else "; the old one is kept unless deployed with --prune"
            line += f"  (was {change.renamed_from}{kept})"
        code = _COLOUR.get(change.action)
        if change.drift and change.action in (UPDATE, UNCHANGED):
            line += f"  (drift: {', '.join(change.drift)} {_ON_SERVER})"
            code = _DRIFT_COLOUR
        lines.append(_paint(masker.text(line.rstrip()), code, colour))
        if change.action == CONFLICT:
            continue
        for fc in change.diff:
            text = f"      {format_field_change(fc, masker, max_value)}"
            if _drift_of(change, fc.path):
                text = _paint(f"{text}  [drift]", _DRIFT_COLOUR, colour)
            lines.append(text)
    return masker.text("\n".join(lines))


def format_plan_markdown(plan: Plan, masker: Masker | None = None, *, prune: bool = False) -> str:
    """The plan as Markdown for a pull-request comment: a heading with the counts, one
    table row per change (unchanged ones only counted), the field diffs folded."""
    masker = masker or Masker()
    summary = plan_summary(plan)
    lines = [f"### Plan for `{plan.env}`: {summary}", ""]
    shown = [c for c in plan.changes if c.action != UNCHANGED or c.drift]
    if not shown:
        lines.append("No changes.")
        return masker.text("\n".join(lines))
    lines += ["| | deployment | type | what |", "|---|---|---|---|"]
    for change in shown:
        what = ""
        if change.action == UPDATE:
            what = f"{len(change.diff)} field(s)"
        if change.drift:
            what += f"{'; ' if what else ''}drift: {', '.join(change.drift)}"
        if change.action == DELETE and not prune:
            what = "kept unless deployed with --prune"
        if change.kept is not None:
            what = f"kept: {change.kept}"
        if change.action == CONFLICT:
            what = str(change.owner)
        if change.action == RENAME:
            what = f"was `{change.renamed_from}`"
        mark = f"`{_MARK[change.action]}` {change.action}"
        lines.append(f"| {mark} | `{change.deployment}` | {change.type or '-'} | {_cell(what)} |")
    diffs = [c for c in shown if c.diff and c.action == UPDATE]
    if diffs:
        lines += ["", "<details><summary>Field changes</summary>", ""]
        for change in diffs:
            lines.append(f"**{change.deployment}**")
            for fc in change.diff:
                mark = " (drift)" if _drift_of(change, fc.path) else ""
                lines.append(f"- `{_cell(format_field_change(fc, masker))}`{mark}")
            lines.append("")
        lines.append("</details>")
    return masker.text("\n".join(lines))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


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
            notes = [r.note or "" for r in result.results if r.status == SKIPPED]
            kept_drift = sum(1 for n in notes if n.startswith("drift kept"))
            kept_files = sum(1 for n in notes if n.startswith("kept:"))
            deletes = counts[status] - kept_drift - kept_files
            why = ["deletes kept: deploy with --prune to delete them"] if deletes else []
            why += [f"{kept_drift} with drift kept (--keep-drift)"] if kept_drift else []
            why += [f"{kept_files} kept: their flow files have problems"] if kept_files else []
            line += f"  ({'; '.join(why)})"
        lines.append(line)
    for item in result.conflicts:
        lines.append(f"  ! {item.deployment}: left alone, {item.error}")
    failed = result.failed
    if failed:
        lines.append(f"Failed ({len(failed)}):")
        for item in failed:
            message = (item.error or "unknown error").replace("\n", "\n      ")
            lines.append(f"  - {item.deployment}: {message}")
    return masker.text("\n".join(lines))


def plan_json(
    plan: Plan, masker: Masker | None = None, skipped: Sequence[Skipped] = ()
) -> dict[str, Any]:
    """``{"env": ..., "changes": [{action, deployment, type, id, diff}], "summary": {...},
    "skipped": [{path, flow, line, reason}]}`` with secrets masked."""
    masker = masker or Masker()
    data = plan.to_dict()
    data["changes"] = [_change_json(c, masker) for c in plan.changes]
    data["skipped"] = [item.to_dict() for item in skipped]
    masked: dict[str, Any] = masker.data(data)
    return masked


def results_json(
    result: ApplyResult, masker: Masker | None = None, skipped: Sequence[Skipped] = ()
) -> dict[str, Any]:
    """``{"env": ..., "results": [one record per deployment], "summary": {...},
    "skipped": [{path, flow, line, reason}]}`` with secrets masked."""
    masker = masker or Masker()
    data = result.to_dict()
    data["skipped"] = [item.to_dict() for item in skipped]
    masked: dict[str, Any] = masker.data(data)
    return masked


def to_json(data: Any, *, indent: int | None = 2) -> str:
    """Stable JSON text for ``--json`` output."""
    return json.dumps(data, indent=indent, default=str, ensure_ascii=False)


def format_run(outcome: Mapping[str, Any]) -> str:
    """``flow run <name> of <flow/deployment>: <state>``."""
    return f"flow run {outcome['flow_run_name']} of {outcome['deployment']}: {outcome['state']}"


def format_pools_ready(rows: Sequence[Mapping[str, Any]]) -> str:
    """One indented ``name (type): created|ready`` line per work pool."""
    return "\n".join(
        f"    {row['name']} ({row['expected_type']}): {'created' if row['created'] else 'ready'}"
        for row in rows
    )


def format_server_status(status: Any, *, as_json: bool = False) -> str:
    """The local server's status (a ``server.ServerStatus`` or None) as text or JSON."""
    if as_json:
        return json.dumps(status.to_dict() if status else None)
    if status is None:
        return "local Prefect server is not running (start it: invoke server.start)"
    health = "healthy" if status.healthy else "NOT answering /api/health"
    ui = f"\nPrefect UI: {status.ui_url}" if status.ui_url else "\nPrefect UI: off"
    return (
        f"local Prefect server: pid {status.pid}, started {status.started_at}, {health}, "
        f"on {getattr(status, 'database', 'sqlite')}{ui}\n"
        f"export PREFECT_API_URL={status.url}"
    )


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
        line += f" ({result.note or _PRUNE_HINT})"
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



# --- output ------------------------------------------------------------------------


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Output:
    """Where one command's lines go: ``stdout`` / ``stderr``, masked by ``masker``, and
    appended (timestamped) to ``log_file`` when one is set.  ``warn`` prints each
    distinct warning once per ``Output``.  Made by the command's caller and passed in."""

    def __init__(
        self,
        *,
        masker: Masker | None = None,
        log_file: str | Path | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        quiet: bool = False,
        verbose: bool = False,
    ) -> None:
        self.masker = masker if masker is not None else Masker()
        # quiet: no notes, no progress and no plan before an apply (still logged);
        # verbose: the notes commands other than validate keep to themselves.
        self.quiet = quiet
        self.verbose = verbose
        self.log_file = Path(log_file).resolve() if log_file else None
        self._stdout = stdout
        self._stderr = stderr
        self._warned: set[str] = set()
        # A reader that went away (`invoke deploy | head -1`) never stops the run.
        self._lost: set[str] = set()

    @property
    def stdout(self) -> TextIO:
        return self._stdout if self._stdout is not None else sys.stdout

    @property
    def stderr(self) -> TextIO:
        return self._stderr if self._stderr is not None else sys.stderr

    def learn(self, secrets: Iterable[str]) -> None:
        """Mask these values too from now on (an environment's secrets, once loaded)."""
        self.masker.add(secrets)

    def mask(self, text: str) -> str:
        return self.masker.text(text)

    def write(self, text: str, *, err: bool = False) -> None:
        """``text`` on stdout (or stderr), flushed.  When the reader has gone (a closed
        pipe, ``| head -1``), the stream is given up for the rest of the run, said once
        on the other stream and in the log, and the run goes on: output never
        interrupts an apply."""
        name = "stderr" if err else "stdout"
        if name in self._lost:
            return
        stream = self.stderr if err else self.stdout
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, EIO, a closed file
            self._lost.add(name)
            _silence(stream)
            message = f"{name} was closed; the run goes on without printing there"
            self.log(f"warning: {message}")
            if not err:
                self.write(f"warning: {message}\n", err=True)

    def echo(self, text: str = "") -> None:
        """One line (or block) on stdout, masked, and into the log."""
        masked = self.mask(text)
        self.write(masked + "\n")
        self.log(masked)

    def raw(self, text: str) -> None:
        """Text on stdout exactly as given (``--show-secrets`` asked for it); not logged."""
        self.write(text + "\n")

    def warn(self, text: str) -> None:
        """``warning: ...`` on stderr and into the log, once per distinct text."""
        if text in self._warned:
            return
        self._warned.add(text)
        masked = self.mask(text)
        self.write(f"warning: {masked}\n", err=True)
        self.log(f"warning: {masked}")

    def note(self, text: str) -> None:
        """A line about the run on stderr (stdout stays the command's result), logged;
        not shown with ``quiet``."""
        masked = self.mask(text)
        if not self.quiet:
            self.write(masked + "\n", err=True)
        self.log(masked)

    def notes(self, texts: Iterable[str]) -> None:
        """What is expected of ordinary settings: shown as warnings with ``verbose``
        only (``validate`` shows them always, through ``warn_all``)."""
        if self.verbose:
            self.warn_all(texts)

    def warn_all(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.warn(text)

    def log(self, text: str) -> None:
        """Append ``text`` (already masked), one timestamped line per line, to the log:
        its folder is made if missing, the file is created readable by its owner only,
        and a line that already starts with a timestamp is not stamped again.  When the
        log cannot be written (a folder, a full disk), that is said once on stderr and
        the run goes on without it."""
        if self.log_file is None:
            return
        stamp = _stamp()
        lines = [
            line if _STAMPED.match(line) else f"{stamp} {line}"
            for line in _ANSI.sub("", text).splitlines() or [""]
        ]
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.writelines(f"{line}\n" for line in lines)
        except OSError as exc:
            path, self.log_file = self.log_file, None
            self.write(
                f"warning: cannot write the log file {path}: {exc.strerror or exc}; "
                "going on without it\n",
                err=True,
            )

    def stream(self) -> TextIO:
        """A stream over stdout that also logs each non-blank line written to it."""
        return _LogStream(self)  # type: ignore[return-value]

    def confirm(self, risks: Sequence[str], *, stdin: TextIO | None = None) -> bool:
        """Ask on the terminal whether to go on, naming each risk; only ``y``/``yes``
        goes on.  End of input is a no."""
        source = stdin if stdin is not None else sys.stdin
        self.write("This will:\n" + "".join(f"  - {self.mask(r)}\n" for r in risks))
        self.write("Go on? [y/N] ")
        answer = source.readline()
        self.log(f"asked to confirm: {'; '.join(risks)}; answered {answer.strip()!r}")
        return answer.strip().lower() in ("y", "yes")

    def plan(self, plan: Plan, *, prune: bool, no_color: bool = False) -> None:
        """The plan's changes (unchanged deployments only counted), before an apply;
        coloured on a terminal."""
        if self.quiet:
            self.log(format_plan(plan, self.masker, prune=prune, show_unchanged=False))
            return
        colour = use_colour(self.stdout, no_color=no_color)
        self.echo(format_plan(plan, self.masker, prune=prune, show_unchanged=False, colour=colour))

    @contextlib.contextmanager
    def progress(self, plan: Plan, *, tty: bool) -> Iterator[Callable[[Result], None]]:
        """The ``on_result`` callback of the apply: a progress bar on a terminal,
        timestamped lines otherwise.  The bar is closed when the block ends, however it
        ends.  With ``quiet`` the lines go to the log only."""
        if self.quiet:
            yield lambda result: self.log(progress_line(result, self.masker))
            return
        bar = ApplyProgress(len(plan.changes), tty=tty, stream=self.stream(), masker=self.masker)
        with bar:
            yield bar


def _silence(stream: TextIO) -> None:
    """Point a stream whose reader has gone at /dev/null, so that the interpreter's own
    flush at exit finds nothing to complain about."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


class _LogStream:
    """stdout, also appending what is written to the Output's log file."""

    def __init__(self, output: Output) -> None:
        self._output = output

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._output.log(line)
        self._output.write(text)
        return len(text)

    def flush(self) -> None:
        pass  # Output.write flushes each write

    def isatty(self) -> bool:
        return bool(self._output.stdout.isatty())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._output.stdout, name)


# --- value rendering ---------------------------------------------------------------


def _change_json(change: Change, masker: Masker) -> dict[str, Any]:
    data = change.to_dict()
    data["diff"] = [
        {
            **dict(zip(("path", "old", "new"), (fc.path, *_mask_pair(fc, masker)), strict=True)),
            "drift": _drift_of(change, fc.path),
        }
        for fc in change.diff
    ]
    return data


def _mask_pair(change: FieldChange, masker: Masker) -> tuple[Any, Any]:
    """``old`` and ``new`` masked; when one side is a secret, so is the other.  A rotated
    secret's old value comes from the server, so the masker cannot know it, and its key
    (``DATABASE_URL``) need not look secret: it is the previous value of a secret."""
    old = _mask_value(change.path, change.old, masker)
    new = _mask_value(change.path, change.new, masker)
    if _is_reference(change.new) or _is_reference(change.old):
        return old, new  # a Secret block reference stays readable beside a masked value
    if old != change.old and new == change.new and new not in (None, ""):
        new = MASK
    elif new != change.new and old == change.old and old not in (None, ""):
        old = MASK
    return old, new


_BLOCK_REFERENCE = re.compile(r"\{\{ prefect\.blocks\.secret\.[a-z0-9-]+ \}\}")


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and bool(_BLOCK_REFERENCE.fullmatch(value))


def _mask_value(path: str, value: Any, masker: Masker) -> Any:
    if path.startswith(SECRET_CHANGE_PREFIX) and value in SECRET_STATES:
        return value  # words the plan chose ("secret changed"), never the value
    if _is_reference(value):
        return value  # where the secret is kept, resolved by the worker: no secret itself
    secret = any(is_secret_name(part) for part in path.split(".")) or masker.is_secret_path(path)
    if value not in (None, "") and secret:
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


def format_images(results: Sequence[ImageResult]) -> str:
    """One line per image: its references, flows, Dockerfile, pushed or not, and time."""
    lines = []
    for result in results:
        state = "built and pushed" if result.pushed else "built"
        lines.append(
            f"{', '.join(result.references)}: {state} in {result.seconds:.1f} s "
            f"({result.dockerfile}; flows {', '.join(result.flows)})"
        )
    return "\n".join(lines) or "no image built"


def format_work_pools(rows: Sequence[Mapping[str, Any]]) -> str:
    """One aligned line per row of ``work_pools_report``."""
    lines = []
    for row in rows:
        if not row["exists"]:
            state = f"missing (expected {row['expected_type']}; create it: invoke pools --create)"
        elif not row["type_ok"]:
            state = f"type {row['type']}, but {row['deployment_type']} needs {row['expected_type']}"
        else:
            online = row["workers_online"]
            state = f"{row['type']}, {'created, ' if row['created'] else ''}"
            state += f"{online} worker{'s' if online != 1 else ''} online"
        lines.append(f"{row['deployment_type']:<8} {row['name']:<30} {state}")
    return "\n".join(lines)


def summarize(env: str, specs: Sequence[DeploymentSpec]) -> str:
    """One line for a valid environment: how many deployments, of which types."""
    types = Counter(spec.type for spec in specs)
    flows = len({spec.flow.entrypoint for spec in specs})
    by_type = ", ".join(f"{types[t]} {t}" for t in sorted(types))
    detail = f" ({by_type})" if by_type else ""
    return f"{env}: {len(specs)} deployment(s) of {flows} flow(s) are valid{detail}"



def report_json(
    env: str,
    specs: Sequence[DeploymentSpec] = (),
    problems: Sequence[Problem] = (),
    *,
    skipped: Sequence[Skipped] = (),
    warnings: Sequence[str] = (),
    error: str | None = None,
) -> str:
    """``{"env", "valid", "deployments", "full_names", "problems", "skipped",
    "warnings"}`` (and ``error`` when something else than the deployments stopped the
    run: the settings, a flow file under --strict) as indented JSON."""
    report: dict[str, Any] = {
        "env": env,
        "valid": not problems and error is None,
        "deployments": [spec.name for spec in specs],
        "full_names": [spec.full_name for spec in specs],
        "problems": [problem.to_dict() for problem in problems],
        "skipped": [item.to_dict() for item in skipped],
        "warnings": list(warnings),
    }
    if error is not None:
        report["error"] = error
    return json.dumps(report, indent=2, default=str)


def format_discovery(discovery: Discovery, *, as_json: bool = False) -> str:
    """A plain aligned table of the flows, then the problems, for a terminal.

    With ``as_json`` the text is ``json.dumps(discovery.to_dict())``, indented.
    """
    if as_json:
        return json.dumps(discovery.to_dict(), indent=2, default=str)
    header = ("FLOW", "ENTRYPOINT", "PARAMETERS", "TYPES", "PROBLEMS")
    rows: list[tuple[list[str], ...]] = [tuple([cell] for cell in header)]
    for flow in discovery.flows:
        params = [_describe_parameter(p) for p in flow.parameters] or ["-"]
        types = [
            t
            for t, ok in (
                ("python", flow.supports_python_deployment),
                ("docker", flow.supports_docker_deployment),
            )
            if ok
        ]
        rows.append(
            (
                [flow.name + (" (async)" if flow.is_async else "")],
                [flow.entrypoint],
                _wrap(params, _PARAMETERS_WIDTH),
                [", ".join(types) or "-"],
                [str(len(flow.problems)) if flow.problems else "-"],
            )
        )
    widths = [max(len(line) for row in rows for line in row[i]) for i in range(len(header))]
    lines = []
    for row in rows:
        for n in range(max(len(cell) for cell in row)):
            parts = [cell[n] if n < len(cell) else "" for cell in row]
            text = "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True))
            lines.append(text.rstrip())
    lines.append("")
    lines.append(f"{len(discovery.flows)} flow(s), {len(discovery.problems)} problem(s)")
    lines += [f"  - {p}" for p in discovery.problems]
    notes = [f"  - {flow.entrypoint}: {note}" for flow in discovery.flows for note in flow.notes]
    if notes:
        lines += ["", f"{len(notes)} note(s):", *notes]
    return "\n".join(lines)



_PARAMETERS_WIDTH = 60



def _wrap(items: Sequence[str], width: int) -> list[str]:
    """Join ``items`` with ", " into lines of at most ``width`` (long items stay whole)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(item) + 2 <= width:
            lines[-1] += f", {item}"
        else:
            if lines:
                lines[-1] += ","
            lines.append(item)
    return lines



def _describe_parameter(param: Parameter) -> str:
    prefix = {"var_positional": "*", "var_keyword": "**"}.get(param.kind, "")
    text = prefix + param.name
    if param.annotation:
        text += f": {param.annotation}"
    if not param.required and param.kind not in ("var_positional", "var_keyword"):
        default = repr(param.default) if param.default_is_literal else str(param.default)
        text += f" = {default}"
    return text


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
            "settings": settings.effective(show_secrets),
        }
        if with_sources:
            out["sources"] = {key: source for key, _, source in settings.explain(True)}
        return json.dumps(out, indent=2, ensure_ascii=False, default=str)
    rows = [
        (key, json.dumps(value, ensure_ascii=False, default=str), source)
        for key, value, source in settings.explain(show_secrets)
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
