"""The whole program on one screen: discover -> settings -> build/render -> validate ->
plan -> apply.

Each stage is a function of the previous stage's output; this module only wires them.
``settings`` always comes in as a value (``load_settings(env, root)``); the network is
reached through one ``api.PrefectApi`` handed to the stages that need it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deploy_lib.apply import ApplyResult, Result, apply_plan
from deploy_lib.discovery import Discovery, discover_flows
from deploy_lib.errors import DiscoveryError, ValidationFailed
from deploy_lib.gitinfo import GitInfo, git_info
from deploy_lib.models import MANAGED_BY_TAG, DeploymentSpec, Problem, Settings
from deploy_lib.plan import Plan, make_plan
from deploy_lib.templates import build_specs, select_specs
from deploy_lib.validate import ensure_valid

# The work pool type each deployment type needs.
POOL_TYPES = {"python": "process", "docker": "docker"}


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


@dataclass(frozen=True)
class DeployOutcome:
    """What ``deploy`` did: the plan it computed, and the apply result (None on dry run)."""

    plan: Plan
    result: ApplyResult | None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def discover(settings: Settings, paths: Sequence[str] = ()) -> Discovery:
    """Discovery over ``paths`` (default: the settings' ``flow_roots``). Reads files only."""
    return discover_flows(
        Path(settings.root), tuple(paths) or tuple(settings.flow_roots), tuple(settings.exclude)
    )


def prepare(
    settings: Settings,
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    git: GitInfo | None = None,
    now: datetime | None = None,
) -> Prepared:
    """Discover, build, render and validate the deployments of ``settings.env``.

    Raises ``DiscoveryError`` when a flow file has a problem (a deploy must not run on a
    partial view of the flows: ``--prune`` would delete what it cannot see), and
    ``ValidationFailed`` / ``TemplateError`` / ``SettingsError`` for bad input: all
    exit 3 before anything is written.
    """
    discovery = discover(settings)
    if discovery.problems:
        lines = [f"{len(discovery.problems)} problem(s) in the flow files; nothing was written:"]
        lines += [f"  - {p}" for p in discovery.problems]
        raise DiscoveryError("\n".join(lines))
    git = git if git is not None else git_info(Path(settings.root))
    specs, warnings = build_specs(
        discovery.flows,
        settings,
        git=git,
        now=now if now is not None else datetime.now(timezone.utc),
    )
    selected = select_specs(specs, flow_names=flow_names, types=types)
    ensure_valid(selected, discovery.flows, functions=discovery.functions)
    # Offline, against Prefect's default job templates; check_server repeats it live.
    from deploy_lib.docker import job_variable_problems

    if problems := job_variable_problems(selected):
        raise ValidationFailed(problems)
    return Prepared(
        settings, discovery, tuple(selected), tuple(warnings), tuple(flow_names), tuple(types), git
    )


async def check_server(api: Any, specs: Sequence[DeploymentSpec]) -> list[str]:
    """Check the specs against the server's work pools before any write.

    Each work pool must exist and be of the type its deployments need (process for
    python, docker for docker), and every job variable must be one the pool's base job
    template defines (the server silently accepts unknown ones, so a typo such as
    ``mem_limt`` would be lost).  Raises ``ValidationFailed`` with every problem; returns
    warnings (a work queue that does not exist yet: the server would create it).
    """
    pool_names = sorted({str(s.body["work_pool_name"]) for s in specs})
    pools = dict(zip(pool_names, await asyncio.gather(*map(api.read_work_pool, pool_names)), strict=True))
    problems: list[Problem] = []
    queues: set[tuple[str, str]] = set()
    for spec in specs:
        pool_name = str(spec.body["work_pool_name"])
        pool = pools[pool_name]
        problems += pool_problems(spec, pool_name, pool, api_url=getattr(api, "url", ""))
        if pool is not None and spec.body.get("work_queue_name"):
            queues.add((pool_name, str(spec.body["work_queue_name"])))
    if problems:
        raise ValidationFailed(problems, what="the server's work pools do not fit")
    warnings = []
    for pool_name, queue in sorted(queues):
        if await api.read_work_queue(pool_name, queue) is None:
            warnings.append(
                f"work queue {queue!r} does not exist in work pool {pool_name!r}; "
                "the server will create it (check for a typo in work_pool.queue)"
            )
    return warnings


def pool_problems(
    spec: DeploymentSpec, pool_name: str, pool: Mapping[str, Any] | None, *, api_url: str = ""
) -> list[Problem]:
    """Why ``spec`` does not fit work pool ``pool`` (the server's JSON, None if missing)."""
    def problem(message: str, key: str) -> Problem:
        return Problem(message, key=key, deployment=spec.full_name, source=spec.source)

    expected = POOL_TYPES[spec.type]
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
    template = pool.get("base_job_template") or {}
    defined = set((template.get("variables") or {}).get("properties") or {})
    if not defined:
        return []
    return [
        problem(
            f"job variable {name!r} is not defined by work pool {pool_name!r} "
            f"({pool.get('type')}); it accepts: {', '.join(sorted(defined))}",
            f"job_variables.{name}",
        )
        for name in sorted(spec.body.get("job_variables") or {})
        if name not in defined
    ]


async def compute_plan(api: Any, prepared: Prepared) -> Plan:
    """The plan of ``prepared`` against what the server holds for this env.

    Lists only the deployments this tool manages in this env (one filtered, paginated
    listing).  With a ``--flow`` or ``--type`` selection, live deployments outside the
    selection are left out, so they are neither updated nor deleted.
    """
    env = prepared.settings.env
    live = await api.list_deployments([MANAGED_BY_TAG, f"env:{env}"])
    if prepared.flow_names:
        live = [d for d in live if d.get("flow_name") in prepared.flow_names]
    if prepared.types:
        wanted = {f"runtime:{t}" for t in prepared.types}
        live = [d for d in live if wanted & set(d.get("tags") or ())]
    return make_plan(prepared.specs, live, env)


async def deploy_prepared(
    api: Any,
    prepared: Prepared,
    *,
    dry_run: bool = False,
    prune: bool = False,
    concurrency: int | None = None,
    on_plan: Callable[[Plan], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> DeployOutcome:
    """Check the server, plan, then (unless ``dry_run``) apply with bounded concurrency.

    Nothing is written when a work pool check fails (``ValidationFailed``).  Unchanged
    deployments are not written at all; deletes happen only with ``prune``.  The caller
    raises ``PartialFailure`` from ``outcome.result`` after printing it.
    """
    warnings = list(prepared.warnings)
    warnings += await check_server(api, prepared.specs)
    plan = await compute_plan(api, prepared)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return DeployOutcome(plan, None, tuple(warnings))
    limit = concurrency if concurrency is not None else prepared.settings.apply_concurrency
    result = await apply_plan(api, plan, concurrency=limit, prune=prune, on_result=on_result)
    return DeployOutcome(plan, result, tuple(warnings))


def run(coro: Any) -> Any:
    """Run a pipeline coroutine from synchronous code."""
    return asyncio.run(coro)


def plan(prepared: Prepared) -> tuple[Plan, list[str]]:
    """Connect to the environment's API, check its work pools and compute the plan.

    Writes nothing (the embedded local server is started when the environment uses it).
    Returns the plan and the warnings."""
    from deploy_lib.api import connect

    async def go() -> tuple[Plan, list[str]]:
        async with connect(prepared.settings) as api:
            warnings = [*prepared.warnings, *await check_server(api, prepared.specs)]
            return await compute_plan(api, prepared), warnings

    result: tuple[Plan, list[str]] = asyncio.run(go())
    return result


def deploy(prepared: Prepared, **options: Any) -> DeployOutcome:
    """``deploy_prepared`` against the environment's API (``options`` are its flags)."""
    from deploy_lib.api import connect

    async def go() -> DeployOutcome:
        async with connect(prepared.settings) as api:
            return await deploy_prepared(api, prepared, **options)

    outcome: DeployOutcome = asyncio.run(go())
    return outcome


def run_flow(
    settings: Settings,
    target: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    timeout: float = 600.0,
    with_worker: bool = False,
) -> dict[str, Any]:
    """Run the deployment ``target`` names and (with ``wait``) wait for its final state.

    With ``with_worker``, a process worker for the environment's python pool runs for
    the duration.  Raises ``RunFailed`` unless the run ends Completed."""
    import contextlib

    from deploy_lib.api import connect
    from deploy_lib.runs import background_worker, run_deployment

    async def go() -> dict[str, Any]:
        async with connect(settings) as api:
            return await run_deployment(api, settings, target, parameters, wait=wait, timeout=timeout)

    worker = background_worker(settings) if with_worker else contextlib.nullcontext()
    with worker:
        result: dict[str, Any] = asyncio.run(go())
    return result


def ensure_pools(settings: Settings) -> list[dict[str, Any]]:
    """Create the environment's missing work pools; one row per pool (see api)."""
    from deploy_lib.api import check_work_pools

    return check_work_pools(settings, create=True)
