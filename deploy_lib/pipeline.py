"""The whole program on one screen, and the only place it is put together.

    settings -> discover -> build -> templates -> select -> validate     (prepare)
             -> [lock] -> [docker images] -> check pools -> plan -> apply   (deploy)

Every use case is one function here: ``load``, ``discover``, ``prepare``, ``render``,
``plan`` / ``plan_and_save``, ``deploy`` (a saved plan too), ``adopt``, ``destroy``,
``migrate_prefect_yaml``, ``build_images``, ``pools``, ``run_flow``, ``run_worker``,
``versions`` and the local server's ``server_start`` / ``server_stop`` /
``server_status``, plus what the Python API (``creators``) needs.  Each stage module is
a leaf: it imports only ``models`` and ``errors`` (and the one outside library it
owns), never another stage, so what one stage hands the next is visible here.  The event loop runs in one place
(``_run``), the environment lock is taken in one place (``_locked``), and the network
is reached through one ``api.PrefectApi`` made by ``connect``.

Nothing here prints: results go back to the caller (``tasks.py``, ``creators.py``),
which hands them to ``report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import json
import os
import signal
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, TypeVar

from deploy_lib import (
    api,
    apply,
    build,
    discovery,
    docker,
    gitinfo,
    lock,
    parameters,
    runs,
    server,
    templates,
    validate,
)
from deploy_lib import migrate as migrating
from deploy_lib import (
    plan as planning,
)
from deploy_lib import pools as pool_types
from deploy_lib import (
    settings as config,
)
from deploy_lib.errors import (
    ApiError,
    DeadlinePassed,
    Declined,
    DeployError,
    DiscoveryError,
    DockerError,
    InputError,
    Interrupted,
    ServerError,
    SettingsError,
    StalePlan,
    Terminated,
    ValidationFailed,
)
from deploy_lib.models import (
    CONFLICT,
    CONFLICT_STATUS,
    DELETE,
    RENAME,
    UNCHANGED,
    ApplyResult,
    DeploymentSpec,
    Discovery,
    FlowMetadata,
    GitInfo,
    ImageResult,
    Owner,
    Plan,
    Problem,
    Result,
    Settings,
    Skipped,
    ownership_tags,
    pool_type,
    protected_files,
    skipped_of,
)

T = TypeVar("T")
# Where discovery keeps what each file held (gitignored; safe to delete at any time).
CACHE_DIR = ".deploy-cache"
LineSink = Callable[[str], None]
# Called with the plan before the apply; the context manager it returns is held open for
# the apply and yields the per-deployment callback (report.Output.progress).
Progress = Callable[[Plan], AbstractContextManager[Callable[[Result], None]]]
PlanSink = Callable[[Plan], None]
# Asked before a risky apply with the risks in words; True goes on (report.Output.confirm).
Confirm = Callable[[Sequence[str]], bool]

__all__ = [
    "DeployOutcome",
    "Prepared",
    "build_images",
    "check",
    "check_server",
    "compute_plan",
    "connect",
    "deploy",
    "deploy_prepared",
    "deploy_spec",
    "discover",
    "environments",
    "load",
    "plan",
    "pools",
    "prepare",
    "render",
    "run_flow",
    "run_worker",
    "server_start",
    "server_status",
    "server_stop",
]


@dataclass(frozen=True)
class Prepared:
    """Everything known before talking to a server: the valid specs of one env."""

    settings: Settings
    discovery: Discovery
    specs: tuple[DeploymentSpec, ...]
    warnings: tuple[str, ...] = ()
    flow_names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    # The git state the specs were built from (their docker image tags come from it).
    git: GitInfo | None = None
    # What is expected of ordinary settings (see build.BuildResult.notes).
    notes: tuple[str, ...] = ()
    # The flows and files left out, with why (their warnings lead ``warnings``).
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True)
class DeployOutcome:
    """What ``deploy`` did: the plan it computed, the apply result (None on dry run),
    the images it built (with ``build``) and the warnings."""

    plan: Plan
    result: ApplyResult | None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    images: tuple[ImageResult, ...] = ()
    # The flows and files the deploy left out, with why (see ``prepare``).
    skipped: tuple[Skipped, ...] = ()
    # Where ``plan_and_save`` saved the plan.
    saved: Path | None = None
    # The signal that stopped the apply (``SIGINT`` / ``SIGTERM``), if one did.
    interrupted: str | None = None
    # What is expected of ordinary settings (``Prepared.notes``): shown with --verbose.
    notes: tuple[str, ...] = ()
    # The Secret blocks a prune removed because no deployment refers to them any more.
    secrets_removed: tuple[str, ...] = ()

    def raise_if_failed(self) -> None:
        """After the results are shown: the signal or deadline that stopped the apply
        (``interruption``), else the apply's own failures (``ApplyResult.raise_if_failed``)."""
        if (stopped := self.interruption()) is not None:
            raise stopped
        if self.result is not None:
            self.result.raise_if_failed()

    def interruption(self) -> DeployError | None:
        """The error to end the command with after its results are shown, if a signal
        or the deadline stopped the apply: "interrupted by SIGTERM after N of M writes"
        (``Interrupted``, exit 130/143) or ``DeadlinePassed`` (exit 4)."""
        if self.interrupted is None or self.result is None:
            return None
        writes = [r for r in self.result.results if r.action not in (UNCHANGED, CONFLICT)]
        done = [r for r in writes if r.note != apply.NOT_STARTED and not r.failed]
        rest = "the rest were not started (run again to finish: it writes only what differs)"
        if self.interrupted == "deadline":
            return DeadlinePassed(
                f"the deadline passed after {len(done)} of {len(writes)} write(s); {rest}"
            )
        return Interrupted(
            f"interrupted by {self.interrupted} after {len(done)} of {len(writes)} write(s); "
            f"{rest}",
            signal_name=self.interrupted,
        )


_STOPPING = {signal.SIGINT, signal.SIGTERM}


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """The one place the event loop runs (with SIGINT and SIGTERM handled: see
    ``_SignalState``).  The two signals are held back while the loop starts and stops,
    and taken by the loop in between, so one that arrives at any moment either ends the
    run cleanly from inside the loop or right after it, never half-way through setting
    it up."""
    guarded = _guarded(coro)
    held = _hold_signals()
    try:
        return asyncio.run(guarded).value
    except BaseException:
        guarded.close()  # never started (a signal before the loop ran): nothing left over
        coro.close()
        raise
    finally:
        _release_signals(held)


