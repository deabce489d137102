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


def _settings(env: str | None) -> Any:
    """Load the settings for ``env`` (or DEPLOY_ENV, or development) and learn its secrets."""
    global MASKER
    from deploy_lib.masking import Masker
    from deploy_lib.settings import load_settings

    settings = load_settings(env, ROOT)
    if MASKER is None:
        MASKER = Masker()
    MASKER.add(settings.secret_values)
    return settings


def _echo(text: str = "") -> None:
    sys.stdout.write(_masked(text) + "\n")
    sys.stdout.flush()


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
    for warning in settings.warnings:
        sys.stderr.write(f"warning: {_masked(warning)}\n")
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
    for warning in [*settings.warnings, *result.warnings]:
        sys.stderr.write(f"warning: {_masked(warning)}\n")
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
    for warning in [*settings.warnings, *prepared.warnings]:
        sys.stderr.write(f"warning: {_masked(warning)}\n")
    specs = prepared.specs
    _echo(report_json(settings.env, specs) if json else summarize(settings.env, specs))
