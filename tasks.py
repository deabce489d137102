"""Invoke tasks: thin adapters over deploy_lib.

Each task parses its flags, makes one ``pipeline`` call and hands the result to
``report`` (through one ``report.Output`` per task: stdout, masking, the log file and
warnings shown once).  deploy_lib is imported inside the tasks so that `invoke --list`
stays fast.  Exit codes (``deploy_lib.errors``): 0 ok, 1 error, 2 plan has changes
pending, 3 validation failed (nothing written), 4 partial failure, 75 another run holds
the lock, 130 interrupted.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import Collection, Exit, Task
from invoke import task as _invoke_task

if TYPE_CHECKING:
    from deploy_lib.models import Settings
    from deploy_lib.report import Output

ROOT = Path(__file__).resolve().parent

# One short flag per option, the same in every task that has the option; the other
# options have long names only (Invoke would otherwise hand out first letters task by
# task, so -d meant --debug here and --dry-run there).
SHORT_FLAGS = {
    "env": "e",
    "flow": "f",
    "type": "t",
    "json": "j",
    "debug": "d",
    "dry_run": "n",
    "prune": "p",
    "yes": "y",
    "log_file": "l",
    "out": "o",
    "strict": "s",
    "quiet": "q",
    "verbose": "v",
}
# Every task takes these (the boundary handles them), with this help.
COMMON_FLAGS = {
    "quiet": "show only the results, warnings and errors (no progress, no notes)",
    "verbose": "also show what is expected of ordinary settings (the notes validate shows)",
}


class _Task(Task):  # type: ignore[misc]
    """A task whose short flags come from ``SHORT_FLAGS`` alone."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"] = [*opts["names"], short]
        if name in COMMON_FLAGS and not opts.get("help"):
            opts["help"] = COMMON_FLAGS[name]
        return opts


def task(*args: Any, **kwargs: Any) -> Any:
    """``invoke.task`` with the one short-flag scheme (``SHORT_FLAGS``)."""
    kwargs.setdefault("klass", _Task)
    kwargs.setdefault("auto_shortflags", False)
    return _invoke_task(*args, **kwargs)


class _ParsedAsInt(type):
    """Invoke names a flag's value by its kind (``--concurrency=INT``), looked up by
    equality with ``int``: a whole-number kind compares equal to ``int`` so the help
    says INT, while parsing goes through its own checks."""

    def __eq__(cls, other: object) -> bool:
        return other is int or type.__eq__(cls, other)

    def __hash__(cls) -> int:
        return hash(int)


class _Whole(int, metaclass=_ParsedAsInt):
    """A flag's whole number: anything else, or below ``minimum``, ends the command at
    parse time with one line naming the flag and exit 3 (no traceback)."""

    flag = "--value"
    minimum = 0

    def __new__(cls, value: Any = 0) -> _Whole:
        text = str(value).strip()
        try:
            number = int(text, 10)
        except ValueError:
            raise Exit(f"{cls.flag}: expected a whole number, got {text!r}", code=3) from None
        if number < cls.minimum:
            raise Exit(f"{cls.flag}: must be at least {cls.minimum}, got {number}", code=3)
        return super().__new__(cls, number)


def _whole(flag: str, default: int, minimum: int = 0) -> Any:
    """The default of a whole-number flag (its type is the flag's parser)."""
    kind = _ParsedAsInt(f"Whole_{flag.strip('-').replace('-', '_')}", (_Whole,), {})
    kind.flag, kind.minimum = flag, minimum  # type: ignore[attr-defined]
    return kind(default)


def _debug_wanted(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs.pop("debug", False)) or os.environ.get("DEPLOY_DEBUG", "") not in ("", "0")


def boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give the task an ``Output`` (its ``out`` argument) and turn a DeployError into
    invoke.Exit(message, code): no traceback unless --debug."""

    @functools.wraps(fn)
    def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
        from deploy_lib.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, DeployError, Terminated
        from deploy_lib.report import Output

        debug = _debug_wanted(kwargs)
        out = Output(
            log_file=kwargs.get("log_file"),
            quiet=bool(kwargs.pop("quiet", False)),
            verbose=bool(kwargs.pop("verbose", False)),
        )

        def terminated(signum: int, frame: Any) -> None:
            raise Terminated()

        # SIGTERM unwinds like Ctrl-C (the lock is released, files are closed); during
        # an apply the pipeline takes both signals over and stops starting writes.
        previous = signal.signal(signal.SIGTERM, terminated)
        try:
            return fn(c, out, *args, **kwargs)
        except DeployError as exc:
            out.learn(exc.secrets)
            message = out.mask(str(exc))
            out.log(f"error (exit {exc.exit_code}): {message}")
            if debug:
                out.write(out.mask(traceback.format_exc()), err=True)
            raise Exit(message, code=exc.exit_code) from None
        except Terminated:
            out.log(f"interrupted by SIGTERM (exit {EXIT_TERMINATED})")
            raise Exit("interrupted by SIGTERM", code=EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            out.log(f"interrupted by SIGINT (exit {EXIT_INTERRUPTED})")
            raise Exit("interrupted by SIGINT", code=EXIT_INTERRUPTED) from None
        except Exit:
            raise  # the task's own exit code (plan: 2 changes pending)
        except Exception:
            # A bug: its traceback is shown (masked: a secret may sit in a local's repr
            # or a message) and logged, and the run exits 1.
            text = out.mask(traceback.format_exc())
            out.write(text, err=True)
            out.log(text)
            raise Exit(code=1) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    # Invoke makes the flags from the signature: the task's, less ``out``, plus the flags
    # every task takes.
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    common = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool)
        for name in COMMON_FLAGS
        if name not in signature.parameters
    ]
    kept = [params[0], *params[2:]]
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            *[p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if p.kind is inspect.Parameter.KEYWORD_ONLY else p for p in kept],
            *[c.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for c in common],
        ]
    )
    return wrapper


def _settings(out: Output, env: str | None) -> Settings:
    """Load the settings for ``env`` (or DEPLOY_ENV, or development), teach ``out`` its
    secrets and print its warnings to stderr."""
    from deploy_lib import pipeline

    settings = pipeline.load(env, ROOT)
    out.learn(settings.secret_values)
    out.masker.add_keys(settings.secret_body_paths)
    out.warn_all(settings.warnings)
    return settings


_ENV_HELP = "environment (a section of settings.toml); default $DEPLOY_ENV, else development"
_STRICT_HELP = (
    "exit 3 on any problem in the flow files (by default a flow with a problem is left "
    "out, named, and the others go on)"
)
_DEBUG_HELP = "show the traceback of an error"


@task(
    help={
        "path": "folder or .py file to search, relative to the project root (repeatable); "
        "default: flow_roots from settings",
        "json": "print one JSON object: {flows: [...], problems: [...]}",
        "strict": "exit 3 when any problem was found (problems are always printed)",
        "env": "environment whose flow_roots/exclude apply; default $DEPLOY_ENV, else development",
        "debug": _DEBUG_HELP,
    },
    iterable=["path"],
)
@boundary
def discover(
    c: Any,
    out: Output,
    path: list[str] | None = None,
    json: bool = False,
    strict: bool = False,
    env: str | None = None,
    debug: bool = False,
) -> None:
    """List the flows found by reading the source (no flow code is imported or run)."""
    from deploy_lib import pipeline, report

    found = pipeline.discover(_settings(out, env), path or ())
    out.echo(report.format_discovery(found, as_json=json))
    if strict:
        found.raise_for_problems()


@task(
    help={
        "env": _ENV_HELP,
        "explain": "show where each value came from (default, environment, secrets file, ...)",
        "json": "print one JSON object instead of aligned lines",
        "show-secrets": "print secret values instead of ****",
        "debug": _DEBUG_HELP,
    }
)
@boundary
def config(
    c: Any,
    out: Output,
    env: str | None = None,
    explain: bool = False,
    json: bool = False,
    show_secrets: bool = False,
    debug: bool = False,
) -> None:
    """Show the effective settings of an environment, secrets masked."""
    from deploy_lib import report

    settings = _settings(out, env)
    text = report.format_config(
        settings, with_sources=explain, as_json=json, show_secrets=show_secrets
    )
    if show_secrets:
        out.raw(text)  # asked for: bypass the masking
    else:
        out.echo(text)


@task(
    help={
        "env": _ENV_HELP,
        "out": "output directory (default build/<env>)",
        "format": "yaml (default) or json",
        "prefect-yaml": "also write prefect.yaml for `prefect deploy --all --prefect-file`",
        "show-secrets": "write secret values instead of ****",
        "flow": "only this flow (repeatable)",
        "type": "only this deployment type: python, docker, kubernetes, ecs, ... (a work pool type)",
        "strict": _STRICT_HELP,
        "debug": _DEBUG_HELP,
    },
    iterable=["flow"],
)
@boundary
def render(
    c: Any,
    output: Output,
    env: str | None = None,
    out: str | None = None,
    format: str = "yaml",
    prefect_yaml: bool = False,
    show_secrets: bool = False,
    flow: list[str] | None = None,
    type: str | None = None,
    strict: bool = False,
    debug: bool = False,
) -> None:
    """Render every deployment to one file each; nothing is written if any is invalid."""
    from deploy_lib import pipeline

    result = pipeline.render(
        _settings(output, env),
        out_dir=out,
        fmt=format,
        write_prefect_yaml=prefect_yaml,
        show_secrets=show_secrets,
        flow_names=flow or [],
        types=[type] if type else [],
        strict=strict,
    )
    output.warn_all(result.warnings)
    output.echo(f"wrote {len(result.files)} file(s) to {result.out_dir}")
    for name in result.removed:
        output.echo(f"removed stale {name}")


@task(
    help={
        "env": _ENV_HELP,
        "json": "print one JSON object, whatever happens: "
        "{env, valid, deployments, problems, skipped, warnings[, error]}",
        "strict": _STRICT_HELP,
        "debug": _DEBUG_HELP,
    }
)
@boundary
def validate(
    c: Any,
    out: Output,
    env: str | None = None,
    json: bool = False,
    strict: bool = False,
    debug: bool = False,
) -> None:
    """Discover, build, render and validate every deployment; write nothing (exit 3 if invalid)."""
    from deploy_lib import pipeline, report
    from deploy_lib.errors import DeployError, ValidationFailed

    try:
        settings = _settings(out, env)
        prepared = pipeline.prepare(settings, strict=strict)
    except DeployError as exc:
        if not json or debug:
            raise
        problems = exc.problems if isinstance(exc, ValidationFailed) else ()
        error = None if problems else out.mask(str(exc))
        out.echo(report.report_json(pipeline.default_env(env), problems=problems, error=error))
        raise Exit(code=exc.exit_code) from None
    out.warn_all([*prepared.warnings, *prepared.notes])  # told here, not in every deploy
    specs = prepared.specs
    if json:
        out.echo(
            report.report_json(
                settings.env,
                specs,
                skipped=prepared.skipped,
                warnings=[out.mask(w) for w in (*prepared.warnings, *prepared.notes)],
            )
        )
    else:
        out.echo(report.summarize(settings.env, specs))


_SELECT_HELP = {
    "env": _ENV_HELP,
    "flow": "only this flow (repeatable)",
    "type": "only this deployment type: python, docker, kubernetes, ecs, ... (a work pool type)",
    "json": "print JSON instead of tables",
    "log_file": "also append timestamped lines to this file",
    "debug": _DEBUG_HELP,
}


def _results(out: Output, outcome: Any, *, json: bool = False) -> None:
    """An apply's results (a table, or JSON with what was skipped), then its exit: the
    signal or deadline that stopped it, else its failures (``DeployOutcome.raise_if_failed``)."""
    from deploy_lib import report

    assert outcome.result is not None
    if json:
        out.echo(report.to_json(report.results_json(outcome.result, out.masker, outcome.skipped)))
    else:
        out.echo(report.format_results(outcome.result, out.masker))
        for block in outcome.secrets_removed:
            out.echo(f"removed Secret block {block}: no deployment uses it")
    outcome.raise_if_failed()


def _interactive() -> bool:
    """A person at a terminal, who can answer a question (never under cron or CI)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _confirm(out: Output, yes: bool) -> Any:
    """The question asked before a risky apply: none with --yes or without a terminal."""
    return None if yes or not _interactive() else out.confirm


