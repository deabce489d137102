"""Every error deploy_lib raises on purpose, and the exit code each one means.

    DeployError                      exit 1   something went wrong; the message says what and where
    ├── InputError                   exit 3   bad input found before anything was written
    │   ├── SettingsError                     settings.toml, .secrets.toml or a DEPLOY_ variable
    │   │   └── UnknownEnvironmentError       --env / DEPLOY_ENV names no environment
    │   ├── DiscoveryError                    flow files (with --strict, or no flows at all)
    │   ├── TemplateError                     templates/*.yaml
    │   ├── ValidationFailed                  deployments that break the schema; carries Problems
    │   └── StalePlan                         a saved plan the source or the server moved past
    ├── ApiError                     exit 1   the Prefect API said no, or could not be reached
    │   ├── ApiUnreachable                    connection refused / timed out after bounded retries
    │   │   ├── ApiHostUnknown                the host does not resolve (not retried)
    │   │   └── ApiCertificateError           its TLS certificate is not trusted (not retried)
    │   ├── ApiUnauthorized                   HTTP 401
    │   ├── ApiForbidden                      HTTP 403
    │   ├── ApiNotFound                       HTTP 404
    │   ├── ApiConflict                       HTTP 409
    │   ├── ApiUnprocessable                  HTTP 422
    │   └── ApiServerError                    HTTP 429 / 5xx that persisted through the retries
    ├── ServerError                  exit 1   the embedded local Prefect server would not start/stop
    ├── DockerError                  exit 1   docker CLI missing, engine unreachable, build/push failed
    ├── RunFailed                    exit 1   a flow run ended in a state other than Completed
    ├── Declined                     exit 1   the prompt was answered no; nothing was written
    ├── PartialFailure               exit 4   some deployments failed; the others were applied
    │   └── DeadlinePassed                    the run's --deadline passed: no new write started
    ├── Interrupted                  exit 130 SIGINT (Ctrl-C), 143 SIGTERM: no new write
    │                                         was started; those in flight finished
    └── LockHeld                     exit 75  another run holds this environment's lock

and, without an error class: exit 0 ok, exit 2 a plan with changes pending
(``EXIT_CHANGES_PENDING``), exit 130 interrupted (``EXIT_INTERRUPTED``).  The tasks use
these names; no exit code is written as a number anywhere else.

Each class writes its own sentence from keyword arguments, so callers say *what* and
*where* (``path=``, ``key=``, ``deployment=``) and the wording stays in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class Problem(Protocol):
    """What ``ValidationFailed`` needs of a problem (``models.Problem`` is one); this
    module imports nothing of deploy_lib, so every other module may import it."""

    @property
    def message(self) -> str: ...
    @property
    def deployment(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
    @property
    def source(self) -> str | None: ...

EXIT_ERROR = 1
EXIT_CHANGES_PENDING = 2
EXIT_VALIDATION = 3
EXIT_PARTIAL = 4
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
EXIT_TERMINATED = 143  # SIGTERM (a service manager, a CI cancel), as a shell reports it


class DeployError(Exception):
    """Base of every deliberate failure; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR
    # Secret values known where the error arose (the settings that failed to load know
    # theirs before anyone else does), so whoever prints the error can mask them.
    secrets: frozenset[str] = frozenset()

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(DeployError):
    exit_code = EXIT_VALIDATION


def _where(path: str | None = None, key: str | None = None) -> str:
    parts = []
    if path:
        parts.append(str(path))
    if key:
        parts.append(f"key {key!r}")
    return ", ".join(parts)


class SettingsError(InputError):
    """A problem in the layered settings; names the file and/or the key."""

    def __init__(
        self, message: str, *, path: str | None = None, key: str | None = None
    ) -> None:
        self.path = path
        self.key = key
        where = _where(path, key)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownEnvironmentError(SettingsError):
    def __init__(self, env: str, valid: Iterable[str], *, path: str | None = None) -> None:
        self.env = env
        self.valid = sorted(valid)
        super().__init__(
            f"unknown environment {env!r}; valid environments are: {', '.join(self.valid)}",
            path=path,
        )


