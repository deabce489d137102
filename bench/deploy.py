"""Benchmark: deploying 200 deployments to one local Prefect server, ours against raw API
calls and against ``prefect deploy --all``.

One run, one server (a ``LocalServer`` in a temporary project of N generated flows,
python deployments only, in the ``development`` environment, which talks to that
embedded server).  Each raw phase uses names of its own; before each of our phases and
prefect's, the server's flows (and with them its deployments) are deleted, so each
"first deploy" really creates everything.  In order:

  a. raw API calls, one ``httpx.AsyncClient``: create the flow, then POST /deployments/
     with the very body ours sends, at each of ``--concurrency`` (default 1, 4, 8, 16;
     a 503 "database is locked" is retried after a short pause and counted); the
     fastest is the server's best concurrency;
  b. ``--rounds`` rounds of: raw calls at the best concurrency with minimal bodies, raw
     calls with the very bodies ours sends, then our first deploy in this process
     (settings, then ``pipeline.deploy`` as ``invoke deploy`` calls it, with the settings'
     ``apply_concurrency``); the ratios are taken per round, because the load of a
     shared machine drifts.  With ``--sweep``, our first deploy with the API URL set
     explicitly (no ``max_writes`` cap, see ``api.connect``) at each concurrency given.
     Then our first deploy as a whole process, ``python -m invoke deploy --env
     development``;
  c. our unchanged redeploy, in process and as a whole process (median of ``--repeat``);
  d. ``prefect --no-prompt deploy --all --prefect-file <prefect.yaml>`` on the file
     ``invoke render --prefect-yaml`` writes for the same deployments: first, then
     unchanged.

Processes run with bytecode caching on, as on a developer's machine.

Goals on SQLite: ours-first within 1.25x of raw calls at the best concurrency writing
the same deployments (the ratio against minimal bodies is shown beside: a full body costs
the server more, for example the deployment's concurrency limit and work queue);
prefect-first / ours-first >= 4x; prefect-unchanged / ours-unchanged >= 30x (aim 50x),
whole processes.  On PostgreSQL: within 1.1x of raw, >= 5x faster than prefect, 10%
changed within 1.2x of raw writes of the changed bodies (median of ``--changed-rounds``
rounds, each editing the flows anew), unchanged >= 100x faster than prefect from 1,000
deployments on, and from 5,000 on an unchanged whole-process deploy under 5 s with a peak
RSS under 250 MB.

With ``--database postgres`` the server runs on a PostgreSQL cluster of the project's
own (``invoke server.start --database postgres``), as teams that outgrow SQLite run
Prefect; our deploys are then not held to one write at a time.  After the unchanged
runs, ``--changed`` (10% by default) of the flow files are edited and redeployed (ours),
and the same changed bodies are written by raw calls at the best concurrency.  The peak
RSS of our whole-process deploys is recorded.  ``--json PATH`` writes a summary with
``ours_first_s``, ``raw_first_s`` (best, same bodies), ``peer_first_s``,
``ours_unchanged_s``, ``peer_unchanged_s``, ``ours_changed_s``, ``raw_changed_s`` and
``peak_rss_mb`` (medians, whole processes where the peer is compared).

    python bench/deploy.py [--database sqlite|postgres] [--deployments 200]
                           [--concurrency 1,4,8,16] [--repeat 5] [--sweep 4] [--rounds 2]
                           [--changed 0.1] [--changed-rounds 3] [--no-peer]
                           [--json PATH] [--replicas K]

``--replicas K`` (PostgreSQL only) starts K-1 further API processes on the same
database; raw calls and ours (``api_urls``) then spread their requests over all K, while
``prefect deploy`` talks to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from deploy_lib import pipeline  # noqa: E402
from deploy_lib.settings import load_settings  # noqa: E402

ENV = "development"
GOAL_RAW = 1.25
GOAL_FIRST = 4.0
GOAL_UNCHANGED = 30.0
AIM_UNCHANGED = 50.0
# On PostgreSQL, as teams at scale run Prefect: first deploy within 1.1x of raw calls
# with the same bodies and 5x faster than prefect deploy; 10% changed within 1.2x of raw
# writes of the changed bodies; from 1,000 deployments on, unchanged 100x faster than
# prefect deploy; from 5,000 on, unchanged (whole process) under 5 s in under 250 MB.
GOALS_POSTGRES = {"raw": 1.1, "first": 5.0, "changed": 1.2, "unchanged": 100.0}
UNCHANGED_LIMIT_S = 5.0
RSS_LIMIT_MB = 250.0

_FLOW = '''\
"""Generated flow {i}."""

from prefect import flow, task


@task
def step_{i}(value: int) -> int:
    return value * 2


@flow(name="bench-deploy-{i}", description="Benchmark flow number {i}.")
def bench_deploy_{i}(count: int = {i}, cleanup: bool = False, debug: bool = False) -> int:
    """Double a number."""
    return step_{i}(count)
'''


@dataclass
class Phase:
    """One measured thing: its wall seconds (each repeat), and what to say beside it."""

    name: str
    seconds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# -- the project and the server -----------------------------------------------------------


def make_project(root: Path, count: int) -> None:
    """settings.toml, templates/ and tasks.py of this project, and ``count`` flow files
    in ten folders (no Dockerfile: python deployments only)."""
    shutil.copy(PROJECT / "settings.toml", root / "settings.toml")
    shutil.copytree(PROJECT / "templates", root / "templates")
    shutil.copy(PROJECT / "tasks.py", root / "tasks.py")
    for i in range(count):
        folder = root / "flows" / f"group_{i % 10:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"flow_{i:04d}.py").write_text(textwrap.dedent(_FLOW).format(i=i))


def step(args: argparse.Namespace) -> int:
    """Every how many flows one is edited for the changed phase."""
    return max(1, round(1 / args.changed)) if args.changed > 0 else args.deployments + 1


def edit_flows(root: Path, count: int, share: float, round_: int = 0) -> int:
    """Edit ``share`` of the flow files (their docstring, so description and version
    change; each round differently); how many were edited."""
    every = max(1, round(1 / share)) if share > 0 else count + 1
    edited = 0
    for i in range(0, count, every):
        path = root / "flows" / f"group_{i % 10:02d}" / f"flow_{i:04d}.py"
        text = re.sub(r'"""Double a number[^"]*"""', f'"""Double a number, edit {round_}."""', path.read_text())
        path.write_text(text)
        edited += 1
    return edited


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without DEPLOY_* and PREFECT_* variables, plus
    ``extra``; deploy_lib importable from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "PREFECT_"))}
    env["PYTHONPATH"] = str(PROJECT)
    # As on a developer's machine: modules are compiled once, then read from __pycache__.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


