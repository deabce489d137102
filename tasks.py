"""Invoke tasks: thin adapters over deploy_lib.

Each task parses its flags, calls one deploy_lib function and prints the result.
deploy_lib is imported inside the tasks so that `invoke --list` stays fast.
Exit codes: 0 ok, 1 error, 2 plan has changes pending, 3 validation failed (nothing
written), 4 partial failure, 75 another run holds the lock.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent


def _debug_wanted(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.pop("debug", False)) or os.environ.get("DEPLOY_DEBUG", "") not in ("", "0")


def boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DeployError into invoke.Exit(message, code): no traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        from deploy_lib.errors import DeployError

        debug = _debug_wanted(kwargs)
        try:
            return fn(c, *args, **kwargs)
        except DeployError as exc:
            if debug:
                raise
            raise Exit(_masked(str(exc)), code=exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("interrupted", code=130) from None

    return wrapper


def _masked(text: str) -> str:
    return MASKER.text(text) if MASKER is not None else text


# One Masker per process, fed with each loaded environment's secret values.
MASKER: Any = None
# Settings warnings already printed (a .secrets.toml readable by others, ...): once each.
_WARNED: set[str] = set()


def _settings(env: str | None) -> Any:
    """Load the settings for ``env`` (or DEPLOY_ENV, or development), learn its secrets
    and print its warnings to stderr (each once per process)."""
    global MASKER
    from deploy_lib.masking import Masker
    from deploy_lib.settings import load_settings

    settings = load_settings(env, ROOT)
    if MASKER is None:
        MASKER = Masker()
    MASKER.add(settings.secret_values)
    for warning in settings.warnings:
        if warning not in _WARNED:
            _WARNED.add(warning)
            _warn(warning)
    return settings


# --log-file PATH: every line printed is also appended there, timestamped.
LOG_FILE: Path | None = None


def _echo(text: str = "") -> None:
    masked = _masked(text)
    sys.stdout.write(masked + "\n")
    sys.stdout.flush()
    _log(masked)


def _warn(text: str) -> None:
    masked = _masked(text)
    sys.stderr.write(f"warning: {masked}\n")
    _log(f"warning: {masked}")


def _log(text: str) -> None:
    if LOG_FILE is None:
        return
    from datetime import datetime, timezone

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with LOG_FILE.open("a", encoding="utf-8") as handle:
        handle.writelines(f"{stamp} {line}\n" for line in text.splitlines() or [""])


def _log_to(path: str | None) -> None:
    global LOG_FILE
    LOG_FILE = Path(path).resolve() if path else None


@task(
    help={
        "path": "folder or .py file to search, relative to the project root (repeatable); "
        "default: flow_roots from settings",
        "json": "print one JSON object: {flows: [...], problems: [...]}",
        "strict": "exit 3 when any problem was found (problems are always printed)",
        "env": "environment whose flow_roots/exclude apply; default $DEPLOY_ENV, else development",
        "debug": "show the traceback of an error",
    },
    iterable=["path"],
)
@boundary
def discover(
    c: Any,
    path: list[str] | None = None,
    json: bool = False,
    strict: bool = False,
    env: str | None = None,
    debug: bool = False,
) -> None:
    """List the flows found by reading the source (no flow code is imported or run)."""
    from deploy_lib.discovery import discover_flows, format_discovery

    settings = _settings(env)
    roots = path or settings.get("flow_roots", ["flows"])
    discovery = discover_flows(settings.root, roots, settings.get("exclude", []))
    _echo(format_discovery(discovery, as_json=json))
    if strict:
        discovery.raise_for_problems()


@task(
    help={
        "env": "environment (a section of settings.toml); default $DEPLOY_ENV, else development",
        "explain": "show where each value came from (default, environment, secrets file, ...)",
        "json": "print one JSON object instead of aligned lines",
        "show-secrets": "print secret values instead of ****",
        "debug": "show the traceback of an error",
    }
)
@boundary
def config(
    c: Any,
    env: str | None = None,
    explain: bool = False,
    json: bool = False,
    show_secrets: bool = False,
    debug: bool = False,
) -> None:
    """Show the effective settings of an environment, secrets masked."""
    from deploy_lib.settings import format_config

    settings = _settings(env)
    text = format_config(settings, with_sources=explain, as_json=json, show_secrets=show_secrets)
    if show_secrets:
        sys.stdout.write(text + "\n")  # asked for: bypass the masking _echo does
    else:
        _echo(text)


@task(
    help={
        "env": "environment (a section of settings.toml); default $DEPLOY_ENV, else development",
        "out": "output directory (default build/<env>)",
        "format": "yaml (default) or json",
        "prefect-yaml": "also write prefect.yaml for `prefect deploy --all --prefect-file`",
        "show-secrets": "write secret values instead of ****",
        "flow": "only this flow (repeatable)",
        "type": "only this deployment type: python or docker",
        "debug": "show the traceback of an error",
    },
    iterable=["flow"],
)
@boundary
def render(
    c: Any,
    env: str | None = None,
    out: str | None = None,
    format: str = "yaml",
    prefect_yaml: bool = False,
    show_secrets: bool = False,
    flow: list[str] | None = None,
    type: str | None = None,
    debug: bool = False,
) -> None:
    """Render every deployment to one file each; nothing is written if any is invalid."""
    from deploy_lib.templates import render_to_files

    settings = _settings(env)
    result = render_to_files(
        settings,
        out_dir=out,
        fmt=format,
        write_prefect_yaml=prefect_yaml,
        show_secrets=show_secrets,
        flow_names=flow or [],
        types=[type] if type else [],
    )
    for warning in result.warnings:
        _warn(warning)
    _echo(f"wrote {len(result.files)} file(s) to {result.out_dir}")
    for name in result.removed:
        _echo(f"removed stale {name}")


@task(
    help={
        "env": "environment (a section of settings.toml); default $DEPLOY_ENV, else development",
        "json": "print one JSON object: {env, valid, deployments, problems}",
        "debug": "show the traceback of an error",
    }
)
@boundary
def validate(c: Any, env: str | None = None, json: bool = False, debug: bool = False) -> None:
    """Discover, build, render and validate every deployment; write nothing (exit 3 if invalid)."""
    from deploy_lib.errors import ValidationFailed
    from deploy_lib.pipeline import prepare
    from deploy_lib.validate import report_json, summarize

    settings = _settings(env)
    try:
        prepared = prepare(settings)
    except ValidationFailed as exc:
        if not json:
            raise
        _echo(report_json(settings.env, problems=exc.problems))
        raise Exit(code=exc.exit_code) from None
    for warning in prepared.warnings:
        _warn(warning)
    specs = prepared.specs
    _echo(report_json(settings.env, specs) if json else summarize(settings.env, specs))


_SELECT_HELP = {
    "env": "environment (a section of settings.toml); default $DEPLOY_ENV, else development",
    "flow": "only this flow (repeatable)",
    "type": "only this deployment type: python or docker",
    "json": "print JSON instead of tables",
    "log_file": "also append timestamped lines to this file",
    "debug": "show the traceback of an error",
}


@task(help=_SELECT_HELP, iterable=["flow"])
@boundary
def plan(
    c: Any,
    env: str | None = None,
    flow: list[str] | None = None,
    type: str | None = None,
    json: bool = False,
    log_file: str | None = None,
    debug: bool = False,
) -> None:
    """Show what deploy would change (exit 0: no changes, 2: changes pending)."""
    from deploy_lib import pipeline, report

    _log_to(log_file)
    settings = _settings(env)
    prepared = pipeline.prepare(settings, flow_names=flow or [], types=[type] if type else [])
    result, warnings = pipeline.plan(prepared)
    for warning in warnings:
        _warn(warning)
    masker = MASKER
    _echo(report.to_json(report.plan_json(result, masker)) if json else report.format_plan(result, masker))
    if result.has_changes:
        raise Exit(code=2)


@task(
    help={
        **_SELECT_HELP,
        "dry_run": "print the plan and write nothing",
        "prune": "delete deployments this tool manages in this env that are no longer desired",
        "concurrency": "deployments written at once (default: apply_concurrency)",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "build": "first build and push the docker images, then deploy exactly those images",
    },
    iterable=["flow"],
)
@boundary
def deploy(
    c: Any,
    env: str | None = None,
    flow: list[str] | None = None,
    type: str | None = None,
    dry_run: bool = False,
    prune: bool = False,
    concurrency: int | None = None,
    json: bool = False,
    lock_timeout: float = 0.0,
    log_file: str | None = None,
    build: bool = False,
    debug: bool = False,
) -> None:
    """Validate, plan and apply the deployments of an environment."""
    from deploy_lib import pipeline, report
    from deploy_lib.lock import env_lock

    _log_to(log_file)
    settings = _settings(env)
    prepared = pipeline.prepare(settings, flow_names=flow or [], types=[type] if type else [])
    tty = sys.stdout.isatty() and not json
    if build and dry_run:
        raise Exit("--build pushes images, so it cannot be combined with --dry-run", code=3)
    with env_lock(ROOT, settings.env, timeout=lock_timeout, command="invoke deploy"):
        if build:
            from deploy_lib.docker import build_prepared, format_images

            images = build_prepared(prepared, push=True, on_line=None if json else _echo)
            if not json:
                _echo(format_images(images))
        progress = _Progress(tty=tty, quiet=json, prune=prune)
        outcome = pipeline.deploy(
            prepared, dry_run=dry_run, prune=prune, concurrency=concurrency,
            on_plan=progress.plan, on_result=progress.result,
        )
        progress.close()
    for warning in outcome.warnings:
        _warn(warning)
    if outcome.result is None:
        if json:
            _echo(report.to_json(report.plan_json(outcome.plan, MASKER)))
        return
    if json:
        _echo(report.to_json(report.results_json(outcome.result, MASKER)))
    else:
        _echo(report.format_results(outcome.result, MASKER))
    outcome.result.raise_if_failed()


class _Progress:
    """Prints the plan, then one line (or a progress bar on a terminal) per deployment."""

    def __init__(self, *, tty: bool, quiet: bool, prune: bool) -> None:
        self.tty, self.quiet, self.prune = tty, quiet, prune
        self._bar: Any = None

    def plan(self, plan: Any) -> None:
        from deploy_lib import report

        if self.quiet:
            return
        _echo(report.format_plan(plan, MASKER, prune=self.prune, show_unchanged=False))
        stream = _LogStream(sys.stdout)
        self._bar = report.ApplyProgress(len(plan.changes), tty=self.tty, stream=stream, masker=MASKER)
        self._bar.__enter__()

    def result(self, result: Any) -> None:
        if self._bar is not None:
            self._bar(result)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


class _LogStream:
    """A stream that also appends what is written to --log-file."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                _log(line)
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@task(
    help={
        "env": "environment; default $DEPLOY_ENV, else development",
        "flow": "only the image of this flow (repeatable); default: every docker deployment",
        "push": "push the images (logs in first when registry_username is set)",
        "json": "print one JSON object: {env, images: [...]}",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "debug": "show the traceback of an error",
    },
    iterable=["flow"],
)
@boundary
def build(
    c: Any,
    env: str | None = None,
    flow: list[str] | None = None,
    push: bool = False,
    json: bool = False,
    lock_timeout: float = 0.0,
    debug: bool = False,
) -> None:
    """Build (and --push) the image of each docker deployment, one build per Dockerfile."""
    import json as json_module

    from deploy_lib.docker import build_for_env, format_images
    from deploy_lib.lock import env_lock

    settings = _settings(env)
    with env_lock(ROOT, settings.env, timeout=lock_timeout, command="invoke build"):
        images = build_for_env(
            settings, flow_names=flow or [], push=push, on_line=None if json else _echo
        )
    if json:
        _echo(json_module.dumps({"env": settings.env, "images": [i.to_dict() for i in images]}))
    else:
        _echo(format_images(images))