class DiscoveryError(InputError):
    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class TemplateError(InputError):
    """A template that cannot be loaded or rendered; names the file, key path and variable."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        variable: str | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.variable = variable
        where = _where(path, key)
        if variable:
            where = f"{where}, variable {variable!r}" if where else f"variable {variable!r}"
        super().__init__(f"{where}: {message}" if where else message)


class ValidationFailed(InputError):
    """Raised once with every problem found, grouped per deployment in the message."""

    def __init__(self, problems: Sequence[Problem], *, what: str = "validation failed") -> None:
        self.problems = list(problems)
        deployments = {p.deployment for p in self.problems if p.deployment}
        count = f"{len(self.problems)} problem(s)"
        if deployments:
            count += f" in {len(deployments)} deployment(s)"
        head = f"{what}: {count}; nothing was written"
        super().__init__(f"{head}\n{format_problems(self.problems)}")


class ApiError(DeployError):
    """The Prefect API refused a request; quotes the server's detail and what to check."""

    hint = "check the Prefect API URL and the server's logs"

    def __init__(
        self,
        detail: str,
        *,
        url: str | None = None,
        status: int | None = None,
        deployment: str | None = None,
    ) -> None:
        self.detail = detail
        self.url = url
        self.status = status
        self.deployment = deployment
        head = f"HTTP {status}" if status else "Prefect API error"
        where = f" from {url}" if url else ""
        who = f" for deployment {deployment!r}" if deployment else ""
        super().__init__(f"{head}{where}{who}: {detail} ({self.hint})")


class ApiUnreachable(ApiError):
    hint = "is the server running? check api_url in settings or DEPLOY_API_URL"


class ApiHostUnknown(ApiUnreachable):
    """The API's host name does not resolve; not retried."""

    hint = "check api_url (settings or DEPLOY_API_URL)"


class ApiCertificateError(ApiUnreachable):
    """The server's TLS certificate is not trusted; not retried."""

    hint = "set SSL_CERT_FILE to the bundle of the CA that signed it"


class ApiUnauthorized(ApiError):
    hint = "check api_key in .secrets.toml or DEPLOY_API_KEY"


class ApiForbidden(ApiError):
    hint = "the API key lacks permission for this workspace"


class ApiNotFound(ApiError):
    hint = "check the name: does it exist on this server (work pool, flow, deployment)?"


class ApiConflict(ApiError):
    hint = "another object already has this name; rename it or remove the other one"


class ApiUnprocessable(ApiError):
    hint = "the server rejected the request body; check the deployment's fields"


class ApiServerError(ApiError):
    hint = "the server kept failing after bounded retries; check its logs and try again"


class ServerError(DeployError):
    pass


class DockerError(DeployError):
    pass


class RunFailed(DeployError):
    pass


class RunTimedOut(RunFailed):
    """The run did not reach a final state in time; ``flow_run_id`` and ``state`` (its
    last state's type) say where it stands."""

    def __init__(self, message: str, *, flow_run_id: str = "", state: str = "") -> None:
        super().__init__(message)
        self.flow_run_id = flow_run_id
        self.state = state


class StalePlan(InputError):
    """A saved plan no longer matches the source or the server; nothing was written."""


class Declined(DeployError):
    """The person at the terminal said no; nothing was written."""


class PartialFailure(DeployError):
    exit_code = EXIT_PARTIAL


class LockHeld(DeployError):
    exit_code = EXIT_LOCKED


class DeadlinePassed(PartialFailure):
    """The run's deadline passed: no write was started after it; exit 4, as a partial
    apply (the next run finishes the rest)."""


class Interrupted(DeployError):
    """A signal stopped the run: no write was started after it, those in flight ended.

    ``signal_name`` is ``SIGINT`` (exit 130) or ``SIGTERM`` (exit 143)."""

    def __init__(self, message: str, *, signal_name: str = "SIGINT") -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived outside an apply: unwinds like Ctrl-C (locks released, files
    closed), and the command exits 143."""


def format_problems(problems: Iterable[Problem]) -> str:
    """The problems grouped per deployment, one header each::

        deployment 'etl-python' (templates/python_deployment.yaml):
          concurrency_limit: must be at least 1 (got 0)
          schedules.0.schedule.cron: Invalid cron string: "61 * * * *"

    The header names the source when every problem of the deployment shares it; else
    each line ends with its own ``[from ...]``.  Problems without a deployment (a flow
    file's, say) come first, under ``general:``.
    """
    groups: dict[str, list[Problem]] = defaultdict(list)
    for problem in sorted(problems, key=problem_sort_key):
        groups[problem.deployment or ""].append(problem)
    blocks = []
    for deployment, members in groups.items():
        sources = {p.source for p in members}
        shared = sources.pop() if len(sources) == 1 else None
        head = f"deployment {deployment!r}" if deployment else "general"
        lines = [head + (f" ({shared})" if shared else "") + ":"]
        for p in members:
            where = f"{p.key}: " if p.key else ""
            if p.path:
                where = f"{p.path}:{p.line}: {where}" if p.line else f"{p.path}: {where}"
            origin = f" [from {p.source}]" if p.source and not shared else ""
            lines.append(f"  {where}{p.message}{origin}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)



def problem_sort_key(problem: Problem) -> tuple[Any, ...]:
    parts = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in (problem.key or "").split(".")
    )
    return (problem.deployment or "", parts, problem.message, problem.source or "")