async def _wipe(url: str) -> int:
    """Delete every flow on the server, 50 per request (its deployments go with it);
    return how many deployments are left (0)."""
    async with httpx.AsyncClient(base_url=url + "/", timeout=60) as client:
        while (await _send(client, "POST", "flows/bulk_delete", {"limit": 50}))["deleted"]:
            pass
        response = await client.post("deployments/count", json={})
        response.raise_for_status()
        return int(response.json())


def wipe(url: str) -> None:
    left = asyncio.run(_wipe(url))
    if left:
        raise SystemExit(f"{left} deployment(s) left on the server after deleting every flow")


# -- raw API calls ------------------------------------------------------------------------


class _Counter:
    retries = 0


async def _send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    counter: _Counter | None = None,
) -> Any:
    """One request; 503/429 (SQLite busy) and a dropped connection are retried after a
    short pause, and counted, for up to two minutes."""
    deadline = time.monotonic() + 120
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        try:
            response = await client.request(method, path, json=body)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            response = None
        if response is not None and response.status_code < 500 and response.status_code != 429:
            response.raise_for_status()
            return response.json() if response.content else None
        if counter is not None:
            counter.retries += 1
        await asyncio.sleep(min(0.25, 0.01 * attempt))
    raise RuntimeError(f"{method} {path} kept failing for two minutes")


