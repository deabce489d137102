"""deploy_lib.lock: one run per environment at a time, and no stale lock after a crash.

The other holder is always a real separate process (a small Python script that takes
the lock and reports it), because ``fcntl.flock`` is what two cron runs would contend
on; it is stopped by its pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env

from deploy_lib.errors import EXIT_LOCKED, LockHeld
from deploy_lib.lock import env_lock, lock_path

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from deploy_lib.lock import env_lock

with env_lock(Path(sys.argv[1]), sys.argv[2], command="holder script"):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def child_env() -> dict[str, str]:
    return cli_env()


@contextmanager
def holder(root: Path, env: str, seconds: float = 60.0) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding ``env``'s lock for ``seconds`` (killed on the way out)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), env, str(seconds)],
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_second_holder_gets_lock_held_naming_the_holders_pid_and_start(tmp_path: Path) -> None:
    with (
        holder(tmp_path, "staging") as other,
        pytest.raises(LockHeld) as caught,
        env_lock(tmp_path, "staging"),
    ):
        pytest.fail("the lock was granted twice")
    error = caught.value
    assert error.exit_code == EXIT_LOCKED == 75
    message = str(error)
    assert f"another run holds the lock of environment 'staging': pid {other.pid}" in message
    assert "(holder script)" in message
    assert str(lock_path(tmp_path, "staging")) in message
    match = re.search(r"running since (\S+);", message)
    assert match, message
    started = datetime.fromisoformat(match.group(1))
    assert abs(datetime.now(timezone.utc) - started) < timedelta(minutes=1)


def test_a_waiting_run_gets_the_lock_once_the_holder_finishes(tmp_path: Path) -> None:
    with holder(tmp_path, "staging", seconds=1.0):
        started = time.monotonic()
        with env_lock(tmp_path, "staging", timeout=20):
            waited = time.monotonic() - started
    assert 0.3 < waited < 10, waited


def test_a_waiting_run_gives_up_at_its_timeout(tmp_path: Path) -> None:
    with holder(tmp_path, "staging"):
        started = time.monotonic()
        with (
            pytest.raises(LockHeld, match=r"after waiting 0\.5 s"),
            env_lock(tmp_path, "staging", timeout=0.5),
        ):
            pass
        waited = time.monotonic() - started
    assert 0.5 <= waited < 3, waited


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    with holder(tmp_path, "production") as other:
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
        assert lock_path(tmp_path, "production").exists(), "the file stays; the lock does not"
        started = time.monotonic()
        with env_lock(tmp_path, "production", timeout=0):
            assert time.monotonic() - started < 0.5
            record = lock_path(tmp_path, "production").read_text()
            assert f'"pid": {os.getpid()}' in record


def test_different_environments_do_not_block_each_other(tmp_path: Path) -> None:
    with (
        holder(tmp_path, "staging"),
        env_lock(tmp_path, "production", timeout=0),
        pytest.raises(LockHeld),
        env_lock(tmp_path, "staging", timeout=0),
    ):
        pass


def test_a_released_lock_keeps_no_holder_record(tmp_path: Path) -> None:
    with env_lock(tmp_path, "development", command="invoke deploy"):
        assert '"command": "invoke deploy"' in lock_path(tmp_path, "development").read_text()
    assert lock_path(tmp_path, "development").read_text() == ""


@pytest.mark.parametrize(
    ("lock_timeout", "waited"),
    [
        pytest.param("0", "", id="without waiting"),
        pytest.param("1", " after waiting 1 s", id="after waiting one second"),
    ],
)
def test_the_deploy_command_exits_75_while_another_process_holds_the_lock(
    tmp_path: Path, lock_timeout: str, waited: str
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("settings.toml", "tasks.py"):
        shutil.copy2(REPO / name, root / name)
    for name in ("templates", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = child_env()
    # The lock is taken before any connection; a closed port makes sure none is made.
    env["DEPLOY_API_URL"] = "http://127.0.0.1:9/api"
    with holder(root, "development") as other:
        done = subprocess.run(
            [sys.executable, "-m", "invoke", "deploy", "--lock-timeout", lock_timeout],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 75, output
    assert "Traceback" not in output
    assert f"pid {other.pid} (holder script), running since " in output
    assert f"{waited}; lock file " in output
    assert "--lock-timeout SECONDS" in output


def test_a_lock_file_that_cannot_be_opened_is_an_input_error_naming_it(
    tmp_path: Path, mocker: Any
) -> None:
    from deploy_lib.errors import EXIT_VALIDATION, InputError

    denied = PermissionError(13, "Permission denied")
    mocker.patch("deploy_lib.lock.os.open", side_effect=denied)
    with pytest.raises(InputError) as caught, env_lock(tmp_path, "dev"):
        pass
    assert caught.value.exit_code == EXIT_VALIDATION
    assert str(caught.value) == (
        f"{tmp_path / '.prefect' / 'locks' / 'dev.lock'}: cannot take the lock of "
        f"environment 'dev': Permission denied; nothing was written (the lock needs a "
        f"writable folder {tmp_path / '.prefect' / 'locks'} and a file there)"
    )


def _project(root: Path) -> Path:
    root.mkdir()
    for name in ("settings.toml", "tasks.py"):
        shutil.copy2(REPO / name, root / name)
    for name in ("templates", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _wait_for(check: Any, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.05)


def _opened(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux: its /proc fd links)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:
        return False


def test_sigterm_while_waiting_for_the_lock_exits_143_and_leaves_the_holders_record(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path / "project")
    log = tmp_path / "deploy.log"
    env = {**child_env(), "DEPLOY_API_URL": "http://127.0.0.1:9/api"}
    with holder(root, "development") as other:
        record = lock_path(root, "development").read_text()
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy", "--lock-timeout", "120",
             "--log-file", str(log)],
            cwd=root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        _wait_for(lambda: _opened(proc.pid, lock_path(root, "development")), "the lock opened")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, out + err
        assert "interrupted by SIGTERM" in err and "Traceback" not in out + err
        assert lock_path(root, "development").read_text() == record
        assert other.poll() is None
    assert "interrupted by SIGTERM (exit 143)" in log.read_text()


def test_sigterm_while_holding_the_lock_releases_it_with_no_record_left(tmp_path: Path) -> None:
    """The server accepts and never answers: the deploy holds the lock, waiting."""
    root = _project(tmp_path / "project")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    env = {**child_env(), "DEPLOY_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api"}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "deploy"],
            cwd=root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        path = lock_path(root, "development")

        def held() -> bool:
            text = path.read_text() if path.exists() else ""
            return f'"pid": {proc.pid}' in text

        _wait_for(held, "the deploy holding the lock")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        silent.close()
    assert proc.returncode == 143, out + err
    assert "interrupted by SIGTERM" in err and "Traceback" not in out + err
    assert path.read_text() == "", "no stale holder record"
    with env_lock(root, "development", timeout=0):
        pass  # and free at once
