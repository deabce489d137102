"""Bad input, end to end through the real command line.

Each case copies the project (settings.toml, templates/, flows/, tasks.py) into a fresh
folder, breaks one thing, runs ``python -m invoke <task>`` there in a subprocess with
stdin closed (as cron runs it), and checks:

* the exit code (3 bad input, nothing written; 1 server error; 4 partial; 75 locked);
* that the output names the file, key, flow or deployment at fault;
* that no traceback is printed;
* where a server is involved, that the server's deployments are exactly as before.

The server cases share the session's Prefect server; the server's own answers (401, 422,
503) come from a small loopback proxy in a thread that forwards to it and answers with
the injected status instead for the requests it is told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import invoke as run_invoke
from helpers import make_project

from deploy_lib.api import PrefectApi
from deploy_lib.lock import env_lock

REPO = Path(__file__).resolve().parents[1]
DEV_TEMPLATE = "templates/python_development.yaml"

# Work pools this module creates on the session server (names no other test uses).
PROCESS_POOL = "badin-process"
DOCKER_POOL = "badin-docker"
NARROW_POOL = "badin-narrow"  # a process pool whose job template lacks working_dir

# Secret values planted in the secrets cases; none may ever be printed.
SECRET_API_KEY = "pnu_badinputs_api_key_7f3a9c"
SECRET_DB_PASSWORD = "s3cr3t-db-password-e41b"
SECRET_TOKEN = "tok-from-environment-0c77"
SECRETS = (SECRET_API_KEY, SECRET_DB_PASSWORD, SECRET_TOKEN)


# -- the project and the command line -----------------------------------------------------


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(root: Path, *args: str, env: Mapping[str, str] = (), timeout: float = 120) -> Ran:
    """``python -m invoke ARGS`` in ``root`` with stdin closed; never waits forever."""
    done = run_invoke(root, *args, env=dict(env), timeout=timeout)
    return Ran(done.returncode, done.stdout, done.stderr)


def append(root: Path, name: str, text: str) -> None:
    with (root / name).open("a", encoding="utf-8") as handle:
        handle.write(text)


def append_bytes(root: Path, name: str, data: bytes) -> None:
    with (root / name).open("ab") as handle:
        handle.write(data)


def replace_in(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def write(root: Path, name: str, text: str | bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def hello_override(line: str) -> Callable[[Path], None]:
    """Add ``[default.flows.hello]`` with one line to settings.toml."""
    return lambda root: append(root, "settings.toml", f"\n[default.flows.hello]\n{line}\n")


def flow_source(name: str, function: str = "probe", signature: str = "") -> str:
    return (
        "from prefect import flow\n\n\n"
        f'@flow(name="{name}")\n'
        f"def {function}({signature}) -> None:\n"
        f'    """A flow written by the bad-input tests."""\n'
    )


# -- the server: pools, snapshots, a fault-injecting proxy ---------------------------------


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def _ensure_pools(url: str) -> None:
    async with PrefectApi(url, max_writes=1) as api:
        for name, kind in ((PROCESS_POOL, "process"), (DOCKER_POOL, "docker")):
            if await api.read_work_pool(name) is None:
                await api.create_work_pool(name, kind)
        if await api.read_work_pool(NARROW_POOL) is None:
            template = await api.default_base_job_template("process")
            properties = template["variables"]["properties"]
            del properties["working_dir"]
            template["job_configuration"].pop("working_dir", None)
            await api.create_work_pool(NARROW_POOL, "process", template)


async def _deployments(url: str) -> list[tuple[str, str, str, str]]:
    async with PrefectApi(url) as api:
        found = await api.list_deployments()
    return sorted((d["id"], str(d["flow_name"]), d["name"], str(d["updated"])) for d in found)


async def _delete(url: str, ids: list[str]) -> None:
    async with PrefectApi(url, max_writes=1) as api:
        for deployment_id in ids:
            await api.delete_deployment(deployment_id)


def deployments(url: str) -> list[tuple[str, str, str, str]]:
    """Every deployment on the server: (id, flow name, name, updated)."""
    result: list[tuple[str, str, str, str]] = run_async(_deployments(url))
    return result


@pytest.fixture(scope="module")
def server(prefect_server: str) -> str:
    """The session server's API URL, with this module's work pools in place."""
    run_async(_ensure_pools(prefect_server))
    return prefect_server


def server_env(url: str) -> dict[str, str]:
    """Point the development environment at ``url`` and this module's pools; python
    deployments only (docker ones would need an image registry)."""
    return {
        "DEPLOY_API_URL": url,
        "DEPLOY_WORK_POOL__PYTHON": PROCESS_POOL,
        "DEPLOY_WORK_POOL__DOCKER": DOCKER_POOL,
        "DEPLOY_DEPLOYMENT_TYPES": '["python"]',
    }


Rule = Callable[[str, str, bytes], bool]  # (method, path, body) -> inject?


def any_request(method: str, path: str, body: bytes) -> bool:
    return True


def deployment_writes(method: str, path: str, body: bytes) -> bool:
    return method == "POST" and path.rstrip("/").endswith("/api/deployments")


def deployment_write_of(name: str) -> Rule:
    def rule(method: str, path: str, body: bytes) -> bool:
        return deployment_writes(method, path, body) and json.loads(body).get("name") == name

    return rule


class FaultProxy:
    """A loopback HTTP proxy in a thread: forwards every request to ``upstream`` (an API
    URL), except that the first ``times`` requests ``rule`` picks (all of them when
    ``times`` is None) are answered with ``status`` and ``body`` instead, never reaching
    the server.  ``injected`` counts those answers; ``url`` is the API URL to use."""

    def __init__(
        self,
        upstream: str,
        status: int,
        *,
        rule: Rule = any_request,
        times: int | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        origin = httpx.URL(upstream)
        self.upstream = f"{origin.scheme}://{origin.host}:{origin.port}"
        self.status, self.rule, self.times = status, rule, times
        self.body = json.dumps(body if body is not None else {"detail": f"injected {status}"})
        self.headers = dict(headers or {})
        self.injected = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{origin.path.rstrip('/')}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _inject(self, method: str, path: str, body: bytes) -> bool:
        if not self.rule(method, path, body):
            return False
        with self._lock:
            if self.times is not None and self.injected >= self.times:
                return False
            self.injected += 1
            return True

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy._inject(self.command, self.path, body):
                    self._answer(proxy.status, proxy.body.encode(), proxy.headers)
                    return
                skip = {"host", "content-length", "connection", "accept-encoding"}
                forward = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = httpx.request(
                    self.command,
                    proxy.upstream + self.path,
                    content=body,
                    headers=forward,
                    timeout=60,
                    trust_env=False,
                )
                keep = {"content-type", "retry-after"}
                headers = {k: v for k, v in answer.headers.items() if k.lower() in keep}
                self._answer(answer.status_code, answer.content, headers)

            def _answer(self, status: int, content: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the cases -------------------------------------------------------------------------------


@dataclass
class Harness:
    """What a case's setup may use: the project, the server, and a place for cleanups.

    ``env`` and ``vars`` start empty; setup fills them (``vars`` fill ``{name}`` fields in
    the case's args and expected texts)."""

    root: Path
    server: str | None
    stack: contextlib.ExitStack
    env: dict[str, str] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)

    def proxy(self, status: int, **options: Any) -> FaultProxy:
        assert self.server is not None
        proxy = FaultProxy(self.server, status, **options)
        self.stack.callback(proxy.close)
        self.env["DEPLOY_API_URL"] = proxy.url
        self.vars["proxy"] = proxy
        return proxy

    def fresh_flows(self, count: int) -> list[str]:
        """Write ``count`` flows with names no deployment has yet; ``{flow0}``... in args."""
        token = uuid.uuid4().hex[:8]
        names = [f"probe-{i}-{token}" for i in range(count)]
        for i, name in enumerate(names):
            write(self.root, f"flows/probe_{i}_{token}.py", flow_source(name))
            self.vars[f"flow{i}"] = name
        return names


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    expect: tuple[str, ...]
    mutate: Callable[[Path], None] | None = None
    setup: Callable[[Harness], None] | None = None
    server: bool = False  # point the env at the session server; check it is unchanged
    env: Mapping[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    check: Callable[[Harness, Ran], None] | None = None
    changes_server: bool = False  # the case is meant to write (its deployments are removed)


def _hold_lock(h: Harness) -> None:
    h.stack.enter_context(env_lock(h.root, "development", command="pytest holder"))
    h.vars["pid"] = os.getpid()


def _unreachable(h: Harness) -> None:
    h.vars["port"] = closed_port()
    h.env["DEPLOY_API_URL"] = f"http://127.0.0.1:{h.vars['port']}/api"


def _nothing_rendered(h: Harness, ran: Ran) -> None:
    assert not (h.root / "build").exists(), "a failed render must write nothing"


def _symlink_to_itself(root: Path) -> None:
    (root / "flows" / "loop").symlink_to("loop")


def _symlink_to_parent(root: Path) -> None:
    (root / "flows" / "sub").mkdir()
    (root / "flows" / "sub" / "up").symlink_to("..")


def _broken_flow_file(root: Path) -> None:
    write(root, "flows/broken.py", "from prefect import flow\n\n@flow\ndef broken(:\n    pass\n")


def _empty_flows(root: Path) -> None:
    shutil.rmtree(root / "flows")
    (root / "flows").mkdir()


def _setup_401(h: Harness) -> None:
    h.proxy(401, body={"detail": "Unauthorized"})
    h.env["DEPLOY_API_KEY"] = SECRET_API_KEY


def _setup_422_one(h: Harness) -> None:
    rejected, _ = h.fresh_flows(2)
    h.proxy(
        422,
        rule=deployment_write_of(rejected),
        body={"detail": [{"loc": ["body", "job_variables"], "msg": "injected rejection"}]},
    )


def _check_422_one(h: Harness, ran: Ran) -> None:
    names = {name for _, _, name, _ in deployments(str(h.server))}
    assert h.vars["flow0"] not in names and h.vars["flow1"] in names


def _setup_503_clears(h: Harness) -> None:
    h.fresh_flows(1)
    h.proxy(503, rule=deployment_writes, times=2, headers={"Retry-After": "0"})


def _check_503_clears(h: Harness, ran: Ran) -> None:
    assert h.vars["proxy"].injected == 2
    names = {name for _, _, name, _ in deployments(str(h.server))}
    assert h.vars["flow0"] in names


def _setup_503_persists(h: Harness) -> None:
    h.fresh_flows(1)
    h.proxy(503, rule=deployment_writes, headers={"Retry-After": "0"})


def _check_503_persists(h: Harness, ran: Ran) -> None:
    # 6 attempts (5 retries), then one more round of 6 after the other deployments.
    assert 2 <= h.vars["proxy"].injected <= 12


# A template line that points every deployment at a task instead of a flow.
NOT_A_FLOW_TEMPLATE = "entrypoint: flows/hello.py:make_greeting"

CASES = [
    # -- settings and environment
    Case(
        "settings.toml nested 3,000 tables deep by dotted headers is named, not a crash",
        ("validate",),
        3,
        ("settings.toml", "nested more than 32 levels deep"),
        mutate=lambda root: append(
            root, "settings.toml", "\n[development." + ".".join(["x"] * 3000) + "]\na = 1\n"
        ),
    ),
    Case(
        "settings.toml nested 3,000 inline tables deep is named, not a crash",
        ("config",),
        3,
        ("settings.toml", "nested too deeply to read"),
        mutate=lambda root: append(
            root, "settings.toml", "\n[global]\ndeep = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"
        ),
    ),
    Case(
        "a DEPLOY_ variable nested 3,000 tables deep is kept as text and named as unknown",
        ("config",),
        0,
        ("DEPLOY_DEEP",),
        env={"DEPLOY_DEEP": "{a = " * 3000 + "1" + "}" * 3000},
    ),
    Case(
        "a lock folder that is a file names it, and nothing is written",
        ("deploy",),
        3,
        (".prefect/locks", "cannot take the lock of environment 'development'", "nothing was written"),
        mutate=lambda root: (
            (root / ".prefect").mkdir(exist_ok=True),
            (root / ".prefect" / "locks").write_text("not a folder"),
        ),
    ),
    Case(
        "a lock file that is a folder names it, and nothing is written",
        ("deploy",),
        3,
        ("development.lock", "cannot take the lock", "Is a directory"),
        mutate=lambda root: (root / ".prefect" / "locks" / "development.lock").mkdir(parents=True),
    ),
    Case(
        "a flag that takes a whole number names itself when given something else",
        ("deploy", "--concurrency", "two"),
        3,
        ("--concurrency: expected a whole number, got 'two'",),
    ),
    Case(
        "a negative deadline is refused naming the flag",
        ("deploy", "--deadline", "-5"),
        3,
        ("--deadline: must be at least 0, got -5",),
    ),
    Case(
        "a run timeout below one second is refused naming the flag",
        ("run", "hello", "--timeout", "-5"),
        3,
        ("--timeout: must be at least 1, got -5",),
    ),
    Case(
        "malformed settings.toml names the file and line",
        ("config",),
        3,
        ("settings.toml:", "invalid TOML at line"),
        mutate=lambda root: append(root, "settings.toml", "\nretries = = 3\n"),
    ),
    Case(
        "malformed .secrets.toml names that file and line before deploy writes anything",
        ("deploy",),
        3,
        (".secrets.toml:2", "invalid TOML at line 2"),
        mutate=lambda root: write(root, ".secrets.toml", "[default]\napi_key = \n"),
        server=True,
    ),
    Case(
        "an unknown environment lists the valid ones",
        ("deploy", "--env", "prod"),
        3,
        ("unknown environment 'prod'", "development, production, staging", "settings.toml"),
        server=True,
    ),
    Case(
        "a required setting that is missing is named with what it must be",
        ("validate",),
        3,
        ("flow_roots: missing", "a non-empty list of folder names"),
        mutate=lambda root: replace_in(root, "settings.toml", 'flow_roots = ["flows"]', ""),
    ),
    Case(
        "a setting of the wrong type names the key the value and where it was set",
        ("plan",),
        3,
        ("apply_concurrency: must be an integer", "got 'four'", "settings.toml [default]"),
        mutate=lambda root: replace_in(
            root, "settings.toml", "apply_concurrency = 4", 'apply_concurrency = "four"'
        ),
        server=True,
    ),
    Case(
        "a wrong value from a DEPLOY_ variable names that variable",
        ("deploy",),
        3,
        ("retries.retries: must be an integer of at least 0", "env var DEPLOY_RETRIES__RETRIES"),
        env={"DEPLOY_RETRIES__RETRIES": "-1"},
        server=True,
    ),
    Case(
        "a settings.toml that is not UTF-8 names the file",
        ("config",),
        3,
        ("settings.toml", "is not UTF-8 text"),
        mutate=lambda root: append_bytes(root, "settings.toml", b"\n# caf\xe9\n"),
    ),
    Case(
        "a wrong-typed value in .secrets.toml is reported without quoting it",
        ("config",),
        3,
        ("apply_concurrency: must be an integer", "(from .secrets.toml)"),
        mutate=lambda root: write(
            root, ".secrets.toml", f'[default]\napply_concurrency = "{SECRET_DB_PASSWORD}"\n'
        ),
        absent=(SECRET_DB_PASSWORD,),
    ),
    # -- templates
    Case(
        "a template with a YAML syntax error names the template and line",
        ("deploy",),
        3,
        (f"{DEV_TEMPLATE}:", "YAML syntax error"),
        mutate=lambda root: append(root, DEV_TEMPLATE, "tags: [unclosed\n"),
        server=True,
    ),
    Case(
        "an unknown template variable names the template the key and the variable",
        ("render",),
        3,
        (DEV_TEMPLATE, "key 'version'", "variable 'deployment.nope'", "unknown variable"),
        mutate=lambda root: append(root, DEV_TEMPLATE, 'version: "{{ deployment.nope }}"\n'),
        check=_nothing_rendered,
    ),
    Case(
        "an unknown deployment key in a template names the key and the template",
        ("deploy", "--flow", "hello"),
        3,
        ("deployment 'hello'", DEV_TEMPLATE, "colour: unknown key"),
        mutate=lambda root: append(root, DEV_TEMPLATE, "colour: blue\n"),
        server=True,
    ),
    Case(
        "a template entrypoint that points at a task names the function and the template",
        ("validate",),
        3,
        ("entrypoint", "make_greeting() in flows/hello.py is not a flow", DEV_TEMPLATE),
        mutate=lambda root: append(root, DEV_TEMPLATE, NOT_A_FLOW_TEMPLATE + "\n"),
        # The template set it, not the entrypoint_style setting.
        absent=("entrypoint_style",),
    ),
    # -- schedules
    Case(
        "a bad cron names the deployment the key and the settings table",
        ("deploy",),
        3,
        (
            "deployment 'hello'",
            "schedules.0.schedule.cron",
            "Invalid cron string",
            "flows.hello.schedules",
        ),
        mutate=hello_override('schedules = [{cron = "61 * * * *"}]'),
        server=True,
    ),
    Case(
        "a bad timezone names the deployment and the timezone",
        ("plan",),
        3,
        ("deployment 'hello'", "schedules.0.schedule.timezone", "Mars/Olympus"),
        mutate=hello_override('schedules = [{cron = "0 6 * * *", timezone = "Mars/Olympus"}]'),
        server=True,
    ),
    Case(
        "a zero interval is refused with the deployment and key",
        ("deploy",),
        3,
        ("deployment 'hello'", "schedules.0.schedule.interval", "positive number of seconds"),
        mutate=hello_override("schedules = [{interval = 0}]"),
        server=True,
    ),
    Case(
        "a negative interval is refused with the value given",
        ("validate",),
        3,
        ("deployment 'hello'", "schedules.0.schedule.interval", "got -60.0"),
        mutate=hello_override("schedules = [{interval = -60}]"),
    ),
    # -- parameters
    Case(
        "a per-flow parameter the flow does not accept names the parameter and the flow",
        ("deploy",),
        3,
        ("unknown parameter 'nmae'", "flow 'hello' accepts name", "flows.hello.parameters.nmae"),
        mutate=hello_override('parameters = {nmae = "typo"}'),
        server=True,
    ),
    Case(
        "a required parameter without a value is accepted and validate says each run must pass it",
        ("validate",),
        0,
        ("flow 'needs-x' (flows/needs.py:needs): every run must pass x",),
        mutate=lambda root: write(
            root, "flows/needs.py", flow_source("needs-x", "needs", "x: int")
        ),
    ),
    # -- flow files
    Case(
        "a flow file with a syntax error is skipped by deploy, named with its line",
        ("deploy",),
        0,
        ("skipped flows/broken.py:4: syntax error", "created"),
        mutate=_broken_flow_file,
        server=True,
        changes_server=True,
    ),
    Case(
        "a flow file with a syntax error stops deploy --strict, and nothing is written",
        ("deploy", "--strict"),
        3,
        ("flows/broken.py:4", "syntax error", "nothing was written"),
        mutate=_broken_flow_file,
        server=True,
    ),
    Case(
        "a flow file with a syntax error is skipped by validate, which names it",
        ("validate",),
        0,
        ("skipped flows/broken.py:4: syntax error",),
        mutate=_broken_flow_file,
    ),
    Case(
        "validate --json prints JSON naming the file when settings.toml is not TOML",
        ("validate", "--json"),
        3,
        ('"valid": false', '"error": ', 'settings.toml:', "invalid TOML at line"),
        mutate=lambda root: append(root, "settings.toml", "\nretries = = 3\n"),
    ),
    Case(
        "validate --json --strict prints JSON naming a flow file with a problem",
        ("validate", "--json", "--strict"),
        3,
        ('"valid": false', '"error": ', "flows/broken.py:4: syntax error"),
        mutate=_broken_flow_file,
    ),
    Case(
        "validate --json lists the skipped file among the skipped, and stays valid",
        ("validate", "--json"),
        0,
        ('"valid": true', '"path": "flows/broken.py"', '"reason": "syntax error: invalid syntax"'),
        mutate=_broken_flow_file,
    ),
    Case(
        "a flow file with a syntax error fails validate --strict",
        ("validate", "--strict"),
        3,
        ("flows/broken.py:4", "syntax error"),
        mutate=_broken_flow_file,
    ),
    Case(
        "discover still lists the other flows beside a file with a syntax error",
        ("discover",),
        0,
        ("hello", "daily-etl", "async-report", "flows/broken.py:4: syntax error"),
        mutate=_broken_flow_file,
    ),
    Case(
        "two files with one flow name get a deployment each, named after their files",
        ("validate",),
        0,
        (
            "flow name 'hello' is defined in 2 places",
            "hello/dup (flows/dup.py:other)",
            "hello/hello (flows/hello.py:hello)",
        ),
        mutate=lambda root: write(root, "flows/dup.py", flow_source("hello", "other")),
    ),
    Case(
        "two files with one flow name and one deployment name set by hand name both files",
        ("validate",),
        3,
        ("deployment 'hello/same' is used by 2 deployments", "flows/dup.py:other", "flows/hello.py:hello"),
        mutate=lambda root: (
            write(root, "flows/dup.py", flow_source("hello", "other")),
            append(root, "settings.toml", '\n[default.flows.hello]\nname = "same"\n'),
        ),
    ),
    Case(
        "a flow file that is not UTF-8 is skipped by deploy, named",
        ("deploy",),
        0,
        ("skipped flows/latin.py:1: not valid UTF-8",),
        mutate=lambda root: write(root, "flows/latin.py", b"# caf\xe9\nfrom prefect import flow\n"),
        server=True,
        changes_server=True,
    ),
    Case(
        "a symlink to itself under flows is named as a loop",
        ("validate",),
        0,
        ("skipped flows/loop", "symlink loop"),
        mutate=_symlink_to_itself,
    ),
    Case(
        "a symlink back to a parent folder under flows is named as a loop",
        ("deploy",),
        0,
        ("skipped flows/sub/up", "symlink loop"),
        mutate=_symlink_to_parent,
        server=True,
        changes_server=True,
    ),
    Case(
        "an empty flows folder is an error naming the folder",
        ("deploy",),
        3,
        ("no flows found under flows",),
        mutate=_empty_flows,
        server=True,
    ),
    # -- work pools
    Case(
        "a work pool missing on the server names the pool and the deployment",
        ("deploy", "--flow", "hello"),
        3,
        ("work pool 'badin-missing' does not exist", "deployment 'hello/hello'", "process pool"),
        env={"DEPLOY_WORK_POOL__PYTHON": "badin-missing"},
        server=True,
    ),
    Case(
        "a work pool of the wrong type names both types",
        ("deploy", "--flow", "hello"),
        3,
        (f"work pool '{DOCKER_POOL}' is a 'docker' pool", "need a 'process' pool", "hello/hello"),
        env={"DEPLOY_WORK_POOL__PYTHON": DOCKER_POOL},
        server=True,
    ),
    Case(
        "a job variable the pool type does not know names the key and the template",
        ("deploy", "--flow", "hello"),
        3,
        ("job_variables.foo_var: unknown key", DEV_TEMPLATE, "deployment 'hello'"),
        mutate=lambda root: replace_in(
            root, DEV_TEMPLATE, "  stream_output: true\n", "  stream_output: true\n  foo_var: 1\n"
        ),
        server=True,
    ),
    Case(
        "a job variable the server's pool template does not define names the variable and pool",
        ("deploy", "--flow", "hello"),
        3,
        ("job variable 'working_dir' is not defined by work pool 'badin-narrow'", "hello/hello"),
        env={"DEPLOY_WORK_POOL__PYTHON": NARROW_POOL},
        server=True,
    ),
    # -- the server's answers
    Case(
        "an unreachable API names the URL after bounded retries",
        ("deploy", "--flow", "hello"),
        1,
        ("http://127.0.0.1:{port}/api", "cannot connect", "attempts", "is the server running?"),
        setup=_unreachable,
        server=True,
    ),
    Case(
        "bad input beside an unreachable API is named first, and nothing else is printed",
        ("deploy",),
        3,
        ("job_variables.stream_output: must be true or false", "nothing was written"),
        mutate=lambda root: replace_in(
            root, DEV_TEMPLATE, "  stream_output: true\n", "  stream_output: maybe\n"
        ),
        setup=_unreachable,
        absent=("cannot connect", "Task exception", "Traceback", "never retrieved"),
    ),
    Case(
        "HTTP 401 names the status and says to check the API key without printing it",
        ("deploy", "--flow", "hello"),
        1,
        ("HTTP 401", "Unauthorized", "check api_key"),
        setup=_setup_401,
        server=True,
        absent=(SECRET_API_KEY,),
    ),
    Case(
        "HTTP 422 for one deployment names it and applies the other (partial, exit 4)",
        ("deploy", "--flow", "{flow0}", "--flow", "{flow1}"),
        4,
        (
            "1 of 2 deployment(s) failed",
            "{flow0}/{flow0}",
            "HTTP 422",
            "injected rejection",
            "the other 1 were applied",
        ),
        setup=_setup_422_one,
        server=True,
        check=_check_422_one,
        changes_server=True,
    ),
    Case(
        "a 503 that clears on retry still deploys",
        ("deploy", "--flow", "{flow0}"),
        0,
        ("{flow0}", "created"),
        setup=_setup_503_clears,
        server=True,
        check=_check_503_clears,
        changes_server=True,
    ),
    Case(
        "a 503 that persists gives up after bounded retries and says nothing was written",
        ("deploy", "--flow", "{flow0}"),
        1,
        (
            "HTTP 503",
            "{flow0}/{flow0}",
            "after 6 attempts",
            "bounded retries",
            "nothing was written",
        ),
        setup=_setup_503_persists,
        server=True,
        check=_check_503_persists,
    ),
    # -- the lock
    Case(
        "a second run while another process holds the lock exits 75 naming pid and start",
        ("deploy", "--flow", "hello"),
        75,
        (
            "another run holds the lock of environment 'development'",
            "pid {pid}",
            "pytest holder",
            "running since",
            "--lock-timeout",
        ),
        setup=_hold_lock,
        server=True,
    ),
    # -- the run task, without prompts
    Case(
        "run of a deployment that does not exist names it",
        ("run", "no-such-flow", "--no-wait"),
        3,
        ("no deployment named 'no-such-flow'",),
        server=True,
    ),
]


def _fill(text: str, values: Mapping[str, Any]) -> str:
    return text.format(**values) if "{" in text and values else text


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=[pytest.mark.e2e] if c.server else []) for c in CASES],
)
def test_bad_input_fails_cleanly(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = make_project(tmp_path / "project")
    url = request.getfixturevalue("server") if case.server else None
    with contextlib.ExitStack() as stack:
        h = Harness(root, url, stack)
        env: dict[str, str] = server_env(url) if url else {}
        if case.mutate is not None:
            case.mutate(root)
        if case.setup is not None:
            case.setup(h)
        env.update(case.env)
        env.update(h.env)
        before = deployments(url) if url else []
        try:
            ran = invoke(root, *(_fill(a, h.vars) for a in case.args), env=env)
            after = deployments(url) if url else []
            assert ran.code == case.code, ran.output
            assert "Traceback" not in ran.output
            for text in case.expect:
                assert _fill(text, h.vars) in ran.output, ran.output
            for text in (*case.absent, *SECRETS):
                assert text not in ran.output
            if url and not case.changes_server:
                assert after == before, "the server's deployments changed"
            if case.check is not None:
                case.check(h, ran)
        finally:
            if url and case.changes_server:
                old = {row[0] for row in before}
                run_async(_delete(url, [row[0] for row in deployments(url) if row[0] not in old]))


def test_there_are_at_least_thirty_bad_input_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# -- secrets never printed -------------------------------------------------------------------

# The values before and after a rotation: the old ones are still on the server when the
# plan is made, so the masker cannot learn them from the settings.
OLD_SECRETS = {
    "api_key": "pnu_rotated_away_api_key_0d1e",
    "DB_PASSWORD": "old-db-password-93ac",
    "DATABASE_URL": "postgresql://app:old-url-pw-58f0@db.internal/app",
    "SERVICE_TOKEN": "old-token-from-env-2b6d",
}
NEW_SECRETS = {
    "api_key": SECRET_API_KEY,
    "DB_PASSWORD": SECRET_DB_PASSWORD,
    "DATABASE_URL": "postgresql://app:new-url-pw-11c4@db.internal/app",
    "SERVICE_TOKEN": SECRET_TOKEN,
}
RAW_SECRETS = (
    *OLD_SECRETS.values(),
    *NEW_SECRETS.values(),
    "old-url-pw-58f0",
    "new-url-pw-11c4",
)


def plant_secrets(root: Path, values: Mapping[str, str] = NEW_SECRETS) -> dict[str, str]:
    """A private .secrets.toml with an API key and two job env vars (DATABASE_URL is not
    named like a secret: it is one because it lives in .secrets.toml), and the DEPLOY_
    variable of a third, secret by its name.  Returns the environment to run with."""
    write(
        root,
        ".secrets.toml",
        f'[default]\napi_key = "{values["api_key"]}"\n\n'
        f'[default.env_vars]\nDB_PASSWORD = "{values["DB_PASSWORD"]}"\n'
        f'DATABASE_URL = "{values["DATABASE_URL"]}"\n',
    )
    (root / ".secrets.toml").chmod(0o600)
    return {"DEPLOY_ENV_VARS__SERVICE_TOKEN": values["SERVICE_TOKEN"]}


# (args, exit code, where the masked values must show: output, files or nowhere to see)
SECRET_COMMANDS = [
    pytest.param(("config",), 0, "output", id="config"),
    pytest.param(("config", "--explain"), 0, "output", id="config --explain"),
    pytest.param(("config", "--json", "--explain"), 0, "output", id="config --json"),
    pytest.param(("render", "--out", "rendered"), 0, "files", id="render to files"),
    pytest.param(
        ("render", "--out", "rendered", "--format", "json", "--prefect-yaml"),
        0,
        "files",
        id="render json and prefect.yaml",
    ),
    pytest.param(("validate", "--json"), 0, "", id="validate --json"),
    pytest.param(("plan", "--flow", "{flow}"), 2, "output", id="plan of a rotation"),
    pytest.param(
        ("plan", "--json", "--flow", "{flow}"), 2, "output", id="plan --json of a rotation"
    ),
    pytest.param(
        ("deploy", "--flow", "{flow}", "--log-file", "deploy.log"),
        0,
        "output",
        id="deploy of a rotation with a log file",
    ),
    pytest.param(("deploy", "--json", "--flow", "{flow}"), 0, "", id="deploy --json of a rotation"),
    pytest.param(
        ("deploy", "--dry-run", "--json", "--flow", "{flow}"),
        2,  # a rotated secret is a change pending
        "output",
        id="deploy --dry-run --json of a rotation",
    ),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("args", "code", "masked_in"), SECRET_COMMANDS)
def test_no_secret_appears_in_any_output(
    args: tuple[str, ...], code: int, masked_in: str, tmp_path: Path, server: str
) -> None:
    root = make_project(tmp_path / "project")
    flow = f"secret-probe-{uuid.uuid4().hex[:8]}"
    write(root, "flows/secret_probe.py", flow_source(flow))
    base = server_env(server)
    before = {row[0] for row in deployments(server)}
    try:
        if args[0] in ("plan", "deploy"):
            # Deployed with the old values, then rotated: the plan diffs the env vars.
            first = invoke(
                root, "deploy", "--flow", flow, env={**base, **plant_secrets(root, OLD_SECRETS)}
            )
            assert first.code == 0, first.output
        env = {**base, **plant_secrets(root)}
        ran = invoke(root, *(a.format(flow=flow) for a in args), env=env)
        assert ran.code == code, ran.output
        assert "Traceback" not in ran.output
        files = [
            p
            for p in root.rglob("*")
            if p.is_file() and p.name != ".secrets.toml" and p.parent.name != "__pycache__"
        ]
        written = "\n".join(p.read_text(errors="replace") for p in files)
        if masked_in:
            shown = ran.output if masked_in == "output" else written
            # A rotated secret kept in a Secret block is said to have changed, never shown.
            assert "****" in shown or "secret changed" in shown, shown
        for secret in RAW_SECRETS:
            assert secret not in ran.output
            assert secret not in written
    finally:
        run_async(_delete(server, [row[0] for row in deployments(server) if row[0] not in before]))


@pytest.mark.e2e
def test_a_deployed_secret_reaches_the_server_but_not_the_output(
    tmp_path: Path, server: str
) -> None:
    """The masked values are the real ones: the server holds them (in Secret blocks the
    deployment refers to, never in the deployment), the output never."""
    root = make_project(tmp_path / "project")
    env = {**server_env(server), **plant_secrets(root)}
    flow = f"secret-probe-{uuid.uuid4().hex[:8]}"
    write(root, "flows/secret_probe.py", flow_source(flow))
    before = {row[0] for row in deployments(server)}
    try:
        ran = invoke(root, "deploy", "--flow", flow, env=env)
        assert ran.code == 0, ran.output
        again = invoke(root, "plan", "--json", "--flow", flow, env=env)
        assert again.code == 0, again.output

        async def job_env() -> dict[str, Any]:
            async with PrefectApi(server) as api:
                found = await api.read_deployment_by_name(flow, flow)
            assert found is not None
            return dict(found["job_variables"]["env"])

        live = run_async(job_env())

        async def block_value(reference: str) -> Any:
            name = reference.removeprefix("{{ prefect.blocks.secret.").removesuffix(" }}")
            async with PrefectApi(server) as api:
                path = f"block_types/slug/secret/block_documents/name/{name}?include_secrets=true"
                return (await api._request("GET", path)).json()["data"]["value"]

        for name in ("DB_PASSWORD", "DATABASE_URL", "SERVICE_TOKEN"):
            assert live[name].startswith("{{ prefect.blocks.secret.deploy-lib-"), live[name]
            assert run_async(block_value(live[name])) == NEW_SECRETS[name]
        for secret in RAW_SECRETS:
            assert secret not in ran.output + again.output
            assert secret not in json.dumps(live)
    finally:
        run_async(_delete(server, [row[0] for row in deployments(server) if row[0] not in before]))


# -- the secrets file's permissions, the .gitignore ----------------------------------------


@pytest.mark.parametrize("task", ["config", "render", "validate", "discover"])
def test_a_secrets_file_readable_by_others_is_warned_about_once(tmp_path: Path, task: str) -> None:
    root = make_project(tmp_path / "project")
    plant_secrets(root)
    (root / ".secrets.toml").chmod(0o644)
    ran = invoke(root, task)
    assert ran.code == 0, ran.output
    warning = "readable by group or others (mode 0644); run: chmod 600 .secrets.toml"
    assert ran.stderr.count(warning) == 1, ran.stderr
    assert ".secrets.toml" in ran.stderr


def test_a_private_secrets_file_gets_no_warning(tmp_path: Path) -> None:
    root = make_project(tmp_path / "project")
    plant_secrets(root)
    mode = stat.S_IMODE((root / ".secrets.toml").stat().st_mode)
    assert mode == 0o600
    ran = invoke(root, "config")
    assert ran.code == 0, ran.output
    assert "readable by group or others" not in ran.output


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".secrets.toml", True),
        (".env", True),
        (".env.staging", True),
        (".env.example", False),
        (".prefect/prefect.db", True),
        ("settings.toml", False),
    ],
    ids=lambda value: str(value),
)
def test_the_gitignore_keeps_secrets_and_server_state_out(path: str, ignored: bool) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a checkout")
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode == 0) is ignored, done.stderr