async def _raw(
    urls: Sequence[str], bodies: Sequence[Mapping[str, Any]], concurrency: int
) -> tuple[float, int]:
    """Create each body's flow, then POST the body, ``concurrency`` at a time; with
    several API processes (``urls``), each body goes to the next in turn."""
    counter = _Counter()
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [
        httpx.AsyncClient(base_url=url + "/", timeout=60, limits=limits) for url in urls
    ]
    turn = iter(range(len(bodies)))
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)

        async def one(body: Mapping[str, Any]) -> None:
            client = clients[next(turn) % len(clients)]
            async with slots:
                payload = dict(body)
                flow = await _send(
                    client, "POST", "flows/", {"name": payload.pop("flow_name")}, counter
                )
                payload["flow_id"] = flow["id"]
                await _send(client, "POST", "deployments/", payload, counter)

        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        return time.perf_counter() - start, counter.retries


def raw_bodies(count: int, tag: str) -> list[dict[str, Any]]:
    """Minimal deployment bodies (flow name, name, entrypoint, work pool)."""
    return [
        {
            "flow_name": f"raw-{tag}-{i}",
            "name": f"raw-{tag}-{i}",
            "entrypoint": f"flows/group_{i % 10:02d}/flow_{i:04d}.py:bench_deploy_{i}",
            "work_pool_name": "default-agent-pool",
        }
        for i in range(count)
    ]


# -- our deploy ---------------------------------------------------------------------------


def ours_in_process(project: Path, *, api_url: str = "", concurrency: int | None = None) -> str:
    """Settings, then deploy in this process as ``invoke deploy`` does (preparing beside
    the server's listing); returns the result counts."""
    if api_url:
        os.environ["DEPLOY_API_URL"] = api_url
    try:
        settings = load_settings(ENV, project)
        outcome = pipeline.deploy(settings, concurrency=concurrency)
    finally:
        os.environ.pop("DEPLOY_API_URL", None)
    assert outcome.result is not None
    outcome.result.raise_if_failed()
    return ", ".join(f"{n} {status}" for status, n in outcome.result.counts.items() if n)