@task(
    help={
        **_SELECT_HELP,
        "format": "text (default), json or markdown (a summary and table for a pull request)",
        "out": "also save the plan to this file, for `invoke deploy --plan FILE`",
        "no_color": "no colours, even on a terminal (NO_COLOR does the same)",
        "strict": _STRICT_HELP,
    },
    iterable=["flow"],
)
@boundary
def plan(
    c: Any,
    output: Output,
    env: str | None = None,
    flow: list[str] | None = None,
    type: str | None = None,
    json: bool = False,
    format: str = "text",
    out: str | None = None,
    no_color: bool = False,
    log_file: str | None = None,
    strict: bool = False,
    debug: bool = False,
) -> None:
    """Show what deploy would change (exit 0: no changes, 2: changes pending)."""
    from deploy_lib import pipeline, report
    from deploy_lib.errors import EXIT_CHANGES_PENDING, InputError

    fmt = "json" if json else format
    if fmt not in ("text", "json", "markdown"):
        raise InputError(f"unknown plan format {fmt!r}; choose one of: text, json, markdown")
    settings = _settings(output, env)
    outcome = pipeline.plan_and_save(
        settings, flow_names=flow or [], types=[type] if type else [], out=out,
        notify=output.note, strict=strict,
    )
    result, saved = outcome.plan, outcome.saved
    output.warn_all(outcome.warnings)
    output.notes(outcome.notes)
    if fmt == "json":
        output.echo(report.to_json(report.plan_json(result, output.masker, outcome.skipped)))
    elif fmt == "markdown":
        output.echo(report.format_plan_markdown(result, output.masker))
    else:
        colour = report.use_colour(output.stdout, no_color=no_color)
        output.echo(report.format_plan(result, output.masker, colour=colour))
    if saved is not None:
        output.note(f"saved the plan to {saved}; apply it with `invoke deploy --plan {saved}`")
    if result.has_changes:
        raise Exit(code=EXIT_CHANGES_PENDING)