def _hold_signals() -> bool:
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    except (AttributeError, ValueError, OSError):
        return False
    return True


def _release_signals(held: bool) -> None:
    if held:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)


@dataclass
class _SignalState:
    """How the running loop answers SIGINT and SIGTERM.  During an apply (``stop`` set
    by ``_interruptible``) the first one only stops new writes from starting; otherwise,
    or at a second signal, the main task is cancelled, so every ``async with`` unwinds
    (connections closed, the lock released), and the run ends as Ctrl-C does
    (``KeyboardInterrupt``, exit 130) or as ``Terminated`` (exit 143)."""

    task: asyncio.Task[Any] | None
    stop: asyncio.Event | None = None
    seen: list[str] = field(default_factory=list)
    cancelled_by: str | None = None

    def deadline_passed(self) -> None:
        if self.stop is not None and not self.stop.is_set():
            self.seen.append("deadline")
            self.stop.set()

    def heard(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stop is not None and not self.stop.is_set():
            self.seen.append(name)
            self.stop.set()
        elif self.task is not None and self.cancelled_by is None:
            self.cancelled_by = name
            self.task.cancel()


_SIGNALS: contextvars.ContextVar[_SignalState | None] = contextvars.ContextVar(
    "deploy_lib_signals", default=None
)


class _Outcome(Generic[T]):
    """The main task's result, with a short repr: asyncio's runner formats the main task,
    result included, as it puts its SIGINT handler back, and the repr of a plan of
    thousands of deployments takes a good part of a second."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<outcome>"


async def _guarded(coro: Coroutine[Any, Any, T]) -> _Outcome[T]:
    state = _SignalState(asyncio.current_task())
    token = _SIGNALS.set(state)
    try:
        with _handling_signals(state, in_run=True):
            return _Outcome(await coro)
    except asyncio.CancelledError:
        if state.cancelled_by == "SIGTERM":
            raise Terminated() from None
        if state.cancelled_by == "SIGINT":
            raise KeyboardInterrupt() from None
        raise
    finally:
        _SIGNALS.reset(token)


@contextlib.contextmanager
def _handling_signals(state: _SignalState, *, in_run: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``state.heard`` in the running loop for the block, and
    the handlers in place before are put back after.  Outside the main thread nothing is
    installed: signals are not ours to handle there.  ``in_run``: inside ``_run``, which
    holds the signals back around the block (they are let through for it)."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[int, Any]] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(signum)
            loop.add_signal_handler(signum, state.heard, int(signum))
            installed.append((int(signum), previous))
        except (ValueError, RuntimeError, NotImplementedError):
            pass
    # The loop takes them now: one held back while it started is delivered here.
    _release_signals(in_run and bool(installed))
    try:
        yield
    finally:
        if in_run and installed:
            _hold_signals()  # until the loop is gone (``_run`` lets them through)
        for number, previous in installed:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(number)
                signal.signal(number, previous)


@contextlib.contextmanager
def _interruptible(deadline: float | None = None) -> Iterator[tuple[asyncio.Event, list[str]]]:
    """While an apply runs: the first SIGINT or SIGTERM sets the event it is handed, so
    no new write starts and those in flight finish; the list gets the signal's name.
    ``deadline`` (a ``time.monotonic()`` instant) does the same when it comes, as
    "deadline"."""
    stop, seen = asyncio.Event(), list[str]()
    state = _SIGNALS.get()
    own = state is None
    if state is None:
        # An apply in a loop this module did not start (the caller's own asyncio.run):
        # the handlers live just as long as the apply.
        state = _SignalState(None)
    state.stop, state.seen = stop, seen
    timer = None
    if deadline is not None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), state.deadline_passed)
    try:
        with _handling_signals(state) if own else contextlib.nullcontext():
            yield stop, seen
    finally:
        state.stop = None
        if timer is not None:
            timer.cancel()


@contextlib.contextmanager
def _locked(settings: Settings, *, timeout: float = 0.0, command: str) -> Iterator[None]:
    """The one place the environment's lock is taken (exit 75 when another run holds it)."""
    with lock.env_lock(Path(settings.root), settings.env, timeout=timeout, command=command):
        yield


# -- settings and discovery ---------------------------------------------------------------


def load(env: str | None, root: Path | str) -> Settings:
    """The settings of ``env`` (else ``$DEPLOY_ENV``, else development) under ``root``."""
    return config.load_settings(env, Path(root))


def environments(root: Path | str) -> list[str]:
    """The environments settings.toml defines, in file order."""
    return config.environments(Path(root))


def default_env(env: str | None = None) -> str:
    """``env``, else ``$DEPLOY_ENV``, else the default environment."""
    return env or os.environ.get(config.ENV_SWITCH) or config.DEFAULT_ENV


def discover(settings: Settings, paths: Sequence[str] = (), *, strict: bool = False) -> Discovery:
    """Discovery over ``paths`` (default: the settings' ``flow_roots``), for a reader:
    each flow's notes also say which parameters' types stay permissive, and why. Reads
    files only.  With ``strict``, raises ``DiscoveryError`` (exit 3) on any problem."""
    found = _discovered(settings, paths)
    if strict:
        found.raise_for_problems()
    flows = tuple(
        replace(
            flow,
            notes=(*flow.notes, *(f"parameter {n!r}: {why}" for n, why in notes)),
        )
        if (notes := parameters.schema_notes(flow))
        else flow
        for flow in found.flows
    )
    return replace(found, flows=flows)


def _discovered(settings: Settings, paths: Sequence[str] = ()) -> Discovery:
    """The flows under ``paths`` (default: ``flow_roots``), as the stages use them (no
    schema notes: build computes each schema once, for the deployment)."""
    return discovery.discover_flows(
        Path(settings.root),
        tuple(paths) or tuple(settings.flow_roots),
        tuple(settings.exclude),
        cache_dir=Path(settings.root) / CACHE_DIR,
        follow_outside_links=settings.follow_outside_links,
    )


def find_flow(found: Discovery, name_or_entrypoint: str) -> FlowMetadata | None:
    """The discovered flow with this name or entrypoint (either form), else None."""
    return discovery.find_flow(found, name_or_entrypoint)


def git(root: Path | str) -> GitInfo:
    """What git says about the project (one ``git status``)."""
    return gitinfo.git_info(Path(root))


# -- offline: build, render, validate -----------------------------------------------------


def build_specs(
    flows: Sequence[FlowMetadata],
    settings: Settings,
    *,
    git: GitInfo,
    now: datetime,
    templates_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[DeploymentSpec], list[str]]:
    """Build every deployment of ``flows`` for ``settings.env`` and overlay its templates.

    Returns the specs, sorted by flow then type, and the warnings (the notes of
    ``build.BuildResult`` last)."""
    specs, warnings, notes = _build(flows, settings, git=git, now=now, templates_dir=templates_dir)
    return specs, [*warnings, *notes]


def _build(
    flows: Sequence[FlowMetadata],
    settings: Settings,
    *,
    git: GitInfo,
    now: datetime,
    templates_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[DeploymentSpec], list[str], list[str]]:
    built = build.build_deployments(
        flows,
        settings,
        git=git,
        schema_of=parameters.parameter_schema,
        templates=api.bundled_job_templates(),
    )
    specs = templates.render_specs(
        built.contexts, settings, git=git, now=now, templates_dir=templates_dir
    )
    return specs, list(built.warnings), list(built.notes)


def check(
    specs: Sequence[DeploymentSpec], found: Discovery, *, cache_dir: Path | None = None
) -> list[Problem]:
    """Every problem with ``specs``: the strict schema, the cross checks against the
    discovered flows, and the job variables against Prefect's default job templates
    (offline).  The CLI and the Python API validate through this one function.  With
    ``cache_dir``, what passed last run is not judged again (``validate.Passed``)."""
    bundled = api.bundled_job_templates()
    passed = validate.Passed.load(cache_dir) if cache_dir is not None else None
    problems = validate.validate_specs(
        specs, found.flows, functions=found.functions, templates=bundled, passed=passed
    )
    if passed is not None:
        passed.save()
    return problems + validate.default_job_variable_problems(specs, bundled)


def template(settings: Settings, type_: str) -> dict[str, Any]:
    """The parsed overlay (placeholders not filled) of the most specific template that
    ``type_`` deployments in ``settings.env`` use."""
    renderer = templates.TemplateRenderer(Path(settings.root) / "templates", root=settings.root)
    return copy.deepcopy(renderer.load(renderer.select(type_, settings.env)))


def template_source(settings: Settings, type_: str) -> str:
    """Which template file that is, relative to the project root."""
    renderer = templates.TemplateRenderer(Path(settings.root) / "templates", root=settings.root)
    return renderer.display(renderer.select(type_, settings.env))


def ensure_valid(
    specs: Sequence[DeploymentSpec], found: Discovery, *, cache_dir: Path | None = None
) -> None:
    """``check``, raising ``ValidationFailed`` (exit 3) with every problem."""
    if problems := check(specs, found, cache_dir=cache_dir):
        raise ValidationFailed(problems)


def prepare(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    git: GitInfo | None = None,
    now: datetime | None = None,
    strict: bool = False,
) -> Prepared:
    """Discover, build, render, select and validate the deployments of ``settings.env``.

    A flow with a problem (or a file that cannot be read) is left out, and the others
    go on: each one left out is a ``Skipped`` (and a warning).  With ``strict`` any
    such problem raises ``DiscoveryError`` instead.  A ``--flow`` that names a flow
    left out raises ``DiscoveryError`` with the reason.  ``ValidationFailed`` /
    ``TemplateError`` / ``SettingsError`` for bad input of the deployments that are
    built: all exit 3 before anything is written.
    """
    found = _discovered(settings)
    if found.problems and not found.flows:
        # Nothing readable at all: a wrong flow_roots or checkout, not a repository to
        # deploy part of (a prune would delete every deployment).
        lines = [f"{len(found.problems)} problem(s) and no flow in the flow files; nothing was written:"]
        lines += [f"  - {p}" for p in found.problems]
        raise DiscoveryError("\n".join(lines))
    if strict and found.problems:
        lines = [f"{len(found.problems)} problem(s) in the flow files (--strict); nothing was written:"]
        lines += [f"  - {p}" for p in found.problems]
        raise DiscoveryError("\n".join(lines))
    skipped = skipped_of(found)
    _check_selected(flow_names, found, skipped)
    git = git if git is not None else gitinfo.git_info(Path(settings.root))
    specs, warnings, notes = _build(
        [f for f in found.flows if f.is_valid],
        settings,
        git=git,
        now=now if now is not None else datetime.now(timezone.utc),
    )
    selected = templates.select_specs(
        specs, flow_names=flow_names, types=types, known=settings.used_types
    )
    ensure_valid(selected, found, cache_dir=Path(settings.root) / CACHE_DIR)
    return Prepared(
        settings,
        found,
        tuple(selected),
        (*map(str, skipped), *warnings),
        tuple(flow_names),
        tuple(types),
        git,
        tuple(notes),
        skipped,
    )


def _check_selected(flow_names: Sequence[str], found: Discovery, skipped: Sequence[Skipped]) -> None:
    """A ``--flow`` that names only flows left out is an error that says why."""
    for name in flow_names:
        hits = [f for f in found.flows if f.is_named(name)]
        if hits and all(not f.is_valid for f in hits):
            reasons = "; ".join(str(s) for s in skipped if s.flow == hits[0].name)
            raise DiscoveryError(f"flow {name!r} has problems and gets no deployment: {reasons}")


def render(
    settings: Settings,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fmt: str = "yaml",
    write_prefect_yaml: bool = False,
    show_secrets: bool = False,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    git: GitInfo | None = None,
    now: datetime | None = None,
    strict: bool = False,
) -> templates.RenderResult:
    """``prepare``, then write one file per deployment (and prefect.yaml when asked):
    on any error nothing is written."""
    templates.check_format(fmt)
    prepared = prepare(
        settings, flow_names=flow_names, types=types, git=git, now=now, strict=strict
    )
    result = templates.write_rendered(
        prepared.specs,
        settings,
        out_dir=out_dir,
        fmt=fmt,
        write_prefect_yaml=write_prefect_yaml,
        show_secrets=show_secrets,
    )
    return replace(result, warnings=tuple(prepared.warnings))


# -- the server side ----------------------------------------------------------------------


def local_server(root: Path | str, **options: Any) -> server.LocalServer:
    """The project's embedded Prefect server (``options`` go to ``LocalServer``)."""
    return server.LocalServer(root, probe=api.Probe(), **options)


def api_url(settings: Settings, *, start: bool = True, notify: LineSink | None = None) -> str:
    """The API URL of the environment: ``api_url``, else the local server (started when
    ``start``)."""
    return server.resolve_api_url(settings, probe=api.Probe(), start=start, on_start=notify)


def connect(
    settings: Settings,
    *,
    start: bool = True,
    notify: LineSink | None = None,
    url: str | None = None,
    **options: Any,
) -> api.PrefectApi:
    """A PrefectApi for an environment's settings (``api_url``, ``api_key``).

    An empty ``api_url`` means the embedded local server of the project, started when
    ``start`` is true.  ``url``: the API URL when the caller resolved it already.
    ``options`` go to PrefectApi (timeout, retries, ...).  Use the result as an async
    context manager."""
    url = url or api_url(settings, start=start, notify=notify)
    if not settings.api_url and local_server(settings.root).recorded_database() != "postgres":
        # SQLite serialises writes: a second in flight fails with "database is locked".
        options.setdefault("max_writes", 1)
    if settings.ca_bundle:
        if not Path(settings.ca_bundle).is_file():
            raise SettingsError(f"{settings.ca_bundle} is not a file", key="ca_bundle")
        options.setdefault("ca_bundle", settings.ca_bundle)
    if settings.api_urls:
        options.setdefault("replicas", settings.api_urls)
    return api.PrefectApi(url, settings.api_key, **options)


async def check_server(client: Any, specs: Sequence[DeploymentSpec]) -> list[str]:
    """Check the specs against the server's work pools before any write.

    Each work pool must exist and be of the type its deployments need, and every job
    variable must be one the pool's base job template defines.  Raises
    ``ValidationFailed`` with every problem; returns warnings (a work queue that does not
    exist yet: the server would create it).
    """
    pool_names = sorted({str(s.body["work_pool_name"]) for s in specs})
    found = await asyncio.gather(*map(client.read_work_pool, pool_names))
    pools = dict(zip(pool_names, found, strict=True))
    if found and all(pool is None for pool in found) and not await client.health():
        # No pool at all, and no health either: api_url is not a Prefect API.
        url = str(getattr(client, "url", ""))
        hint = "" if url.rstrip("/").endswith("/api") else f" (did you mean {url.rstrip('/')}/api?)"
        raise ApiError(f"no Prefect API at {url}{hint}", url=url)
    problems: list[Problem] = []
    queues: set[tuple[str, str]] = set()
    for spec in specs:
        pool_name = str(spec.body["work_pool_name"])
        pool = pools[pool_name]
        problems += validate.pool_problems(
            spec, pool_name, pool, api_url=getattr(client, "url", "")
        )
        if pool is not None and spec.body.get("work_queue_name"):
            queues.add((pool_name, str(spec.body["work_queue_name"])))
    if problems:
        raise ValidationFailed(problems, what="the server's work pools do not fit")
    warnings = []
    for pool_name, queue in sorted(queues):
        if await client.read_work_queue(pool_name, queue) is None:
            warnings.append(
                f"work queue {queue!r} does not exist in work pool {pool_name!r}; "
                "the server will create it (check for a typo in work_pool.queue)"
            )
    return warnings


async def owned_deployments(client: Any, settings: Settings) -> list[dict[str, Any]]:
    """This project's deployments in this env (one listing filtered on the ownership
    tags)."""
    owned: list[dict[str, Any]] = await client.list_deployments(
        ownership_tags(settings.project, settings.env)
    )
    return owned


async def live_deployments(
    client: Any,
    settings: Settings,
    specs: Sequence[DeploymentSpec] = (),
    *,
    owned: Awaitable[list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """What the server holds that matters to ``specs`` of this project in this env: its
    own deployments (``owned``, the listing of ``owned_deployments`` when it is already
    under way) and any other with the flow and name of a spec, whoever owns it (so the
    plan can name a conflict)."""
    owned_now: list[dict[str, Any]] = await (
        owned if owned is not None else owned_deployments(client, settings)
    )
    have = {f"{d.get('flow_name')}/{d.get('name')}" for d in owned_now}
    missing = [spec for spec in specs if spec.full_name not in have]
    if not missing:  # every desired one is ours already: nobody else's can share a name
        return owned_now
    others = await client.find_deployments({(str(s.body["flow_name"]), s.name) for s in missing})
    return [*owned_now, *others.values()]


async def compute_plan(
    client: Any, prepared: Prepared, *, owned: Awaitable[list[dict[str, Any]]] | None = None
) -> Plan:
    """The plan of ``prepared`` against what the server holds for this project and env
    (``owned``: the listing of its deployments, when it is already under way).

    With a ``--flow`` or ``--type`` selection, live deployments outside the selection
    are left out, so they are neither updated nor deleted.
    """
    settings = prepared.settings
    live = await live_deployments(client, settings, prepared.specs, owned=owned)
    if prepared.flow_names:
        names = {n for n in prepared.flow_names if ":" not in n}
        # A flow chosen by entrypoint: its live deployments in either entrypoint form.
        entrypoints = {
            form
            for s in prepared.specs
            if any(":" in n and s.flow.is_named(n) for n in prepared.flow_names)
            for form in (s.flow.entrypoint, s.flow.module_entrypoint)
        }
        live = [
            d
            for d in live
            if d.get("flow_name") in names or str(d.get("entrypoint") or "") in entrypoints
        ]
    if prepared.types:
        wanted = {f"runtime:{t}" for t in prepared.types}
        live = [d for d in live if wanted & set(d.get("tags") or ())]
    blocks: list[str] = []
    if any(spec.secrets for spec in prepared.specs):
        found_blocks = await client.list_secret_blocks(settings.secret_block_prefix())
        blocks = [str(b["name"]) for b in found_blocks]
    automations = trigger_automations(prepared.specs)
    # The automations of the live deployments that have (or had) triggers: one read each.
    by_name = {f"{d.get('flow_name')}/{d.get('name')}": d for d in live}
    read = [
        str(d["id"])
        for name, d in by_name.items()
        if d.get("id") is not None and (name in automations or planning.has_triggers(d))
    ]
    found = await asyncio.gather(*map(client.automations_owned_by, read))
    return planning.make_plan(
        prepared.specs,
        live,
        settings.env,
        project=settings.project,
        protected=protected_files(prepared.discovery),
        automations=automations,
        live_automations=dict(zip(read, found, strict=True)),
        secret_blocks=blocks,
    )


def trigger_automations(specs: Sequence[DeploymentSpec]) -> dict[str, list[dict[str, Any]]]:
    """The automations each spec's triggers make (validated specs only), by
    ``flow/name``; specs without triggers are left out."""
    return {
        spec.full_name: [validate.trigger_automation(t) for t in spec.triggers]
        for spec in specs
        if spec.triggers
    }


async def deploy_prepared(
    client: Any,
    prepared: Prepared,
    *,
    dry_run: bool = False,
    prune: bool = False,
    concurrency: int | None = None,
    keep_drift: bool = False,
    on_plan: PlanSink | None = None,
    progress: Progress | None = None,
    confirm: Confirm | None = None,
    saved: Mapping[str, Any] | None = None,
    deadline: float | None = None,
    owned: Awaitable[list[dict[str, Any]]] | None = None,
) -> DeployOutcome:
    """Check the server, plan (``on_plan`` hears of it, dry run or not), then (unless
    ``dry_run``) apply with bounded concurrency, ``progress`` showing each result.
    ``owned``: the listing of the project's deployments, when it is already under way
    (see ``_prepared_while_listing``).

    ``deadline`` (a ``time.monotonic()`` instant): once it passes no write is started
    (``outcome.interruption()`` is then ``DeadlinePassed``); passed before the apply,
    ``DeadlinePassed`` is raised and nothing is written.

    With ``saved`` (a plan ``plan --out`` wrote), the plan computed now must be that
    plan: anything that moved since raises ``StalePlan`` (exit 3) before any write.
    ``confirm`` is asked, with the risks in words, before an apply that deletes or
    overwrites drift; a no raises ``Declined`` and nothing is written.

    Nothing is written when a work pool check fails (``ValidationFailed``).  Unchanged
    deployments are not written at all; deletes happen only with ``prune``.  The caller
    raises ``PartialFailure`` from ``outcome.result`` after printing it.
    """
    warnings = list(prepared.warnings)
    warnings += await check_server(client, prepared.specs)
    plan = await compute_plan(client, prepared, owned=owned)
    if saved is not None:
        check_saved(saved, plan, prepared)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return DeployOutcome(
            plan, None, tuple(warnings), skipped=prepared.skipped, notes=prepared.notes
        )
    risks = risky(plan, prune=prune, keep_drift=keep_drift)
    if confirm is not None and risks and not confirm(risks):
        raise Declined("not confirmed at the prompt; nothing was written")
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlinePassed("the deadline passed before the first write; nothing was written")
    limit = concurrency if concurrency is not None else prepared.settings.apply_concurrency
    shown = progress(plan) if progress is not None else contextlib.nullcontext(None)
    with shown as on_result, _interruptible(deadline) as (stop, signals):
        result = await apply.apply_plan(
            client, plan, concurrency=limit, prune=prune, on_result=on_result,
            keep_drift=keep_drift, owner=(prepared.settings.project, prepared.settings.env),
            stop=stop,
        )
    removed: tuple[str, ...] = ()
    if prune and not result.failed and not prepared.flow_names and not prepared.types:
        removed = await prune_secret_blocks(client, prepared)
    if not keep_drift:
        warnings += [
            f"{c.deployment}: overwrote changes made on the server since the last deploy "
            f"({', '.join(c.drift)}); --keep-drift leaves such deployments alone"
            for c in plan.drifted
        ]
    return DeployOutcome(
        plan,
        result,
        tuple(warnings),
        skipped=prepared.skipped,
        interrupted=signals[0] if signals else None,
        notes=prepared.notes,
        secrets_removed=removed,
    )


async def prune_secret_blocks(client: Any, prepared: Prepared) -> tuple[str, ...]:
    """Delete the Secret blocks of this project and env that no deployment of
    ``prepared`` (the whole environment, unselected) refers to any more; their names."""
    used = {block for spec in prepared.specs for block, _ in spec.secrets.values()}
    return await _remove_secret_blocks(client, prepared.settings, used=used)


async def _remove_secret_blocks(client: Any, settings: Settings, *, used: set[str]) -> tuple[str, ...]:
    found = await client.list_secret_blocks(settings.secret_block_prefix())
    removed = []
    for block in sorted(found, key=lambda b: str(b["name"])):
        if block["name"] not in used and await client.delete_block(str(block["id"])):
            removed.append(str(block["name"]))
    return tuple(removed)


def _settings_of(target: Prepared | Settings) -> Settings:
    return target.settings if isinstance(target, Prepared) else target


def _api_up(settings: Settings) -> str | None:
    """The environment's API URL when it can be asked without starting anything (it
    sets ``api_url``, or the project's local server is running); else None."""
    try:
        return api_url(settings, start=False)
    except ServerError:
        return None


@contextlib.asynccontextmanager
async def _prepared_while_listing(
    client: Any,
    target: Prepared | Settings,
    flow_names: Sequence[str],
    types: Sequence[str],
    strict: bool = False,
) -> AsyncIterator[tuple[Prepared, Awaitable[list[dict[str, Any]]] | None]]:
    """``target`` prepared, and the listing of the project's deployments (to await).

    When ``target`` is the settings, both run at once: the listing is the server's work
    and preparing is this process's, so an unchanged redeploy of thousands of
    deployments waits for the longer of the two rather than for both.  Preparing runs
    in a thread and its errors come first, as when nothing was asked of the server; a
    listing left unawaited is cancelled on the way out."""
    if isinstance(target, Prepared):
        yield target, None
        return
    listing = asyncio.ensure_future(owned_deployments(client, target))
    try:
        prepared = await asyncio.to_thread(prepare, target, flow_names=flow_names, types=types, strict=strict)
        yield prepared, listing
    finally:
        listing.cancel()
        await asyncio.gather(listing, return_exceptions=True)


def plan(
    target: Prepared | Settings,
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    notify: LineSink | None = None,
) -> tuple[Plan, list[str]]:
    """Connect to the environment's API, check its work pools and compute the plan of
    ``target`` (``prepare``d first when it is the settings, for ``flow_names``/``types``).

    Writes nothing (the embedded local server is started when the environment uses it).
    Returns the plan and the warnings."""
    result, warnings, _ = _plan(target, flow_names, types, notify=notify)
    return result, warnings


def _plan(
    target: Prepared | Settings,
    flow_names: Sequence[str],
    types: Sequence[str],
    *,
    notify: LineSink | None = None,
    strict: bool = False,
) -> tuple[Plan, list[str], Prepared]:
    url = _api_up(target) if isinstance(target, Settings) else None
    if isinstance(target, Settings) and url is None:
        # Prepared before the local server is started: bad input starts nothing.
        target = prepare(target, flow_names=flow_names, types=types, strict=strict)

    async def go() -> tuple[Plan, list[str], Prepared]:
        async with (
            connect(_settings_of(target), notify=notify, url=url) as client,
            _prepared_while_listing(client, target, flow_names, types, strict) as (prepared, owned),
        ):
            warnings = [*prepared.warnings, *await check_server(client, prepared.specs)]
            return await compute_plan(client, prepared, owned=owned), warnings, prepared

    return _run(go())


def plan_and_save(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
    notify: LineSink | None = None,
    strict: bool = False,
) -> DeployOutcome:
    """``plan``; with ``out``, also save it there for ``deploy --plan`` (the path is
    in ``saved``).  The outcome has no apply result."""
    result, warnings, prepared = _plan(settings, flow_names, types, notify=notify, strict=strict)
    saved = write_saved_plan(saved_plan(result, prepared), out) if out else None
    return DeployOutcome(
        result, None, tuple(warnings), skipped=prepared.skipped, saved=saved, notes=prepared.notes
    )


def deploy(
    target: Prepared | Settings,
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    dry_run: bool = False,
    prune: bool = False,
    concurrency: int | None = None,
    keep_drift: bool = False,
    build: bool = False,
    confirm: Confirm | None = None,
    saved: Mapping[str, Any] | None = None,
    lock_timeout: float = 0.0,
    command: str = "invoke deploy",
    on_plan: PlanSink | None = None,
    progress: Progress | None = None,
    on_line: LineSink | None = None,
    on_images: Callable[[Sequence[ImageResult]], None] | None = None,
    notify: LineSink | None = None,
    strict: bool = False,
    deadline: float | None = None,
) -> DeployOutcome:
    """Hold the environment's lock; with ``build``, build and push the docker images
    first (then deploy exactly those; ``on_images`` hears of them at once); check the
    pools, plan (``on_plan``) and (unless ``dry_run``) apply (``progress``).  ``target``
    is ``prepare``d first when it is the settings (for ``flow_names`` / ``types``, and
    ``strict``: any problem in a flow file stops it).  ``deadline`` is the seconds the
    whole run may take (default: the ``deadline`` setting; 0 or less, none): once they
    are up no new write starts (``DeadlinePassed``, exit 4)."""
    started = time.monotonic()
    if build and dry_run:
        raise InputError("--build pushes images, so it cannot be combined with --dry-run")
    url = _api_up(target) if isinstance(target, Settings) and not build else None
    if isinstance(target, Settings) and url is None:
        # Prepared first: the images need the specs, and bad input starts no server.
        target = prepare(target, flow_names=flow_names, types=types, strict=strict)
    settings = _settings_of(target)
    seconds = settings.deadline if deadline is None else deadline
    until = started + seconds if seconds > 0 else None
    if until is not None:
        lock_timeout = min(lock_timeout, max(0.0, until - time.monotonic()))
    with _locked(settings, timeout=lock_timeout, command=command):
        images = []
        if build and isinstance(target, Prepared):
            images = build_prepared(target, push=True, on_line=on_line)
        if images and on_images is not None:
            on_images(images)

        async def go() -> tuple[DeployOutcome, Prepared]:
            async with (
                connect(settings, notify=notify, url=url) as client,
                _prepared_while_listing(client, target, flow_names, types, strict) as (prepared, owned),
            ):
                outcome = await deploy_prepared(
                    client,
                    prepared,
                    dry_run=dry_run,
                    prune=prune,
                    concurrency=concurrency,
                    keep_drift=keep_drift,
                    on_plan=on_plan,
                    progress=progress,
                    confirm=confirm,
                    saved=saved,
                    deadline=until,
                    owned=owned,
                )
                return outcome, prepared

        outcome, prepared = _run(go())
        unbuilt = [] if build else _unbuilt_images(prepared)
    return replace(outcome, images=tuple(images), warnings=(*outcome.warnings, *unbuilt))


def _unbuilt_images(prepared: Prepared) -> list[str]:
    """One warning naming the docker deployments whose image this machine cannot show
    (not built here, not pulled), or could not look for: their runs would fail."""
    runs = {
        str((s.body.get("job_variables") or {}).get("image")): s.full_name
        for s in prepared.specs
        if s.type == "docker" and (s.body.get("job_variables") or {}).get("image")
    }
    missing, why = docker.missing_images(prepared.settings, runs)
    if not missing:
        return []
    shown = ", ".join(f"{runs[ref]} -> {ref}" for ref in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    reason = f" ({why}, so none could be checked)" if why else ""
    return [
        f"{len(missing)} docker deployment(s) run an image this tool has not built or "
        f"found{reason}: {shown}{more}; build and push them with `invoke deploy --build` "
        "(or `invoke build --push`)"
    ]


def risky(plan: Plan, *, prune: bool, keep_drift: bool = False) -> list[str]:
    """What applying ``plan`` would do that cannot be undone, in words (for a prompt)."""
    risks = []
    if prune and (deletes := plan.by_action(DELETE)):
        risks.append(f"delete {len(deletes)} deployment(s): " + ", ".join(c.deployment for c in deletes))
    if prune and (renames := plan.by_action(RENAME)):
        risks.append(
            f"delete {len(renames)} deployment(s) renamed: "
            + ", ".join(f"{c.renamed_from} (now {c.deployment})" for c in renames)
        )
    if not keep_drift and (drifted := plan.drifted):
        risks.append(
            f"overwrite changes made on the server in {len(drifted)} deployment(s): "
            + ", ".join(f"{c.deployment} ({', '.join(c.drift)})" for c in drifted)
        )
    return risks


def fingerprint(prepared: Prepared) -> str:
    """The source fingerprint of ``prepared`` (see ``plan.source_fingerprint``)."""
    settings = prepared.settings
    return planning.source_fingerprint(
        prepared.specs, project=settings.project, api_url=settings.api_url
    )


def saved_plan(plan: Plan, prepared: Prepared) -> dict[str, Any]:
    """``plan`` as ``plan --out`` writes it (see ``plan.saved_plan``)."""
    return planning.saved_plan(
        plan,
        project=prepared.settings.project,
        fingerprint=fingerprint(prepared),
        flow_names=prepared.flow_names,
        types=prepared.types,
    )


def check_saved(saved: Mapping[str, Any], plan: Plan, prepared: Prepared) -> None:
    """Raise ``StalePlan`` naming what moved when ``plan`` is not the ``saved`` one."""
    reasons = planning.stale_reasons(
        saved, plan, project=prepared.settings.project, fingerprint=fingerprint(prepared)
    )
    if reasons:
        raise StalePlan(
            "the saved plan is out of date; nothing was written. Make a new plan. What moved:\n"
            + "\n".join(f"  - {reason}" for reason in reasons)
        )


def read_saved_plan(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved plan at ``path``; ``InputError`` naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable saved plan ({exc})") from exc
    if not isinstance(data, dict) or data.get("version") != planning.SAVED_PLAN_VERSION:
        raise InputError(f"{path}: not a saved plan of this tool (version {planning.SAVED_PLAN_VERSION})")
    return data


def write_saved_plan(document: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` to ``path`` (mode 0600, all or nothing); the path."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise InputError(f"{target}: cannot write the saved plan: {exc.strerror or exc}") from exc
    return target


def destroy(
    settings: Settings,
    *,
    lock_timeout: float = 0.0,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
    on_plan: PlanSink | None = None,
) -> DeployOutcome:
    """Delete every deployment of this project in ``settings.env`` (its own, by the
    ownership tags: nothing of another project, environment or person), after
    ``confirm``."""
    with _locked(settings, timeout=lock_timeout, command="invoke destroy"):

        async def go() -> DeployOutcome:
            async with connect(settings) as client:
                live = await live_deployments(client, settings)
                plan = planning.make_plan([], live, settings.env, project=settings.project)
                if on_plan is not None:
                    on_plan(plan)
                risks = risky(plan, prune=True)
                if confirm is not None and risks and not confirm(risks):
                    raise Declined("not confirmed at the prompt; nothing was deleted")
                shown = progress(plan) if progress is not None else contextlib.nullcontext(None)
                with shown as on_result, _interruptible() as (stop, signals):
                    result = await apply.apply_plan(
                        client, plan, concurrency=settings.apply_concurrency, prune=True,
                        on_result=on_result, stop=stop,
                    )
                removed: tuple[str, ...] = ()
                if not result.failed and not signals:
                    removed = await _remove_secret_blocks(client, settings, used=set())
                return DeployOutcome(
                    plan, result, interrupted=signals[0] if signals else None,
                    secrets_removed=removed,
                )

        return _run(go())


def adopt(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    lock_timeout: float = 0.0,
    confirm: Confirm | None = None,
    on_plan: PlanSink | None = None,
) -> DeployOutcome:
    """Take over the deployments that conflict with this project's (same flow and name,
    made by hand or by ``prefect deploy``): each is written with this project's body and
    ownership, after ``confirm`` sees their diff (``on_plan``).  One that belongs to
    another project or environment of this tool is refused, naming its owner."""
    prepared = prepare(settings, flow_names=flow_names)
    with _locked(settings, timeout=lock_timeout, command="invoke adopt"):

        async def go() -> DeployOutcome:
            async with connect(settings) as client:
                warnings = await check_server(client, prepared.specs)
                live = await live_deployments(client, settings, prepared.specs)
                conflicts = planning.make_plan(
                    prepared.specs, live, settings.env, project=settings.project
                ).by_action(CONFLICT)
                owners = {f"{d.get('flow_name')}/{d.get('name')}": Owner.of(d) for d in live}
                foreign = [c for c in conflicts if owners[c.deployment].managed]
                if foreign:
                    raise InputError(
                        "these deployments belong to this tool under another project or "
                        "environment and are not adopted:\n"
                        + "\n".join(f"  - {c.deployment}: {c.owner}" for c in foreign)
                    )
                names = {c.deployment for c in conflicts}
                plan = planning.make_plan(
                    [s for s in prepared.specs if s.full_name in names],
                    [d for d in live if f"{d.get('flow_name')}/{d.get('name')}" in names],
                    settings.env,
                )
                if on_plan is not None:
                    on_plan(plan)
                if not plan.changes:
                    return DeployOutcome(plan, None, tuple(warnings))
                risk = f"take over {len(plan.changes)} deployment(s) that are not this project's: " + ", ".join(sorted(names))
                if confirm is not None and not confirm([risk]):
                    raise Declined("not confirmed at the prompt; nothing was adopted")
                with _interruptible() as (stop, signals):
                    result = await apply.apply_plan(
                        client, plan, concurrency=settings.apply_concurrency, prune=False,
                        stop=stop,
                    )
                return DeployOutcome(
                    plan, result, tuple(warnings), interrupted=signals[0] if signals else None
                )

        return _run(go())


async def write_one(client: Any, spec: DeploymentSpec, *, project: str | None = None) -> Result:
    """Create or update one deployment (never deletes) and return its ``Result``, with
    the deployment id; raises the deployment's own ``DeployError`` when it failed.
    Reads just that deployment, so it suits the Python API (``deploy_to_prefect``).
    With ``project``, a deployment of that name that is not this project's is left
    alone (``PartialFailure`` naming its owner)."""
    flow_name = str(spec.body["flow_name"])
    current = await client.read_deployment_by_name(flow_name, spec.name)
    live = [] if current is None else [{**current, "flow_name": flow_name}]
    plan = planning.make_plan([spec], live, spec.env, project=project)
    outcome = await apply.apply_plan(client, plan, concurrency=1, prune=False)
    (result,) = outcome.results
    if result.failed:
        if isinstance(result.exception, DeployError):
            raise result.exception
        outcome.raise_if_failed()
    if result.status == CONFLICT_STATUS:
        outcome.raise_if_failed()  # not ours: left alone, and never passed off as ours
    return result


def deploy_spec(
    settings: Settings, spec: DeploymentSpec, found: Discovery, *, command: str
) -> tuple[str, list[str]]:
    """Validate one spec as ``prepare`` does, then, holding the lock, check its pool and
    write it when it changed.  Returns the deployment id and the warnings."""
    ensure_valid([spec], found)

    async def go() -> tuple[str, list[str]]:
        async with connect(settings) as client:
            warnings = await check_server(client, [spec])
            result = await write_one(client, spec, project=settings.project)
        if result.id is None:  # pragma: no cover - write_one raises on failure
            raise InputError(f"deployment {spec.full_name!r} was not written")
        return result.id, warnings

    with _locked(settings, command=command):
        return _run(go())


# -- migration from prefect.yaml ---------------------------------------------------------


def migrate_prefect_yaml(
    settings: Settings, path: str | os.PathLike[str], *, write: bool = False
) -> migrating.Migration:
    """The per-flow settings that reproduce the deployments of the prefect.yaml at
    ``path``; with ``write``, appended to settings.toml (and taken back when the settings
    then fail to load, so the file is never left broken)."""
    deployments = migrating.read_prefect_yaml(Path(path))
    found = _discovered(settings)
    result = migrating.migrate(
        deployments, lambda entrypoint: discovery.find_flow(found, entrypoint), source=str(path)
    )
    if write and result.tables:
        target = Path(settings.root) / config.SETTINGS_FILE
        before = target.read_text(encoding="utf-8")
        migrating.append_to_settings(target, result, settings.get("flows") or {})
        try:
            load(settings.env, settings.root)
        except DeployError:
            migrating.restore(target, before)
            raise
    return result


# -- docker images ------------------------------------------------------------------------


def build_prepared(
    prepared: Prepared, *, push: bool, on_line: LineSink | None = None
) -> list[ImageResult]:
    """Build (and push) the images of the docker deployments in ``prepared``, with the
    git state ``prepared`` was built from, so the images are exactly the ones its
    deployments name.  Raises ``InputError`` when it holds no docker deployment and
    ``DockerError`` when a deployment names an image other than the one built (a
    template that sets ``job_variables.image`` itself)."""
    # Every container deployment whose image is built from its flow's Dockerfile
    # (docker, kubernetes, ecs, ...; not one whose settings name an image).
    specs = [
        s
        for s in prepared.specs
        if s.type == "docker"
        or (s.flow.dockerfile and s.sources.get("job_variables.image") == "docker.registry")
    ]
    settings = prepared.settings
    if not specs:
        raise InputError(
            f"nothing to build in environment {settings.env!r}: no selected flow has a container "
            "deployment (a flow needs a Dockerfile beside it or in a parent folder, and "
            "deployment_types must include docker or another container type such as kubernetes)"
        )
    bases = build.deployment_bases(
        [f for f in prepared.discovery.flows if f.is_valid], settings.flow_roots
    )
    by_entrypoint = {s.flow.entrypoint: s.flow for s in specs}
    digests: dict[str, str] = {}
    wanted = {
        entrypoint: build.image_for(flow, settings, bases, digests)
        for entrypoint, flow in by_entrypoint.items()
    }
    results = docker.build_images(
        settings,
        [(flow, wanted[entrypoint]) for entrypoint, flow in by_entrypoint.items()],
        push=push,
        on_line=on_line,
    )
    built = {ref for result in results for ref in result.references}
    for spec in specs:
        image = (spec.body.get("job_variables") or {}).get("image")
        if image not in built:
            raise DockerError(
                f"deployment {spec.full_name!r} names image {image!r} (from {spec.source}), "
                f"but the image built for flow {spec.flow.name!r} is "
                f"{wanted[spec.flow.entrypoint]!r}; remove "
                "job_variables.image from the template so the deployment runs what was built"
            )
    return results


def build_images(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    push: bool = False,
    lock_timeout: float = 0.0,
    on_line: LineSink | None = None,
) -> list[ImageResult]:
    """Prepare the container deployments of ``settings.env`` (docker, kubernetes,
    ecs, ...: all, or those of ``flow_names``) and, holding the lock, build (and push)
    their images: only valid deployments get an image."""
    templates_ = api.bundled_job_templates()
    containers = [
        t for t in settings.used_types
        if t == "docker" or pool_types.is_container(templates_.get(pool_type(t)))
    ]
    prepared = prepare(settings, flow_names=flow_names, types=containers or ["docker"])
    with _locked(settings, timeout=lock_timeout, command="invoke build"):
        return build_prepared(prepared, push=push, on_line=on_line)


# -- pools, runs, workers, the local server -----------------------------------------------


def pools(
    settings: Settings, *, create: bool = False, notify: LineSink | None = None
) -> list[dict[str, Any]]:
    """``api.work_pools_report`` for the work pool of every deployment type in use
    (``deployment_types`` and the flows' own ``types``: ``work_pool.<type>``); with
    ``create``, the missing ones are made from their type's default job template."""
    wanted: dict[str, str] = {}
    for deployment_type in settings.used_types:
        name = settings.work_pool(deployment_type)
        if not name:
            raise SettingsError(
                f"no work pool name for {deployment_type} deployments",
                key=f"work_pool.{deployment_type}",
            )
        wanted[deployment_type] = name

    async def go() -> list[dict[str, Any]]:
        async with connect(settings, notify=notify) as client:
            return await api.work_pools_report(client, wanted, create=create)

    return _run(go())


def run_flow(
    settings: Settings,
    target: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    timeout: float = 600.0,
    with_worker: bool = False,
    notify: LineSink | None = None,
    on_state: LineSink | None = None,
) -> dict[str, Any]:
    """Run the deployment ``target`` names and (with ``wait``) wait for its final state.

    With ``with_worker``, a process worker for the environment's python pool runs for
    the duration.  Raises ``RunFailed`` unless the run ends Completed."""

    async def go() -> dict[str, Any]:
        async with connect(settings, notify=notify) as client:
            return await runs.run_deployment(
                client, settings, target, parameters, wait=wait, timeout=timeout,
                on_state=on_state,
            )

    worker: AbstractContextManager[Any] = (
        server.background_worker(settings, api_url(settings, notify=notify))
        if with_worker
        else contextlib.nullcontext()
    )
    with worker:
        return _run(go())


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` items as a dict (values read as JSON when they parse)."""
    return runs.parse_params(items)


def versions(settings: Settings) -> dict[str, str]:
    """This tool's version, Prefect's installed here, and the environment's server's
    (the local server is not started for it: "not running" then)."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    found = {"deploy-lib": installed("deploy-lib"), "prefect": installed("prefect")}

    async def go() -> str:
        async with connect(settings, start=False, retries=0) as client:
            return await client.server_version()

    try:
        found["server"] = f"{_run(go())} at {api_url(settings, start=False)}"
    except DeployError as exc:
        found["server"] = f"unknown ({exc})"
    return found


def run_worker(
    settings: Settings, *, run_once: bool = False, notify: LineSink | None = None
) -> int:
    """A process worker for the env's python pool in the foreground; its exit code."""
    return server.run_worker(settings, api_url(settings, notify=notify), run_once=run_once)


def server_start(
    root: Path | str, *, timeout: float = 60.0, ui: bool = True, database: str = "sqlite"
) -> str:
    """Start the project's local Prefect server unless it runs (with Prefect's UI unless
    ``ui`` is false; on SQLite, or on a PostgreSQL cluster of the project's own with
    ``database="postgres"``); its API URL."""
    return local_server(root, ui=ui, database=database).start(timeout=timeout)


def server_stop(root: Path | str) -> bool:
    """Stop the project's local Prefect server; False when it was not running."""
    return local_server(root).stop()


def server_status(root: Path | str) -> server.ServerStatus | None:
    """The local server's pid, URL and health, or None when none is recorded."""
    return local_server(root).status()
