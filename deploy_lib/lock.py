"""One run per environment at a time.

``env_lock(root, env)`` holds an exclusive ``fcntl.flock`` on
``<root>/.prefect/locks/<env>.lock``.  The kernel drops the lock when its holder exits,
however it exits, so a crashed run never leaves a stale lock behind; the file itself
only carries the holder's pid and start time for the message a second run prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from deploy_lib.errors import InputError, LockHeld

_POLL = 0.1


def lock_path(root: Path, env: str) -> Path:
    return Path(root) / ".prefect" / "locks" / f"{env}.lock"


@contextlib.contextmanager
def env_lock(root: Path, env: str, *, timeout: float = 0.0, command: str = "") -> Iterator[Path]:
    """Hold the lock of ``env`` for the ``with`` block.

    Waits up to ``timeout`` seconds for another holder, then raises ``LockHeld`` (exit
    75) naming the holder's pid, command and start time.  Side effects: creates the lock
    file and writes this process's pid into it.
    """
    path = lock_path(root, env)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot take the lock of environment {env!r}: "
            f"{exc.strerror or exc}; nothing was written (the lock needs a writable "
            f"folder {path.parent} and a file there)"
        ) from exc
    try:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(_held_message(path, env, timeout)) from None
                time.sleep(_POLL)
        record = {
            "pid": os.getpid(),
            "command": command,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _held_message(path: Path, env: str, timeout: float) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    who = f"pid {holder.get('pid', '?')}"
    if holder.get("command"):
        who += f" ({holder['command']})"
    since = f", running since {holder['started_at']}" if holder.get("started_at") else ""
    waited = f" after waiting {timeout:g} s" if timeout else ""
    return (
        f"another run holds the lock of environment {env!r}: {who}{since}{waited}; "
        f"lock file {path}. Wait for it to finish, or pass --lock-timeout SECONDS to wait"
    )