@task(
    help={
        **_SELECT_HELP,
        "dry_run": "print the plan and write nothing (exit 2 when changes are pending)",
        "prune": "delete deployments this tool manages in this env that are no longer desired",
        "concurrency": "deployments written at once, a whole number (default 0: the "
        "apply_concurrency setting)",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "deadline": "seconds the whole run may take; then no new write starts and it "
        "exits 4 (default 0: the deadline setting, 0 there for none)",
        "build": "first build and push the docker images, then deploy exactly those images",
        "plan": "apply exactly this saved plan (`invoke plan --out FILE`); refused when stale",
        "keep_drift": "leave alone deployments changed on the server since the last deploy",
        "yes": "do not ask before deleting or overwriting drift (never asked without a terminal)",
        "no_color": "no colours, even on a terminal (NO_COLOR does the same)",
        "strict": _STRICT_HELP,
    },
    iterable=["flow"],
)
@boundary
def deploy(
    c: Any,
    out: Output,
    env: str | None = None,
    flow: list[str] | None = None,
    type: str | None = None,
    dry_run: bool = False,
    prune: bool = False,
    concurrency: int = _whole("--concurrency", 0),
    json: bool = False,
    lock_timeout: int = _whole("--lock-timeout", 0),
    deadline: int = _whole("--deadline", 0),
    log_file: str | None = None,
    build: bool = False,
    plan: str | None = None,
    keep_drift: bool = False,
    yes: bool = False,
    no_color: bool = False,
    strict: bool = False,
    debug: bool = False,
) -> None:
    """Validate, plan and apply the deployments of an environment.

    On a terminal it asks before deleting (--prune) or overwriting changes made on the
    server; --yes does not ask; without a terminal (cron, CI) it never asks.  --dry-run
    exits as plan does: 0 no changes, 2 changes pending."""
    from deploy_lib import pipeline, report
    from deploy_lib.errors import EXIT_CHANGES_PENDING

    settings = _settings(out, env)
    tty = sys.stdout.isatty() and not json
    saved = pipeline.read_saved_plan(plan) if plan else None
    if saved is not None:
        flow, type = list(saved.get("flow_names") or []), (saved.get("types") or [None])[0]

    outcome = pipeline.deploy(
        settings,
        flow_names=flow or [],
        types=[type] if type else [],
        dry_run=dry_run,
        prune=prune,
        concurrency=concurrency or None,
        keep_drift=keep_drift,
        build=build,
        lock_timeout=lock_timeout,
        saved=saved,
        confirm=None if json else _confirm(out, yes),
        on_plan=None if json else lambda p: out.plan(p, prune=prune, no_color=no_color),
        progress=None if json else lambda plan: out.progress(plan, tty=tty),
        on_line=None if json else out.echo,
        on_images=None if json else lambda images: out.echo(report.format_images(images)),
        notify=out.note,
        strict=strict,
        deadline=deadline or None,
    )
    out.warn_all(outcome.warnings)
    out.notes(outcome.notes)
    if outcome.result is None:  # a dry run: plan's exit codes
        if json:
            out.echo(report.to_json(report.plan_json(outcome.plan, out.masker, outcome.skipped)))
        if outcome.plan.has_changes:
            raise Exit(code=EXIT_CHANGES_PENDING)
        return
    _results(out, outcome, json=json)


