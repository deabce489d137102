"""What many test modules need, in one place: a project tree built in ``tmp_path``, the
command line run as a user runs it, and the local Prefect server.

- ``make_project(root, files=..., example_flows=...)`` copies this repository's project
  files (settings.toml, tasks.py, templates/, flows/) into ``root`` and writes ``files``
  (relative path -> text) over them;
- ``write_files(root, files)`` writes text files, making their folders;
- ``invoke(root, *args, env=..., timeout=...)`` runs ``python -m invoke ARGS`` in
  ``root`` with stdin closed, in a clean environment (``cli_env``), and returns the
  ``subprocess.CompletedProcess`` (text, never waiting forever);
- ``local_server(root, **options)`` is the project's embedded server, as the pipeline
  makes it (conftest's ``local_server`` fixture starts one per session);
- ``ensure_postgres_installed()`` installs the system's PostgreSQL when it is missing
  (as root, with apt-get), for the session's PostgreSQL-backed server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy_lib import pipeline
from deploy_lib.server import LocalServer

REPO = Path(__file__).resolve().parents[1]
# What a project needs to run the tasks: the repository's own files.
PROJECT_FILES = ("settings.toml", "tasks.py", "templates", "flows")
# Variables of the caller that would change what a run reads or where it connects.
_DROPPED_PREFIXES = ("DEPLOY_", "PREFECT_API_", "PREFECT_PROFILE")


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write each ``relative path -> text`` under ``root`` (folders made); ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def make_project(
    root: Path,
    files: Mapping[str, str] | None = None,
    *,
    example_flows: bool = True,
    names: tuple[str, ...] = PROJECT_FILES,
) -> Path:
    """A copy of this repository's project files in ``root`` (without ``flows/`` unless
    ``example_flows``), then ``files`` written over it.  Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "flows" and not example_flows:
            continue
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        else:
            shutil.copy2(source, root / name)
    return write_files(root, files or {})


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without DEPLOY_*, Dynaconf or Prefect API variables,
    with deploy_lib importable, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_DROPPED_PREFIXES) and not k.endswith("_FOR_DYNACONF")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def invoke(
    root: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
    **options: Any,
) -> subprocess.CompletedProcess[str]:
    """``python -m invoke ARGS`` in ``root`` (its tasks.py), as a user runs it: stdin
    closed, the environment clean plus ``env``; ``options`` go to ``subprocess.run``."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=root,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,
    )


def local_server(root: Path, **options: Any) -> LocalServer:
    """The embedded Prefect server of the project at ``root``."""
    return pipeline.local_server(root, **options)


def ensure_postgres_installed() -> None:
    """PostgreSQL's server programs, installed from the system's packages when missing
    (as root, with apt-get, as on CI and a fresh machine); otherwise the test session
    stops and says how to install them."""
    from deploy_lib.errors import ServerError
    from deploy_lib.server import INSTALL_HINT, postgres_bindir

    try:
        postgres_bindir()
        return
    except ServerError:
        pass
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"the PostgreSQL tests need PostgreSQL's server programs; {INSTALL_HINT}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        subprocess.run(command, check=True, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, timeout=900)
    postgres_bindir()  # raises with the hint if the install did not bring them