# -- no prompts when stdin is not a terminal -------------------------------------------------


@pytest.mark.e2e
def test_deploy_plan_and_run_finish_with_stdin_closed(tmp_path: Path, server: str) -> None:
    """As cron runs them: no terminal, stdin closed. Each must finish on its own."""
    root = make_project(tmp_path / "project")
    flow = f"cron-probe-{uuid.uuid4().hex[:8]}"
    write(root, "flows/cron_probe.py", flow_source(flow))
    env = server_env(server)
    before = {row[0] for row in deployments(server)}
    started = time.monotonic()
    try:
        planned = invoke(root, "plan", "--flow", flow, env=env, timeout=60)
        assert planned.code == 2, planned.output  # changes pending
        deployed = invoke(root, "deploy", "--flow", flow, env=env, timeout=60)
        assert deployed.code == 0, deployed.output
        unchanged = invoke(root, "plan", "--flow", flow, env=env, timeout=60)
        assert unchanged.code == 0, unchanged.output
        ran = invoke(root, "run", flow, "--no-wait", env=env, timeout=60)
        assert ran.code == 0, ran.output
        assert f"of {flow}/{flow}" in ran.output
        for result in (planned, deployed, unchanged, ran):
            assert "Traceback" not in result.output
    finally:
        run_async(_delete(server, [row[0] for row in deployments(server) if row[0] not in before]))
    assert time.monotonic() - started < 120