@task(
    help={
        "env": _ENV_HELP,
        "flow": "only this flow's deployments (repeatable); default: every conflict",
        "yes": "do not ask before taking them over",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "debug": _DEBUG_HELP,
    },
    iterable=["flow"],
)
@boundary
def adopt(
    c: Any,
    out: Output,
    env: str | None = None,
    flow: list[str] | None = None,
    yes: bool = False,
    lock_timeout: int = _whole("--lock-timeout", 0),
    debug: bool = False,
) -> None:
    """Take over deployments made by hand or by `prefect deploy` that this project's
    deployments conflict with (same flow and name), after showing their diff."""
    from deploy_lib import pipeline, report

    outcome = pipeline.adopt(
        _settings(out, env),
        flow_names=flow or [],
        lock_timeout=lock_timeout,
        confirm=_confirm(out, yes),
        on_plan=lambda p: out.echo(report.format_plan(p, out.masker, show_unchanged=False)),
    )
    out.warn_all(outcome.warnings)
    if outcome.result is None:
        out.echo("nothing to adopt: no deployment conflicts with this project's")
        return
    _results(out, outcome)


@task(
    help={
        "prefect_yaml": "the prefect.yaml whose deployments to carry over",
        "write": "append the per-flow settings to settings.toml (else print them)",
        "env": _ENV_HELP,
        "debug": _DEBUG_HELP,
    }
)
@boundary
def migrate(
    c: Any,
    out: Output,
    prefect_yaml: str,
    write: bool = False,
    env: str | None = None,
    debug: bool = False,
) -> None:
    """Print (or --write into settings.toml) the per-flow settings that reproduce the
    deployments of an existing prefect.yaml; then `invoke adopt` takes them over."""
    from deploy_lib import pipeline

    settings = _settings(out, env)
    result = pipeline.migrate_prefect_yaml(settings, prefect_yaml, write=write)
    for note in result.notes:
        out.note(f"note: {note}")
    if write:
        out.echo(f"added {len(result.tables)} per-flow table(s) to settings.toml: "
                 + ", ".join(sorted(result.tables)))
    else:
        out.echo(result.toml())


