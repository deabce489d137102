"""Benchmark: discover, build, render and validate 1,000 flows for one environment.

Generates N flow files (default 1,000; one in ten folders also has a Dockerfile, so
those flows get a docker deployment as well) in a temporary project holding a copy of
this project's settings.toml and templates/, then times, in this process and without
any network:

  - ``pipeline.prepare(settings)``: discover + build + render + validate, the figure
    the goal is about (median of several runs);
  - each stage on its own (discover, build + render, validate), to show where the time
    goes; and loading the settings;
  - once, a fresh interpreter doing all of it, imports included.

Goal: prepare under 3 s for 1,000 flows.

    python bench/pipeline.py [--flows 1000] [--runs 5] [--env staging]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from deploy_lib.gitinfo import git_info  # noqa: E402
from deploy_lib.pipeline import build_specs, discover, prepare  # noqa: E402
from deploy_lib.settings import load_settings  # noqa: E402
from deploy_lib.validate import validate_specs  # noqa: E402

GOAL_SECONDS = 3.0

_FLOWS = (
    '''\
    """Generated flow {i}: takes the environment's parameters."""

    from prefect import flow, task


    @task
    def step_{i}(value: int) -> int:
        return value * 2


    @flow(name="bench-flow-{i}", description="Benchmark flow number {i}.")
    def bench_flow_{i}(count: int = {i}, cleanup: bool = False, debug: bool = False,
                       label: str = "x{i}", tags: list[str] | None = None) -> int:
        """Double a number.

        Args:
            count: what to double
            label: shown in the logs
        """
        return step_{i}(count)
    ''',
    '''\
    """Generated flow {i}: asynchronous, some of the environment's parameters."""

    import asyncio

    import prefect


    @prefect.flow
    async def async_bench_{i}(sources: list[str] = ["a", "b"], use_distributed: bool = False,
                              ratio: float = 0.5) -> list[str]:
        await asyncio.sleep(0)
        return sources
    ''',
    '''\
    """Generated flow {i}: none of the environment's parameters."""

    from typing import Literal

    from prefect import flow


    @flow(log_prints=True)
    def plain_bench_{i}(mode: Literal["fast", "slow"] = "fast", since: str | None = None) -> str:
        return mode
    ''',
)


def generate(root: Path, count: int) -> int:
    """A project at ``root``: settings.toml and templates/ from this project, and
    ``count`` flow files under flows/ in ten folders (group_00 has a Dockerfile).
    Returns how many deployments they make (python for each, docker for group_00)."""
    shutil.copy(PROJECT / "settings.toml", root / "settings.toml")
    shutil.copytree(PROJECT / "templates", root / "templates")
    deployments = 0
    for i in range(count):
        folder = root / "flows" / f"group_{i % 10:02d}"
        if not folder.is_dir():
            folder.mkdir(parents=True)
            if i % 10 == 0:
                (folder / "Dockerfile").write_text("FROM prefecthq/prefect:3-latest\n")
        source = textwrap.dedent(_FLOWS[i % len(_FLOWS)]).format(i=i)
        (folder / f"flow_{i:04d}.py").write_text(source, encoding="utf-8")
        deployments += 2 if i % 10 == 0 else 1
    return deployments


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``runs`` calls of ``fn``, and its last result."""
    walls, cpus = [], []
    result = None
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


_COLD = """
import sys, time
start = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from deploy_lib.pipeline import prepare
from deploy_lib.settings import load_settings
prepared = prepare(load_settings(sys.argv[2], Path(".")))
print(time.perf_counter() - start, len(prepared.specs))
"""


def cold_run(project: Path, env: str) -> tuple[float, int]:
    """A fresh interpreter: imports, settings, prepare; wall seconds and spec count."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    out = subprocess.run(
        [sys.executable, "-c", _COLD, str(PROJECT), env],
        cwd=project,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, specs = out.stdout.split()
    return float(seconds), int(specs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=1000, help="how many flow files")
    parser.add_argument("--runs", type=int, default=5, help="runs to take the median of")
    parser.add_argument("--env", default="staging", help="environment to prepare")
    args = parser.parse_args()
    for name in [n for n in os.environ if n.startswith("DEPLOY_")]:
        del os.environ[name]  # the generated project's settings only

    with tempfile.TemporaryDirectory(prefix="deploy-lib-bench-") as tmp:
        project = Path(tmp)
        expected = generate(project, args.flows)
        settings_s, _, settings = timed(lambda: load_settings(args.env, project), args.runs)
        git = git_info(project)
        now = datetime.now(timezone.utc)

        prepare_s, prepare_cpu, prepared = timed(lambda: prepare(settings), args.runs)
        discover_s, _, discovery = timed(lambda: discover(settings), args.runs)
        build_s, _, built = timed(
            lambda: build_specs(discovery.flows, settings, git=git, now=now), args.runs
        )
        specs = built[0]
        validate_s, _, problems = timed(
            lambda: validate_specs(specs, discovery.flows, functions=discovery.functions),
            args.runs,
        )
        cold_s, cold_specs = cold_run(project, args.env)

    if len(prepared.specs) != expected or problems or cold_specs != expected:
        print(
            f"unexpected result: {len(prepared.specs)} deployments (want {expected}), "
            f"{len(problems)} problem(s): {[str(p) for p in problems[:3]]}"
        )
        return 1
    n = args.flows
    print(
        f"{n} flow files -> {expected} deployments in env {args.env!r}; "
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, median of {args.runs} runs"
    )
    print(f"  load settings                 {settings_s:7.3f} s")
    print(f"  discover                      {discover_s:7.3f} s")
    print(f"  build + render                {build_s:7.3f} s")
    print(f"  validate                      {validate_s:7.3f} s")
    print(
        f"  prepare (all four)            {prepare_s:7.3f} s wall, {prepare_cpu:.3f} s CPU, "
        f"{prepare_s / n * 1e3:.2f} ms per flow"
    )
    print(f"  fresh interpreter, all of it  {cold_s:7.3f} s (imports and settings included)")
    ok = prepare_s < GOAL_SECONDS * n / 1000
    print(f"goal < {GOAL_SECONDS:g} s per 1,000 flows: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