@task(
    help={
        "flow": "the deployment to run: flow name, deployment name, or flow/deployment",
        "env": "environment; default $DEPLOY_ENV, else development",
        "param": "a parameter as KEY=VALUE, VALUE read as JSON when it parses (repeatable)",
        "wait": "wait for the final state (default); --no-wait returns once created",
        "worker": "run a process worker for the env's pool while waiting",
        "timeout": "seconds to wait for the final state",
        "debug": "show the traceback of an error",
    },
    iterable=["param"],
)
@boundary
def run(
    c: Any,
    flow: str,
    env: str | None = None,
    param: list[str] | None = None,
    wait: bool = True,
    worker: bool = False,
    timeout: float = 600.0,
    debug: bool = False,
) -> None:
    """Run a deployment and wait for its final state (exit 0 only when Completed)."""
    from deploy_lib.pipeline import run_flow
    from deploy_lib.runs import parse_params

    settings = _settings(env)
    outcome = run_flow(
        settings, flow, parse_params(param or []), wait=wait, timeout=timeout, with_worker=worker
    )
    _echo(f"flow run {outcome['flow_run_name']} of {outcome['deployment']}: {outcome['state']}")


@task(help={"debug": "show the traceback of an error"})
@boundary
def quickstart(c: Any, debug: bool = False) -> None:
    """Start the local server, deploy the examples to development, run one to Completed."""
    from deploy_lib import pipeline, report

    settings = _settings("development")
    _echo("1/4 local Prefect server and work pools")
    for row in pipeline.ensure_pools(settings):
        _echo(f"    {row['name']} ({row['expected_type']}): {'created' if row['created'] else 'ready'}")
    _echo("2/4 deploy the example flows to development")
    outcome = pipeline.deploy(pipeline.prepare(settings))
    assert outcome.result is not None
    _echo(report.format_results(outcome.result, MASKER))
    outcome.result.raise_if_failed()
    _echo("3/4 run env-report on a process worker")
    result = pipeline.run_flow(settings, "env-report", with_worker=True, timeout=300)
    _echo(f"4/4 flow run {result['flow_run_name']} of {result['deployment']}: {result['state']}")