@task(
    help={
        "env": _ENV_HELP,
        "yes": "do not ask (needed without a terminal: there is no one to ask)",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "json": "print the results as JSON",
        "debug": _DEBUG_HELP,
    }
)
@boundary
def destroy(
    c: Any,
    out: Output,
    env: str | None = None,
    yes: bool = False,
    lock_timeout: int = _whole("--lock-timeout", 0),
    json: bool = False,
    debug: bool = False,
) -> None:
    """Delete every deployment of this project in an environment (nobody else's)."""
    from deploy_lib import pipeline
    from deploy_lib.errors import InputError

    settings = _settings(out, env)
    if not yes and not _interactive():
        raise InputError(
            f"destroy deletes every deployment of project {settings.project!r} in env "
            f"{settings.env!r}; there is no terminal to ask on, so pass --yes"
        )
    tty = sys.stdout.isatty() and not json
    outcome = pipeline.destroy(
        settings,
        lock_timeout=lock_timeout,
        confirm=_confirm(out, yes),
        on_plan=None if json else lambda p: out.plan(p, prune=True),
        progress=None if json else lambda p: out.progress(p, tty=tty),
    )
    _results(out, outcome, json=json)


@task(
    help={
        "env": _ENV_HELP,
        "flow": "only the image of this flow (repeatable); default: every docker deployment",
        "push": "push the images (logs in first when registry_username is set)",
        "json": "print one JSON object: {env, images: [...]}",
        "lock_timeout": "seconds to wait for another run of this env to finish (default 0)",
        "debug": _DEBUG_HELP,
    },
    iterable=["flow"],
)
@boundary
def build(
    c: Any,
    out: Output,
    env: str | None = None,
    flow: list[str] | None = None,
    push: bool = False,
    json: bool = False,
    lock_timeout: int = _whole("--lock-timeout", 0),
    debug: bool = False,
) -> None:
    """Build (and --push) the image of each docker deployment, one build per Dockerfile."""
    from deploy_lib import pipeline, report

    settings = _settings(out, env)
    images = pipeline.build_images(
        settings,
        flow_names=flow or [],
        push=push,
        lock_timeout=lock_timeout,
        on_line=None if json else out.echo,
    )
    if json:
        out.echo(report.to_json({"env": settings.env, "images": [i.to_dict() for i in images]}, indent=None))
    else:
        out.echo(report.format_images(images))


@task(
    help={
        "flow": "the deployment to run: flow name, deployment name, or flow/deployment",
        "env": _ENV_HELP,
        "param": "a parameter as KEY=VALUE, VALUE read as JSON when it parses (repeatable)",
        "wait": "wait for the final state (default); --no-wait returns once created",
        "worker": "run a process worker for the env's pool while waiting",
        "timeout": "seconds to wait for the final state",
        "debug": _DEBUG_HELP,
    },
    iterable=["param"],
)
@boundary
def run(
    c: Any,
    out: Output,
    flow: str,
    env: str | None = None,
    param: list[str] | None = None,
    wait: bool = True,
    worker: bool = False,
    timeout: int = _whole("--timeout", 600, minimum=1),
    debug: bool = False,
) -> None:
    """Run a deployment and wait for its final state (exit 0 only when Completed)."""
    from deploy_lib import pipeline, report

    outcome = pipeline.run_flow(
        _settings(out, env),
        flow,
        pipeline.parse_params(param or []),
        wait=wait,
        timeout=timeout,
        with_worker=worker,
        notify=out.note,
        on_state=lambda state: out.note(f"flow run of {flow}: {state}"),
    )
    out.echo(report.format_run(outcome))


@task(help={"env": _ENV_HELP, "json": "print one JSON object", "debug": _DEBUG_HELP})
@boundary
def version(c: Any, out: Output, env: str | None = None, json: bool = False, debug: bool = False) -> None:
    """Show this tool's version, Prefect's, and the environment's Prefect server's."""
    from deploy_lib import pipeline, report

    found = pipeline.versions(_settings(out, env))
    if json:
        out.echo(report.to_json(found))
    else:
        out.echo("\n".join(f"{name:<10} {value}" for name, value in found.items()))


