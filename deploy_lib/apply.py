"""Carry out a plan against the Prefect API: write only what changed, keep going past a
failure, and say what happened to every deployment.

Creates and updates go through the server's upsert (POST /deployments/), whose body
already carries each schedule's live ``active`` flag (see ``plan.carry_schedule_state``),
so a redeploy never re-activates a schedule someone paused.  Unchanged deployments
cost no request.  Deletes happen only with ``prune``, and the plan only proposes
deletes for deployments of this project in this environment.  A conflict (a deployment
that is not this project's) is never written; an update that would overwrite changes
made on the server is skipped with ``keep_drift``.  Just before a create, its name is
checked to be still free (another owner may have taken it since the plan), 50 names a
request.  Each flow is ensured once, however many deployments it has.  How many writes
are in flight adapts (``AdaptiveLimit``): it starts low, grows while the server keeps
up and halves at a 429 or 5xx, never beyond ``concurrency``; writes the server was too
busy to take get one more, serial, try.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from deploy_lib.errors import (
    ApiServerError,
    ApiUnreachable,
    DeployError,
    SettingsError,
)
from deploy_lib.models import (
    AUTOMATION_DEPLOYMENT_MARK,
    CONFLICT,
    CONFLICT_STATUS,
    CREATE,
    CREATED,
    DELETE,
    DELETED,
    FAILED,
    RENAME,
    SKIPPED,
    UNCHANGED,
    UNCHANGED_STATUS,
    UPDATE,
    UPDATED,
    ApplyResult,
    Change,
    Owner,
    Plan,
    Result,
)


class DeploymentApi(Protocol):
    """The part of ``api.PrefectApi`` that applying a plan uses."""

    async def ensure_flow(self, name: str) -> Any: ...

    async def upsert_deployment(self, body: Mapping[str, Any]) -> tuple[str, bool]: ...

    async def delete_deployment(
        self, deployment_id: str, *, deployment: str | None = None
    ) -> bool: ...

    async def read_deployment_by_name(self, flow_name: str, name: str) -> dict[str, Any] | None: ...

    async def find_deployments(
        self, pairs: Collection[tuple[str, str]]
    ) -> dict[str, dict[str, Any]]: ...

    async def replace_automations(
        self,
        deployment_id: str,
        automations: Any,
        *,
        deployment: str | None = None,
    ) -> None: ...

    async def write_secret_block(
        self, name: str, value: str, *, deployment: str | None = None
    ) -> None: ...


# Creates whose names are checked with one request just before they are written.
FREE_CHECK_BATCH = 50

# The note of a write a signal kept from starting.
NOT_STARTED = "not started: interrupted"

async def apply_plan(
    api: DeploymentApi,
    plan: Plan,
    *,
    concurrency: int,
    prune: bool,
    on_result: Callable[[Result], None] | None = None,
    keep_drift: bool = False,
    owner: tuple[str, str] | None = None,
    stop: asyncio.Event | None = None,
) -> ApplyResult:
    """Write ``plan``'s creates and updates (and, with ``prune``, its deletes) through
    ``api``, at most ``concurrency`` at once (fewer while the server does not keep up:
    ``AdaptiveLimit``).

    Side effects: requests to the server; ``on_result`` is called once per deployment
    as soon as its result is known (unchanged and skipped first, in plan order).  A
    failing deployment is recorded as failed and the others go on; the caller decides
    what to do with ``ApplyResult.failed`` (usually ``raise_if_failed`` after printing).

    A write that failed only because the server stayed busy (``ApiServerError``: 5xx or
    429 through all of the API's retries; SQLite answers concurrent writes with 503)
    gets one more try after the others, one at a time.  That pass stops trying at the
    first write that fails again, so a sick server is not hammered.

    Once ``stop`` is set (a signal arrived), no further write is started: those in
    flight finish, each one not started is reported skipped, "not started: interrupted".
    """
    if concurrency < 1:
        raise SettingsError(f"must be at least 1, got {concurrency}", key="apply_concurrency")
    runner = _Runner(
        api, AdaptiveLimit(concurrency), on_result, prune=prune, owner=owner, stop=stop
    )
    results: dict[int, Result] = {}
    pending: dict[int, Change] = {}
    for index, change in enumerate(plan.changes):
        if change.action == UNCHANGED:
            results[index] = runner.report(_result(change, UNCHANGED_STATUS, change.live_id))
        elif change.action == DELETE and change.kept is not None:
            results[index] = runner.report(
                _result(change, SKIPPED, change.live_id, note=f"kept: {change.kept}")
            )
        elif change.action == DELETE and not prune:
            results[index] = runner.report(_result(change, SKIPPED, change.live_id))
        elif change.action == CONFLICT:
            results[index] = runner.report(
                _result(
                    change,
                    CONFLICT_STATUS,
                    change.live_id,
                    error=change.owner,
                )
            )
        elif change.action == UPDATE and change.drift and keep_drift:
            results[index] = runner.report(
                _result(
                    change,
                    SKIPPED,
                    change.live_id,
                    note=f"drift kept: {', '.join(change.drift)} changed on the server",
                )
            )
        else:
            pending[index] = change
    runner.check_free_in_batches([c for c in pending.values() if c.action in (CREATE, RENAME)])
    done = await asyncio.gather(*(runner.first_attempt(change) for change in pending.values()))
    results.update(zip(pending, done, strict=True))
    await runner.second_chance(results, pending)
    return ApplyResult(env=plan.env, results=tuple(results[i] for i in sorted(results)))


class _Runner:
    """Runs one change at a time under the shared semaphore; ensures each flow once."""

    def __init__(
        self,
        api: DeploymentApi,
        slots: AdaptiveLimit,
        on_result: Callable[[Result], None] | None,
        *,
        prune: bool = False,
        owner: tuple[str, str] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._api = api
        self._stop = stop
        self._slots = slots
        self._on_result = on_result
        self._prune = prune
        self._owner = owner
        # The requests a run makes once however many changes need them (see _run_once).
        self._once: dict[tuple[str, str], asyncio.Future[Any]] = {}
        # Once the server could not be reached through all of a request's retries, the
        # writes still waiting are not tried: each would spend its own retries in vain.
        self._unreachable: ApiUnreachable | None = None
        # A create's batch of names checked with one request (see check_free_in_batches).
        self._free_batch: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}

    def check_free_in_batches(self, creates: Sequence[Change]) -> None:
        """Check that the names of ``creates`` are still free ``FREE_CHECK_BATCH`` at a
        time: the first of a batch to be written asks for all of the batch's names at
        once (rather than one read each, which costs the server about a sixth of the
        write), the others use that answer."""
        for start in range(0, len(creates), FREE_CHECK_BATCH):
            batch = creates[start : start + FREE_CHECK_BATCH]
            pairs = tuple((c.flow_name, c.deployment.split("/", 1)[1]) for c in batch)
            for change in batch:
                self._free_batch[change.deployment] = (str(start), pairs)

    def report(self, result: Result) -> Result:
        if self._on_result is not None:
            self._on_result(result)
        return result

    async def first_attempt(self, change: Change) -> Result:
        """Run ``change``; report it unless it is due a second chance."""
        result = await self.run(change)
        return result if _busy(result) else self.report(result)

    async def second_chance(self, results: dict[int, Result], pending: dict[int, Change]) -> None:
        """Retry the busy failures one at a time, in plan order, replacing their results;
        once one fails again the rest keep their first failure.  Reports each."""
        # A flow that could not be ensured, or a Secret block that could not be written,
        # is tried again.
        for key in [k for k, f in self._once.items() if f.done() and (f.cancelled() or f.exception())]:
            del self._once[key]
        server_ok = True
        self._slots = AdaptiveLimit(1)
        self._free_batch.clear()  # later than its batch: a create checks its own name
        for index in sorted(i for i in pending if _busy(results[i])):
            first = results[index]
            if server_ok and not (self._stop is not None and self._stop.is_set()):
                again = await self.run(pending[index])
                results[index] = replace(again, duration=first.duration + again.duration)
                server_ok = not _busy(again)
            self.report(results[index])

    async def run(self, change: Change) -> Result:
        """Write ``change`` under a concurrency slot; a failure becomes a failed Result."""
        async with self._slots:
            started = time.perf_counter()
            busy_before = getattr(self._api, "busy_count", 0)
            if self._stop is not None and self._stop.is_set():
                return _result(change, SKIPPED, change.live_id, note=NOT_STARTED)
            if self._unreachable is not None:
                return _result(
                    change,
                    FAILED,
                    change.live_id,
                    error="not attempted: the Prefect API could not be reached during this "
                    "run (see the first failure)",
                )
            try:
                status, deployment_id, note = await self._write(change)
            except _TakenMeanwhile as taken:
                result = _result(
                    change,
                    CONFLICT_STATUS,
                    taken.live_id,
                    error=f"{taken.owner} (it appeared after the plan was made)",
                    duration=time.perf_counter() - started,
                )
            except (DeployError, OSError, asyncio.TimeoutError) as exc:
                # One deployment's failure must not stop the others; any other exception
                # is a bug and propagates with its traceback.
                if isinstance(exc, ApiUnreachable) and self._unreachable is None:
                    self._unreachable = exc
                result = _result(
                    change,
                    FAILED,
                    change.live_id,
                    error=_message(exc),
                    duration=time.perf_counter() - started,
                    exception=exc,
                )
            else:
                result = _result(
                    change,
                    status,
                    deployment_id,
                    duration=time.perf_counter() - started,
                    note=note,
                )
            # The server's answers steer how many writes are in flight (AdaptiveLimit).
            busy = getattr(self._api, "busy_count", 0) != busy_before or _busy(result)
            self._slots.record(time.perf_counter() - started, busy=busy)
        return result

    async def _write(self, change: Change) -> tuple[str, str | None, str | None]:
        """Write ``change``: its status, the deployment id, and a note (a rename's)."""
        if change.action == DELETE:
            if change.live_id is None:
                raise DeployError(f"deployment {change.deployment!r} has no id to delete")
            # Its triggers' automations first: the server keeps them after the deployment.
            await self._write_automations(change, change.live_id)
            # False means someone deleted it meanwhile: the desired state holds either way.
            await self._api.delete_deployment(change.live_id, deployment=change.deployment)
            return DELETED, change.live_id, None
        if change.action in (CREATE, RENAME):
            await self._check_still_free(change)
        await self._write_secrets(change)
        if change.action == RENAME and change.body is not None:
            await self._ensure_flow(change.flow_name)
            deployment_id, _ = await self._api.upsert_deployment(change.body)
            await self._write_automations(change, str(deployment_id))
            note = f"renamed from {change.renamed_from}; the old one is kept (--prune deletes it)"
            if self._prune and change.live_id is not None:
                if change.drop_old_automations:  # the server keeps them otherwise
                    await self._api.replace_automations(
                        change.live_id, (), deployment=change.renamed_from
                    )
                await self._api.delete_deployment(change.live_id, deployment=change.renamed_from)
                note = f"renamed from {change.renamed_from}, which was deleted"
            return CREATED, str(deployment_id), note
        if change.action not in (CREATE, UPDATE) or change.body is None:
            raise DeployError(
                f"deployment {change.deployment!r}: nothing to write for a {change.action}"
            )
        await self._ensure_flow(change.flow_name)
        deployment_id, created = await self._api.upsert_deployment(change.body)
        await self._write_automations(change, str(deployment_id))
        # A planned create the server calls an update was still made by this run (a busy
        # attempt that landed before its retry); a planned update the server calls a
        # create means it vanished meanwhile and now exists again.
        status = CREATED if created or change.action == CREATE else UPDATED
        return status, str(deployment_id), None

    async def _write_secrets(self, change: Change) -> None:
        """Write the Secret blocks ``change`` needs before the deployment that refers to
        them; a block shared by many deployments is written once per run (the others
        await the same write, and fail with it)."""
        for block, value in change.secret_writes:
            await self._run_once(
                ("secret", block),
                partial(self._api.write_secret_block, block, value, deployment=change.deployment),
            )

    async def _write_automations(self, change: Change, deployment_id: str) -> None:
        """Put the automations of ``change``'s triggers in place of those the deployment
        owns (nothing when the plan leaves them alone)."""
        if change.automations is None:
            return
        mark = AUTOMATION_DEPLOYMENT_MARK
        bodies = [
            json.loads(json.dumps(a).replace(mark, deployment_id)) for a in change.automations
        ]
        await self._api.replace_automations(deployment_id, bodies, deployment=change.deployment)

    async def _check_still_free(self, change: Change) -> None:
        """Just before a create: when a deployment of that flow and name appeared since
        the plan (another environment or person deploying at the same time) and it is
        not ours, raise ``_TakenMeanwhile`` instead of overwriting it."""
        if self._owner is None:
            return
        batch = self._free_batch.get(change.deployment)
        if batch is None:
            name = change.deployment.split("/", 1)[1]
            current = await self._api.read_deployment_by_name(change.flow_name, name)
        else:
            key, pairs = batch
            found = await self._run_once(("free", key), partial(self._api.find_deployments, pairs))
            current = found.get(change.deployment)
        if current is None:
            return
        who = Owner.of(current)
        if not who.may_write(*self._owner):
            raise _TakenMeanwhile(who.describe(), str(current.get("id")))

    async def _ensure_flow(self, name: str) -> None:
        await self._run_once(("flow", name), lambda: self._api.ensure_flow(name))

    async def _run_once(self, key: tuple[str, str], start: Callable[[], Awaitable[Any]]) -> Any:
        """The first change that needs ``key`` (a flow, a Secret block, a batch of names
        to check) starts the request; the others await the same future (a failure then
        fails every change that needs it, and only those).  Its answer."""
        future = self._once.get(key)
        if future is None:
            future = asyncio.ensure_future(start())
            self._once[key] = future
        return await asyncio.shield(future)


class AdaptiveLimit:
    """How many writes may be in flight, found as the run goes (an async context
    manager, like a semaphore whose size moves).

    It starts low (2, or ``maximum`` when that is less) and grows by one after each
    ``window`` of writes whose median latency stays within 1.5x the best window's
    (the server keeps up), never beyond ``maximum`` (``apply_concurrency``).  A write
    the server answered 429 or 5xx halves it at once (at least 1); a window twice as
    slow as the best takes one away.  ``peak`` is the most it reached.

    Waiters are let in first come, first served, one per free slot: a finished write
    wakes one waiter, not all of them (with thousands waiting, waking every one at each
    write would make the apply quadratic)."""

    START = 2
    WINDOW = 8

    def __init__(self, maximum: int, *, start: int | None = None, window: int = WINDOW) -> None:
        self.maximum = max(1, maximum)
        self.limit = min(self.START if start is None else max(1, start), self.maximum)
        self.peak = self.limit
        self.window = window
        self._active = 0
        self._latencies: list[float] = []
        self._best: float | None = None
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __aenter__(self) -> AdaptiveLimit:
        if self._active < self.limit and not self._waiting:
            self._active += 1
            return self
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn  # the slot is counted by whoever let this one in
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # let in just as it was cancelled: hand the slot on
            elif turn in self._waiting:  # (not yet passed over by _let_in)
                self._waiting.remove(turn)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self._active -= 1
        self._let_in()

    def _let_in(self) -> None:
        while self._waiting and self._active < self.limit:
            turn = self._waiting.popleft()
            if not turn.done():
                self._active += 1
                turn.set_result(None)

    def record(self, seconds: float, *, busy: bool = False) -> None:
        """One write's latency, and whether the server said it was busy."""
        if busy:
            self.limit = max(1, self.limit // 2)
            self._latencies.clear()
            return
        self._latencies.append(seconds)
        if len(self._latencies) < self.window:
            return
        median = sorted(self._latencies)[len(self._latencies) // 2]
        self._latencies.clear()
        if self._best is None or median < self._best:
            self._best = median
        if median <= self._best * 1.5 and self.limit < self.maximum:
            self.limit += 1
            self.peak = max(self.peak, self.limit)
            self._let_in()
        elif median > self._best * 2 and self.limit > 1:
            self.limit -= 1


class _TakenMeanwhile(Exception):
    """A planned create whose name another owner took after the plan was made."""

    def __init__(self, owner: str, live_id: str) -> None:
        super().__init__(owner)
        self.owner = owner
        self.live_id = live_id


def _result(change: Change, status: str, id_: str | None = None, **details: Any) -> Result:
    """The ``Result`` of ``change`` with ``status`` (and error, note, duration, ...)."""
    return Result(change.action, change.deployment, change.type, status, id_, **details)


def _busy(result: Result) -> bool:
    return result.failed and isinstance(result.exception, ApiServerError)


def _message(exc: BaseException) -> str:
    if isinstance(exc, DeployError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