@task(
    help={
        "env": "environment; default $DEPLOY_ENV, else development",
        "create": "create the missing pools (process for python, docker for docker)",
        "json": "print the rows as JSON",
        "debug": "show the traceback of an error",
    }
)
@boundary
def pools(
    c: Any, env: str | None = None, create: bool = False, json: bool = False, debug: bool = False
) -> None:
    """Show the env's work pools, their type and online workers (exit 1: missing or wrong type)."""
    import json as json_module

    from deploy_lib.api import check_work_pools, format_work_pools

    rows = check_work_pools(_settings(env), create=create)
    _echo(json_module.dumps(rows, indent=2) if json else format_work_pools(rows))
    if not all(row["type_ok"] for row in rows):
        raise Exit(code=1)


@task(
    help={
        "env": "environment; default $DEPLOY_ENV, else development",
        "run-once": "run the flow runs scheduled now, then exit",
        "debug": "show the traceback of an error",
    }
)
@boundary
def worker(c: Any, env: str | None = None, run_once: bool = False, debug: bool = False) -> None:
    """Run a process worker for the env's python work pool (Ctrl-C stops it).

    An empty api_url means the local server, which is started first when needed."""
    from deploy_lib.server import run_worker

    code = run_worker(_settings(env), run_once=run_once)
    if code:
        raise Exit(code=code)


