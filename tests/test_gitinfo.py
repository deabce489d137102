"""git_info: commit, branch and dirtiness from the git CLI, never raising."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from deploy_lib.gitinfo import UNKNOWN, GitInfo, git_info


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "trunk")
    (tmp_path / "flow.py").write_text("x = 1\n")
    _git(tmp_path, "add", "flow.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_a_clean_repository_gives_its_commit_branch_and_not_dirty(repo: Path) -> None:
    info = git_info(repo)

    assert info.sha == _git(repo, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha)
    assert info.short_sha == info.sha[:12]
    assert info.branch == "trunk"
    assert info.dirty is False
    assert info.is_repo is True


def test_a_changed_tracked_file_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "flow.py").write_text("x = 2\n")

    assert git_info(repo).dirty is True


def test_an_untracked_file_does_not_make_the_tree_dirty(repo: Path) -> None:
    (repo / "scratch.txt").write_text("notes\n")

    assert git_info(repo).dirty is False


def test_a_subdirectory_of_the_repository_reports_the_same_commit(repo: Path) -> None:
    sub = repo / "flows"
    sub.mkdir()

    assert git_info(sub).sha == git_info(repo).sha


def test_a_detached_head_reports_branch_HEAD(repo: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")

    info = git_info(repo)

    assert info.branch == "HEAD"
    assert info.is_repo is True


def test_a_directory_outside_any_repository_gives_unknown_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    # Stop git from finding a repository above tmp_path.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    info = git_info(outside)

    assert info == GitInfo(sha=UNKNOWN, short_sha=UNKNOWN, branch=UNKNOWN, dirty=False)
    assert info.is_repo is False


def test_a_repository_without_commits_has_an_unknown_commit_but_a_branch(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "start")

    info = git_info(tmp_path)

    assert (info.sha, info.branch, info.is_repo) == (UNKNOWN, "start", False)


def test_without_git_on_the_path_nothing_is_raised(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))

    assert git_info(repo) == GitInfo()


def test_a_missing_directory_gives_unknown_values(tmp_path: Path) -> None:
    assert git_info(tmp_path / "does-not-exist") == GitInfo()


def test_to_dict_holds_what_templates_use(repo: Path) -> None:
    data = git_info(repo).to_dict()

    assert set(data) == {"sha", "short_sha", "branch", "dirty", "is_repo"}