@task(help={"debug": _DEBUG_HELP})
@boundary
def quickstart(c: Any, out: Output, debug: bool = False) -> None:
    """Start the local server, deploy the examples to development, run one to Completed."""
    from deploy_lib import pipeline, report

    settings = _settings(out, "development")
    out.echo("1/4 local Prefect server and work pools")
    out.echo(report.format_pools_ready(pipeline.pools(settings, create=True, notify=out.note)))
    out.echo("2/4 deploy the example flows to development")
    outcome = pipeline.deploy(settings, command="invoke quickstart")
    _results(out, outcome)
    out.echo("3/4 run env-report on a process worker")
    result = pipeline.run_flow(settings, "env-report", with_worker=True, timeout=300)
    out.echo(f"4/4 {report.format_run(result)}")


@task(
    help={
        "env": _ENV_HELP,
        "create": "create the missing pools (process for python, docker for docker)",
        "json": "print the rows as JSON",
        "debug": _DEBUG_HELP,
    }
)
@boundary
def pools(
    c: Any,
    out: Output,
    env: str | None = None,
    create: bool = False,
    json: bool = False,
    debug: bool = False,
) -> None:
    """Show the env's work pools, their type and online workers (exit 1: missing or wrong type)."""
    from deploy_lib import pipeline, report
    from deploy_lib.errors import EXIT_ERROR

    rows = pipeline.pools(_settings(out, env), create=create, notify=out.note)
    out.echo(report.to_json(rows) if json else report.format_work_pools(rows))
    if not all(row["type_ok"] for row in rows):
        raise Exit(code=EXIT_ERROR)


@task(
    help={
        "env": _ENV_HELP,
        "run-once": "run the flow runs scheduled now, then exit",
        "debug": _DEBUG_HELP,
    }
)
@boundary
def worker(
    c: Any, out: Output, env: str | None = None, run_once: bool = False, debug: bool = False
) -> None:
    """Run a process worker for the env's python work pool (Ctrl-C stops it).

    An empty api_url means the local server, which is started first when needed."""
    from deploy_lib import pipeline

    code = pipeline.run_worker(_settings(out, env), run_once=run_once, notify=out.note)
    if code:
        raise Exit(code=code)


@task(
    name="start",
    help={
        "timeout": "seconds to wait for /api/health (default 60)",
        "no_ui": "start it without Prefect's UI (the API and scheduler only)",
        "database": "sqlite (default: a file under .prefect/) or postgres (a PostgreSQL "
        "cluster of the project's own, from the system's PostgreSQL)",
        "debug": _DEBUG_HELP,
    },
)
@boundary
def server_start(
    c: Any,
    out: Output,
    timeout: int = _whole("--timeout", 60, minimum=1),
    no_ui: bool = False,
    database: str = "sqlite",
    debug: bool = False,
) -> None:
    """Start the project's local Prefect server in the background (no-op when it runs)."""
    from deploy_lib import pipeline, report

    pipeline.server_start(ROOT, timeout=float(timeout), ui=not no_ui, database=database)
    out.echo(report.format_server_status(pipeline.server_status(ROOT)))


@task(name="stop", help={"debug": _DEBUG_HELP})
@boundary
def server_stop(c: Any, out: Output, debug: bool = False) -> None:
    """Stop the project's local Prefect server (only the pid it recorded)."""
    from deploy_lib import pipeline

    stopped = pipeline.server_stop(ROOT)
    out.echo("local Prefect server stopped" if stopped else "local Prefect server was not running")


@task(name="status", help={"json": "print the status as JSON", "debug": _DEBUG_HELP})
@boundary
def server_status(c: Any, out: Output, json: bool = False, debug: bool = False) -> None:
    """Show the local Prefect server's pid, API URL and health (exit 1 unless healthy)."""
    from deploy_lib import pipeline, report
    from deploy_lib.errors import EXIT_ERROR

    status = pipeline.server_status(ROOT)
    out.echo(report.format_server_status(status, as_json=json))
    if status is None or not status.healthy:
        raise Exit(code=EXIT_ERROR)


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
