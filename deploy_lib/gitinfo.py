"""What git says about the project: commit, branch and whether the tree is dirty.

One ``git status`` call through the git CLI. Outside a repository, without git on
PATH, or in a repository without commits, nothing is raised: the values fall back to
``UNKNOWN`` ("unknown") for ``sha``, ``short_sha`` and ``branch``, ``dirty`` is False and
``is_repo`` is False, so callers can tell and choose their own fallback (build uses the
image tag ``latest`` and says so in a warning).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from deploy_lib.models import UNKNOWN, GitInfo

SHORT_SHA_LENGTH = 12


def git_info(root: str | os.PathLike[str]) -> GitInfo:
    """Ask git about the repository holding ``root``; runs ``git status`` once.

    Never raises: a non-repository, a missing git executable or a failing git all give
    ``GitInfo()`` with ``UNKNOWN`` values.
    """
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=Path(root),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            # Keep the user's git config from paging or prompting; no other env changes.
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return GitInfo()
    if proc.returncode != 0:
        return GitInfo()
    return _parse_status(proc.stdout)


def _parse_status(output: str) -> GitInfo:
    sha = UNKNOWN
    branch = UNKNOWN
    dirty = False
    for line in output.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2].strip()
            sha = oid if oid != "(initial)" else UNKNOWN
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2].strip()
            branch = "HEAD" if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
    if sha == UNKNOWN:
        # A repository without commits has nothing to name the code by.
        return GitInfo(branch=branch, dirty=dirty)
    return GitInfo(sha=sha, short_sha=sha[:SHORT_SHA_LENGTH], branch=branch, dirty=dirty)