def run_process(command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> float:
    """Wall seconds of ``command``; exits with its output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return seconds


# -- the run ------------------------------------------------------------------------------


@dataclass
class Results:
    """Every phase, by key, in the order measured; ``ratios`` holds the per-round
    ours-first / raw-best ratios with the same bodies, ``minimal_ratios`` those against
    raw calls with minimal bodies, ``changed_ratios`` the per-round ours-changed / raw
    writes of the changed bodies."""

    n: int
    phases: dict[str, Phase] = field(default_factory=dict)
    best: int = 1
    ratios: list[float] = field(default_factory=list)
    minimal_ratios: list[float] = field(default_factory=list)
    changed_ratios: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    database: str = "sqlite"
    replicas: int = 1

    def add(self, key: str, name: str, seconds: float, note: str = "") -> Phase:
        phase = self.phases.setdefault(key, Phase(name))
        phase.seconds.append(seconds)
        phase.note = note or phase.note
        return phase


def timed_call(fn: Callable[[], str]) -> tuple[float, str]:
    start = time.perf_counter()
    note = fn()
    return time.perf_counter() - start, note


def measure(args: argparse.Namespace, project: Path, say: Callable[[str], None]) -> Results:
    n = args.deployments
    results = Results(n, database=args.database, replicas=args.replicas)
    server = pipeline.local_server(project, preferred_port=0, database=args.database)
    replicas: list[subprocess.Popen[bytes]] = []
    started = time.perf_counter()
    url = server.start(timeout=300)
    say(f"server {url} healthy after {time.perf_counter() - started:.1f} s")
    try:
        settings = load_settings(ENV, project)
        pipeline.pools(settings, create=True)
        invoke = [sys.executable, "-m", "invoke", "deploy", "--env", ENV]
        ours_env = clean_environ()

        urls = [url, *(start_replica(project, i, replicas) for i in range(1, args.replicas))]
        if len(urls) > 1:
            say(f"{len(urls)} API processes on one database: {', '.join(urls)}")
            os.environ["DEPLOY_API_URLS"] = json.dumps(urls)  # a TOML list too
            ours_env["DEPLOY_API_URLS"] = os.environ["DEPLOY_API_URLS"]

        def raw(key: str, name: str, bodies: Sequence[Mapping[str, Any]], c: int) -> float:
            seconds, retries = asyncio.run(_raw(urls, bodies, c))
            results.add(key, name, seconds, f"{retries} retries")
            say(f"{name}: {seconds:.2f} s ({retries} retries)")
            return seconds

        def ours(key: str, name: str, **options: Any) -> float:
            seconds, counts = timed_call(lambda: ours_in_process(project, **options))
            results.add(key, name, seconds, counts)
            say(f"{name}: {seconds:.2f} s ({counts})")
            wipe(url)
            return seconds

        # a. raw API calls with our very bodies: the server's best concurrency (the
        # server is wiped after each, so each creates everything)
        full = [dict(s.body) for s in pipeline.prepare(settings).specs]
        wipe(url)
        sweep: dict[int, float] = {}
        for c in args.concurrency:
            sweep[c] = raw(f"raw{c}", f"raw API, our full bodies, concurrency {c}", full, c)
            wipe(url)
        best = results.best = min(sweep, key=sweep.__getitem__)

        # b. rounds of: raw calls at the best concurrency with minimal bodies, then with
        # the very bodies ours sends, then our first deploy in process; the ratios are
        # taken per round, because the load of a shared machine drifts
        cap = "max_writes 1" if args.database == "sqlite" else "no write cap"
        first = f"ours first, in process (apply_concurrency {settings.apply_concurrency}, {cap})"
        for r in range(args.rounds):
            minimal = raw(
                "raw-best",
                f"raw API, minimal body, concurrency {best}, paired",
                raw_bodies(n, f"r{r}"),
                best,
            )
            same = raw(
                "raw-full", f"raw API, our full bodies, concurrency {best}, paired", full, best
            )
            wipe(url)
            ours_seconds = ours("first", first)
            results.ratios.append(ours_seconds / same)
            results.minimal_ratios.append(ours_seconds / minimal)
        for c in args.sweep:
            ours(
                f"sweep{c}",
                f"ours first, in process, api_url set, concurrency {c}",
                api_url=url,
                concurrency=c,
            )
        seconds = run_process(invoke, project, ours_env)
        say(f"ours first, whole process: {seconds:.2f} s")
        results.add("first-cli", "ours first, whole process (invoke deploy)", seconds)

        # c. our unchanged redeploy, in process and as a whole process
        for _ in range(args.repeat):
            seconds, counts = timed_call(lambda: ours_in_process(project))
            results.add("unchanged", "ours unchanged, in process", seconds, counts)
        for _ in range(args.repeat):
            seconds = run_process(invoke, project, ours_env)
            results.add("unchanged-cli", "ours unchanged, whole process (invoke deploy)", seconds)
        say(f"ours unchanged, whole process: {results.phases['unchanged-cli'].seconds}")
        results.peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

        # c'. a share of the flows edited (anew each round): ours redeploys them, then raw
        # calls write the same bodies again; the ratio is taken per round
        for r in range(args.changed_rounds):
            changed = edit_flows(project, args.deployments, args.changed, r)
            seconds, counts = timed_call(lambda: ours_in_process(project))
            results.add("changed", f"ours, {changed} flow(s) changed, in process", seconds, counts)
            say(f"ours changed: {seconds:.2f} s ({counts})")
            edited = {f"bench-deploy-{i}" for i in range(0, args.deployments, step(args))}
            bodies = [
                dict(s.body) for s in pipeline.prepare(load_settings(ENV, project)).specs
                if s.flow.name in edited
            ]
            raw_seconds = raw(
                "raw-changed",
                f"raw API, the {len(bodies)} changed bodies, concurrency {best}",
                bodies,
                best,
            )
            results.changed_ratios.append(seconds / raw_seconds)
        wipe(url)

        # d. prefect deploy --all on the prefect.yaml we render for the same deployments
        if not args.skip_prefect:
            out = project / "build" / "prefect"
            pipeline.render(settings, out_dir=out, write_prefect_yaml=True, types=["python"])
            prefect_env = clean_environ(
                PREFECT_API_URL=url, PREFECT_HOME=str(project / ".prefect-cli-home")
            )
            command = [
                sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all",
                "--prefect-file", str(out / "prefect.yaml"),
            ]  # fmt: skip
            for label in ("first", "unchanged"):
                seconds = run_process(command, project, prefect_env)
                results.add(f"prefect-{label}", f"prefect deploy --all, {label}", seconds)
                say(f"prefect deploy --all, {label}: {seconds:.2f} s")
    finally:
        os.environ.pop("DEPLOY_API_URLS", None)
        for proc in replicas:
            proc.terminate()
            proc.wait(timeout=30)
        server.stop()
    return results


def start_replica(project: Path, index: int, procs: list[subprocess.Popen[bytes]]) -> str:
    """A further API process of the server, on its PostgreSQL database (no services, a
    port of its own); its URL once healthy."""
    from deploy_lib.api import health
    from deploy_lib.server import LocalPostgres

    database = LocalPostgres(project).url
    if database is None:
        raise SystemExit("--replicas needs --database postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = project / f".replica-{index}"
    home.mkdir(exist_ok=True)
    env = clean_environ(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=database,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
    )
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port), "--no-services"]  # fmt: skip
    with (home / "server.log").open("wb") as log:
        procs.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while not health(url):
        if procs[-1].poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"replica {index} did not start: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    return url


def report(results: Results) -> bool:
    n, phases = results.n, results.phases
    print(
        f"\n{n} deployments, one local Prefect server on {results.database} "
        f"({results.replicas} API process(es)), "
        f"{os.cpu_count()} CPU(s); peak RSS of our whole-process deploys "
        f"{results.peak_rss_mb:.0f} MB"
    )
    width = max(len(p.name) for p in phases.values())
    for p in phases.values():
        runs = f" (median of {len(p.seconds)})" if len(p.seconds) > 1 else ""
        note = f"  [{p.note}]" if p.note else ""
        print(
            f"  {p.name:<{width}}  {p.median:7.2f} s  {p.median / n * 1e3:6.1f} ms each{runs}{note}"
        )
    ok = True

    def ratio(label: str, value: float, goal: float | None = None, at_most: bool = False) -> None:
        nonlocal ok
        verdict = ""
        if goal is not None:
            met = value <= goal if at_most else value >= goal
            ok = ok and met
            verdict = (
                f"  (goal {'<=' if at_most else '>='} {goal:g}x: {'met' if met else 'MISSED'})"
            )
        print(f"  {label:<60} {value:6.2f}x{verdict}")

    postgres = results.database == "postgres"
    goal_raw = GOALS_POSTGRES["raw"] if postgres else GOAL_RAW
    goal_first = GOALS_POSTGRES["first"] if postgres else GOAL_FIRST
    goal_unchanged = GOAL_UNCHANGED
    if postgres and n >= 1000:
        goal_unchanged = GOALS_POSTGRES["unchanged"]
    first, cli, raw_best = phases["first"], phases["first-cli"], phases["raw-best"]
    print("ratios:")
    same = ", ".join(f"{r:.2f}" for r in results.ratios)
    minimal = ", ".join(f"{r:.2f}" for r in results.minimal_ratios)
    ratio(
        f"ours first (in process) / raw best, same bodies [rounds: {same}]",
        statistics.median(results.ratios),
        goal_raw,
        at_most=True,
    )
    if results.changed_ratios:
        rounds = ", ".join(f"{r:.2f}" for r in results.changed_ratios)
        ratio(
            f"ours changed (in process) / raw writes of them [rounds: {rounds}]",
            statistics.median(results.changed_ratios),
            GOALS_POSTGRES["changed"] if postgres else None,
            at_most=True,
        )
    ratio(
        f"ours first (in process) / raw best, minimal bodies [rounds: {minimal}]",
        statistics.median(results.minimal_ratios),
    )
    ratio("ours first (whole process) / raw best, minimal bodies", cli.median / raw_best.median)
    if "prefect-first" in phases:
        ratio(
            "prefect first / ours first (whole processes)",
            phases["prefect-first"].median / cli.median,
            goal_first,
        )
        value = phases["prefect-unchanged"].median / phases["unchanged-cli"].median
        ratio("prefect unchanged / ours unchanged (whole processes)", value, goal_unchanged)
        print(
            f"  (aim for unchanged, {AIM_UNCHANGED:g}x: {'reached' if value >= AIM_UNCHANGED else 'not reached'})"
        )
    if postgres and n >= 5000:
        unchanged = phases["unchanged-cli"].median
        met = unchanged < UNCHANGED_LIMIT_S and results.peak_rss_mb < RSS_LIMIT_MB
        ok = ok and met
        print(
            f"  unchanged, whole process: {unchanged:.2f} s (goal < {UNCHANGED_LIMIT_S:g} s); "
            f"peak RSS {results.peak_rss_mb:.0f} MB (goal < {RSS_LIMIT_MB:g} MB): "
            f"{'met' if met else 'MISSED'}"
        )
    print(f"server's best raw concurrency: {results.best}")
    sweep = {k: p for k, p in phases.items() if k.startswith("sweep")}
    if sweep:
        shown = ", ".join(f"{k[5:]}: {p.median:.2f} s" for k, p in sweep.items())
        print(
            f"ours with api_url set (no write cap), by concurrency: {shown}; "
            f"as configured ({first.name.split('(', 1)[1].rstrip(')')}): {first.median:.2f} s"
        )
    return ok


def summary(results: Results) -> dict[str, Any]:
    """The figures a comparison needs, medians in seconds (None when not measured)."""
    phases = results.phases

    def median(key: str) -> float | None:
        return round(phases[key].median, 3) if key in phases else None

    return {
        "database": results.database,
        "replicas": results.replicas,
        "deployments": results.n,
        "best_raw_concurrency": results.best,
        "ours_first_s": median("first"),
        "ours_first_cli_s": median("first-cli"),
        "raw_first_s": median("raw-full"),
        "raw_first_minimal_s": median("raw-best"),
        "peer_first_s": median("prefect-first"),
        "ours_unchanged_s": median("unchanged-cli"),
        "ours_unchanged_in_process_s": median("unchanged"),
        "peer_unchanged_s": median("prefect-unchanged"),
        "ours_changed_s": median("changed"),
        "raw_changed_s": median("raw-changed"),
        "changed_ratio": round(statistics.median(results.changed_ratios), 3)
        if results.changed_ratios
        else None,
        "first_ratio": round(statistics.median(results.ratios), 3) if results.ratios else None,
        "peak_rss_mb": round(results.peak_rss_mb, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,8,16", help="raw API concurrencies")
    parser.add_argument(
        "--sweep", default="2,4", help="our concurrencies with api_url set ('' for none)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="paired raw-best / ours-first rounds")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each unchanged redeploy")
    parser.add_argument("--skip-prefect", "--no-peer", action="store_true",
                        help="leave out prefect deploy (the peer)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--replicas", type=int, default=1,
                        help="API processes sharing the PostgreSQL database (api_urls)")
    parser.add_argument("--changed", type=float, default=0.1, help="share of flows edited")
    parser.add_argument("--changed-rounds", type=int, default=3, help="rounds of the changed phase")
    parser.add_argument("--json", dest="json_path", default="", help="write a JSON summary here")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.sweep = [int(c) for c in args.sweep.split(",") if c]
    for name in [n for n in os.environ if n.startswith(("DEPLOY_", "PREFECT_API"))]:
        del os.environ[name]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deploy-lib-bench-") as tmp:
        project = Path(tmp)
        make_project(project, args.deployments)

        def say(text: str) -> None:
            print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

        results = measure(args, project, say)
    ok = report(results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(summary(results), indent=2) + "\n")
        print(f"summary written to {args.json_path}")
    print(f"whole benchmark: {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