@task(
    name="start",
    help={
        "timeout": "seconds to wait for /api/health (default 60)",
        "debug": "show the traceback of an error",
    },
)
@boundary
def server_start(c: Any, timeout: int = 60, debug: bool = False) -> None:
    """Start the project's local Prefect server in the background (no-op when it runs)."""
    from deploy_lib.server import LocalServer

    url = LocalServer(ROOT).start(timeout=float(timeout))
    _echo(f"local Prefect server: {url}\nexport PREFECT_API_URL={url}")


@task(name="stop", help={"debug": "show the traceback of an error"})
@boundary
def server_stop(c: Any, debug: bool = False) -> None:
    """Stop the project's local Prefect server (only the pid it recorded)."""
    from deploy_lib.server import LocalServer

    stopped = LocalServer(ROOT).stop()
    _echo("local Prefect server stopped" if stopped else "local Prefect server was not running")


@task(
    name="status",
    help={"json": "print the status as JSON", "debug": "show the traceback of an error"},
)
@boundary
def server_status(c: Any, json: bool = False, debug: bool = False) -> None:
    """Show the local Prefect server's pid, API URL and health (exit 1 unless healthy)."""
    import json as json_module

    from deploy_lib.server import LocalServer

    status = LocalServer(ROOT).status()
    if json:
        _echo(json_module.dumps(status.to_dict() if status else None))
    elif status is None:
        _echo("local Prefect server is not running (start it: invoke server.start)")
    else:
        health = "healthy" if status.healthy else "NOT answering /api/health"
        _echo(f"local Prefect server: pid {status.pid}, started {status.started_at}, {health}")
        _echo(f"export PREFECT_API_URL={status.url}")
    if status is None or not status.healthy:
        raise Exit(code=1)


_SERVER_TASKS = (server_start, server_stop, server_status)


def __getattr__(name: str) -> Any:
    """Invoke reads ``tasks.ns``: every top-level task in this module plus the ``server``
    collection.  Built when Invoke asks, after the whole module has run, so a task added
    anywhere in this file appears without being listed here."""
    if name != "ns":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from invoke import Task

    ns = Collection()
    for obj in list(globals().values()):
        if isinstance(obj, Task) and not any(obj is t for t in _SERVER_TASKS):
            ns.add_task(obj)
    ns.add_collection(Collection("server", *_SERVER_TASKS))
    return ns