@pytest.mark.e2e
def test_a_short_secret_is_masked_by_its_key_in_plan_diffs_and_json(
    tmp_path: Path, server: str
) -> None:
    """Three characters are too short to mask by value (they would mask ordinary text),
    so a secret that short is masked wherever its key is shown."""
    root = make_project(tmp_path / "project")
    flow = f"pin-probe-{uuid.uuid4().hex[:8]}"
    write(root, "flows/pin_probe.py", flow_source(flow))
    base = server_env(server)
    before = {row[0] for row in deployments(server)}

    def with_pin(pin: str) -> dict[str, str]:
        write(root, ".secrets.toml", f'[default.env_vars]\nPIN_CODE = "{pin}"\n')
        (root / ".secrets.toml").chmod(0o600)
        return base

    try:
        first = invoke(root, "deploy", "--flow", flow, env=with_pin("Q#1"))
        assert first.code == 0, first.output
        shown = invoke(root, "plan", "--flow", flow, env=with_pin("Q#2"))
        as_json = invoke(root, "plan", "--json", "--flow", flow, env=with_pin("Q#2"))
        assert shown.code == as_json.code == 2, shown.output + as_json.output
        # In a Secret block, a changed value is said as such.
        assert 'secrets.PIN_CODE: "(stored)" -> "secret changed"' in shown.output
        # Kept in the job variables (secret_blocks = false), it is masked by its key.
        plain = {**base, "DEPLOY_SECRET_BLOCKS": "false"}
        with_pin("Q#1")
        assert invoke(root, "deploy", "--flow", flow, env=plain).code == 0
        with_pin("Q#2")
        shown_plain = invoke(root, "plan", "--flow", flow, env=plain)
        as_json = invoke(root, "plan", "--json", "--flow", flow, env=plain)
        assert 'job_variables.env.PIN_CODE: "****" -> "****"' in shown_plain.output
        diff = [
            d
            for c in json.loads(as_json.stdout)["changes"]
            for d in c["diff"]
            if d["path"] == "job_variables.env.PIN_CODE"
        ]
        assert [(d["old"], d["new"]) for d in diff] == [("****", "****")]
        for ran in (shown, shown_plain, as_json):
            assert "Q#1" not in ran.output and "Q#2" not in ran.output
    finally:
        run_async(_delete(server, [row[0] for row in deployments(server) if row[0] not in before]))


def test_debug_shows_the_traceback_with_secrets_masked(tmp_path: Path) -> None:
    """A secret inside an error's message (here a pool named like the secret's value)
    is masked in the --debug traceback too."""
    root = make_project(tmp_path / "project")
    plant_secrets(root)
    ran = invoke(root, "validate", "--debug", env={"DEPLOY_ENTRYPOINT_STYLE": SECRET_DB_PASSWORD})
    assert ran.code == 3, ran.output
    assert "Traceback" in ran.output and "****" in ran.output
    for secret in SECRETS:
        assert secret not in ran.output
