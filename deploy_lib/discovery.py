"""Find Prefect flows by reading their source: no user code is imported or run.

``discover_flows(root, roots, exclude)`` walks each flow root below the project root,
parses every ``.py`` file with :mod:`ast` and returns a :class:`Discovery`: the flows
found (as :class:`FlowMetadata`, sorted by path and line) and every problem met on the
way (as :class:`Problem`).  A bad file never stops the walk; it becomes a problem on
its path and the next file is read.

A function is a flow when one of its decorators resolves, through the module's own
imports, to ``prefect.flow`` or ``prefect.flows.flow``: ``@flow``, ``@flow(...)``,
``@prefect.flow``, ``@pf.flow(...)`` after ``import prefect as pf``, ``@pflow`` after
``from prefect import flow as pflow``.  A ``flow`` decorator that was not imported
from prefect is somebody else's decorator and is ignored.

This module deliberately imports neither prefect nor anything heavy: discovering a
thousand files takes a fraction of a second, where importing them takes many.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from deploy_lib import pysource
from deploy_lib.models import TYPE_REFERENCE, Discovery, FlowMetadata, Parameter, Problem
from deploy_lib.pysource import NotLiteral, Resolver, Scope, Unresolved

__all__ = [
    "SKIPPED_DIRS",
    "Discovery",
    "discover_flows",
    "find_flow",
    "flow_name_for",
]

# Folder names never walked into (hidden folders, starting with ".", are skipped too).
SKIPPED_DIRS = frozenset({".venv", "venv", "__pycache__", "tests"})
# What a flow decorator must resolve to, through the module's imports.
_FLOW_DECORATORS = frozenset({"prefect.flow", "prefect.flows.flow"})
# Prefect refuses these in flow names (prefect/types/names.py BANNED_CHARACTERS).
_BANNED_NAME_CHARACTERS = ("/", "%", "&", ">", "<")
_DOCKERFILE = "Dockerfile"
# A source file larger than this is not read (generated data, a device linked in).
MAX_FILE_BYTES = 8 * 2**20
_REQUIREMENTS = "requirements.txt"
_JSON_SCALARS = (str, int, float, bool, type(None))
_TOP_LEVEL_DEF = re.compile(r"^(?:async[ \t]+)?def[ \t]+(\w+)", re.MULTILINE)


def flow_name_for(function: str) -> str:
    """The name Prefect gives a flow without ``name=``: ``daily_etl`` -> ``daily-etl``."""
    return function.replace("_", "-")


def discover_flows(
    root: Path,
    roots: Sequence[str] = ("flows",),
    exclude: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
    follow_outside_links: bool = False,
) -> Discovery:
    """Parse every ``.py`` file under ``roots`` (relative to ``root``) and collect flows.

    ``exclude`` holds fnmatch patterns matched against each file's and folder's
    project-relative POSIX path (``flows/scratch/*``) and against its bare name
    (``scratch``, ``*_old.py``).  Reads files only; never imports or runs them.

    With ``cache_dir``, what each file held is kept there (``discovery.json``, keyed by
    the file's content; its size and mtime spare the read when they are unchanged and
    older than the cache), so an unchanged tree is discovered without parsing.  A
    corrupt, foreign or unwritable cache is ignored and rebuilt.

    A symlink met under the roots that leads outside the project root is not followed
    (a problem names it) unless ``follow_outside_links``; the roots themselves are
    walked wherever they lead, since the settings name them.
    """
    cache = _Cache.load(Path(cache_dir)) if cache_dir is not None else None
    walker = _Walker(Path(root), exclude, cache, follow_outside_links=follow_outside_links)
    walker.walk([str(entry) for entry in roots])
    if cache is not None:
        cache.save(set(walker.files))
    return walker.result()


def find_flow(discovery: Discovery, name_or_entrypoint: str) -> FlowMetadata | None:
    """The discovered flow that ``name_or_entrypoint`` names, or None.

    Accepts a flow name (``daily-etl``), a path entrypoint (``flows/etl/daily.py:daily_etl``,
    a leading ``./`` is ignored) or a module entrypoint (``flows.etl.daily:daily_etl``).
    """
    target = name_or_entrypoint.strip()
    for flow in discovery.flows:
        if flow.name == target:
            return flow
    parsed = _split_entrypoint(target)
    if parsed is None:
        return None
    path, module, function = parsed
    for flow in discovery.flows:
        if flow.function != function:
            continue
        if (path is not None and flow.path == path) or (
            module is not None and flow.module_path == module
        ):
            return flow
    return None


def _split_entrypoint(text: str) -> tuple[str | None, str | None, str] | None:
    """``a/b.py:f`` -> (path, None, f); ``a.b:f`` -> (None, module, f); else None."""
    if ":" not in text:
        return None
    left, function = text.rsplit(":", 1)
    if not left or not function:
        return None
    if left.endswith(".py"):
        posix = left.replace("\\", "/")
        while posix.startswith("./"):
            posix = posix[2:]
        return str(PurePosixPath(posix)), None, function
    return None, left, function


# --------------------------------------------------------------------------- walking


@dataclass
class _Found:
    """A flow as parsed, and the other project files its parameter types came from."""

    meta: dict[str, Any]
    problems: list[str]
    depends: tuple[str, ...] = ()


class _Walker:
    """Walks the flow roots once; collects flows, non-flow functions and problems."""

    def __init__(
        self,
        root: Path,
        exclude: Sequence[str],
        cache: _Cache | None = None,
        *,
        follow_outside_links: bool = False,
    ) -> None:
        self.root = os.path.abspath(root)
        patterns = [p.strip().removeprefix("./").rstrip("/") for p in exclude if p.strip()]
        self.exclude = (
            re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None
        )
        self.found: list[_Found] = []
        self.problems: list[Problem] = []
        self.files: dict[str, None] = {}
        self.functions: dict[str, tuple[str, ...]] = {}
        self.walked_real: set[str] = set()
        self.root_reals: list[str] = []
        self.resolver = Resolver(self._module_tree)
        self.cache = cache
        self.digests: dict[str, str] = {}
        self.follow_outside_links = follow_outside_links
        self.real_root = os.path.realpath(self.root)

    # -- public steps

    def walk(self, entries: Sequence[str]) -> None:
        """Walk each root once, in the order given; then flag roots that held no flow."""
        rel_roots = list(
            dict.fromkeys(r for r in map(self._relative_root, entries) if r is not None)
        )
        for rel_root in rel_roots:
            absolute = os.path.join(self.root, rel_root) if rel_root else self.root
            if os.path.isdir(absolute):
                self.root_reals.append(os.path.realpath(absolute))
        walked = [rel_root for rel_root in rel_roots if self._walk_root(rel_root)]
        for rel_root in walked:
            if not any(_is_under(item.meta["path"], rel_root) for item in self.found):
                self._problem(rel_root or ".", f"no flows found under {rel_root or '.'}")

    def _walk_root(self, rel_root: str) -> bool:
        """Walk one root; False (and a problem) when it is missing or not walkable."""
        absolute = os.path.join(self.root, rel_root) if rel_root else self.root
        shown = rel_root or "."
        if os.path.isfile(absolute) and absolute.endswith(".py"):
            folder = os.path.dirname(absolute)
            self._read_file(
                absolute,
                rel_root,
                _nearest(folder, _parent(rel_root), _DOCKERFILE),
                _nearest(folder, _parent(rel_root), _REQUIREMENTS),
            )
            return True
        if os.path.isdir(absolute):
            self._walk_dir(absolute, rel_root, os.path.realpath(absolute), None, None)
            return True
        if os.path.lexists(absolute) and not os.path.exists(absolute):
            self._problem(shown, f"flow root {shown} is a broken or looping symlink")
        elif os.path.exists(absolute):
            self._problem(shown, f"flow root {shown} is neither a folder nor a .py file")
        else:
            self._problem(shown, f"flow root {shown} does not exist")
        return False

    def result(self) -> Discovery:
        flows = self._finish_flows()
        problems = sorted(set(self.problems), key=lambda p: (p.path or "", p.line or 0, p.message))
        return Discovery(
            flows=tuple(flows),
            problems=tuple(problems),
            files=tuple(sorted(self.files)),
            functions=dict(sorted(self.functions.items())),
        )

    # -- helpers

    def _relative_root(self, entry: str) -> str | None:
        """The root's project-relative POSIX path ("" for the project root itself)."""
        joined = os.path.normpath(os.path.join(self.root, entry))
        if joined != self.root and not joined.startswith(self.root.rstrip(os.sep) + os.sep):
            self._problem(entry, f"flow root {entry} is outside the project root")
            return None
        rel = os.path.relpath(joined, self.root)
        return "" if rel == "." else PurePosixPath(Path(rel)).as_posix()

    def _problem(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(message=message, path=path, line=line))

    def _skipped(self, name: str, rel: str, is_dir: bool) -> bool:
        if name.startswith("."):
            return True
        if is_dir and name in SKIPPED_DIRS:
            return True
        return self.exclude is not None and bool(
            self.exclude.match(rel) or self.exclude.match(name)
        )

    def _walk_dir(
        self,
        absolute: str,
        rel: str,
        real: str,
        dockerfile: str | None,
        requirements: str | None,
    ) -> None:
        self.walked_real.add(real)
        try:
            with os.scandir(absolute) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            self._problem(rel or ".", f"cannot read folder: {exc.strerror or exc}")
            return
        names = {e.name for e in entries}
        prefix = f"{rel}/" if rel else ""
        if _DOCKERFILE in names and os.path.isfile(os.path.join(absolute, _DOCKERFILE)):
            dockerfile = prefix + _DOCKERFILE
        if _REQUIREMENTS in names and os.path.isfile(os.path.join(absolute, _REQUIREMENTS)):
            requirements = prefix + _REQUIREMENTS
        subdirs: list[tuple[os.DirEntry[str], str]] = []
        for entry in entries:
            child = prefix + entry.name
            is_link = entry.is_symlink()
            try:
                is_dir = entry.is_dir()
            except OSError:  # a looping symlink, on some platforms
                is_dir = False
            if self._skipped(entry.name, child, is_dir):
                continue
            if is_dir:
                subdirs.append((entry, child))
            elif entry.name.endswith(".py"):
                if is_link and not os.path.exists(entry.path):
                    self._problem(child, _broken_link_message(entry.path))
                    continue
                if is_link and self._leaves_project(child, entry.path, os.path.realpath(entry.path)):
                    continue
                self._read_file(entry.path, child, dockerfile, requirements)
            elif is_link and not os.path.exists(entry.path) and _is_link_loop(entry.path):
                self._problem(child, _broken_link_message(entry.path))
        for entry, child in subdirs:
            child_real = os.path.realpath(entry.path) if entry.is_symlink() else None
            if child_real is not None:
                if _is_within(real, child_real):
                    target = os.readlink(entry.path)
                    self._problem(
                        child,
                        f"symlink loop: {child} -> {target} points back to a folder that "
                        "contains it; not followed",
                    )
                    continue
                if any(_is_within(child_real, r) for r in self.root_reals) or (
                    child_real in self.walked_real
                ):
                    # The target is scanned at its own place already (or will be).
                    continue
                if self._leaves_project(child, entry.path, child_real):
                    continue
            else:
                child_real = os.path.join(real, entry.name)
            self._walk_dir(entry.path, child, child_real, dockerfile, requirements)

    def _leaves_project(self, child: str, link: str, real: str) -> bool:
        """A symlink whose target is outside the project (and outside every flow root's
        real place): a problem naming it, and not followed, unless the settings allow."""
        if self.follow_outside_links or any(
            _is_within(real, r) for r in (self.real_root, *self.root_reals)
        ):
            return False
        self._problem(
            child,
            f"symlink {child} -> {os.readlink(link)} leads outside the project root; not "
            "followed (set follow_outside_links = true to follow it)",
        )
        return True

    def _read_file(
        self, absolute: str, rel: str, dockerfile: str | None, requirements: str | None
    ) -> None:
        if rel in self.files:
            return
        self.files[rel] = None
        try:
            info = os.stat(absolute)
            if not stat.S_ISREG(info.st_mode):
                # A FIFO would block the read forever, a device (/dev/zero) never end.
                self._problem(rel, "not a regular file (a FIFO, device or socket); not read")
                return
            # The cache, by size and mtime (no read), then by content; its outcome holds
            # only while the files its types came from are as they were.
            outcome = self.cache.by_stat(rel, info) if self.cache else None
            if outcome is None or not self._dependencies_hold(outcome):
                data = _read_capped(absolute)
                digest = _digest(data)
                outcome = self.cache.by_content(rel, info, digest) if self.cache else None
                if outcome is None or not self._dependencies_hold(outcome):
                    outcome = self._analyse(rel, data)
                    if self.cache is not None:
                        self.cache.store(rel, info, digest, outcome, self._digests(outcome))
        except OSError as exc:
            self._problem(rel, f"cannot read file: {exc.strerror or exc}")
            return
        self.functions[rel] = outcome.functions
        for message, line in outcome.problems:
            self._problem(rel, message, line)
        for item in outcome.flows:
            meta = {**item.meta, "dockerfile": dockerfile, "requirements": requirements}
            self.found.append(_Found(meta, list(item.problems), item.depends))

    def _analyse(self, rel: str, data: bytes) -> _FileOutcome:
        """What one file's bytes hold: its flows, its other functions, its problems."""
        if len(data) > MAX_FILE_BYTES:
            message = f"larger than {MAX_FILE_BYTES // 2**20} MiB: not a flow file; not read"
            return _FileOutcome(problems=((message, None),))
        text = _decode(data)
        if isinstance(text, Problem):
            return _FileOutcome(problems=((text.message, text.line),))
        if not _could_define_flow(text):
            # No prefect import or no decorator that could be a flow's: skip the parse,
            # but keep its function names so an entrypoint into it gets a precise message.
            return _FileOutcome(functions=tuple(sorted(set(_TOP_LEVEL_DEF.findall(text)))))
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            return _FileOutcome(problems=((f"syntax error: {exc.msg}", exc.lineno),))
        except (ValueError, RecursionError, MemoryError) as exc:
            return _FileOutcome(problems=((f"cannot parse: {exc}", None),))
        parsed = _parse_module(tree, rel, self.resolver)
        return _FileOutcome(functions=parsed.other_functions, flows=tuple(parsed.flows))

    def _digests(self, outcome: _FileOutcome) -> dict[str, str]:
        """The content digest of every other file the outcome's flows were read from."""
        out: dict[str, str] = {}
        for item in outcome.flows:
            for rel in item.depends:
                out[rel] = self._current_digest(rel)
        return out

    def _current_digest(self, rel: str) -> str:
        if rel not in self.digests:
            try:
                self.digests[rel] = _digest(_read_capped(os.path.join(self.root, rel)))
            except OSError:
                self.digests[rel] = ""
        return self.digests[rel]

    def _dependencies_hold(self, outcome: _FileOutcome) -> bool:
        """A cached outcome is good only while the files its types came from are as then."""
        return all(
            self._current_digest(rel) == digest for rel, digest in outcome.depends.items()
        )

    def _finish_flows(self) -> list[FlowMetadata]:
        # One flow name in several files is legal (one flow, several deployments):
        # build gives each its own deployment name.
        for item in self.found:
            for message in item.problems:
                self._problem(item.meta["path"], message, item.meta["line"])
        flows = [FlowMetadata(**item.meta, problems=tuple(item.problems)) for item in self.found]
        flows.sort(key=lambda f: (f.path, f.line, f.function))
        return flows

    def _module_tree(self, rel: str) -> ast.Module | None:
        """The parsed project file at ``rel`` (for following imports), else None:
        outside the root, not a regular file, too large, undecodable or unparsable."""
        absolute = os.path.normpath(os.path.join(self.root, rel))
        if not _is_within(os.path.realpath(absolute), self.real_root):
            return None
        try:
            if not stat.S_ISREG(os.stat(absolute).st_mode):
                return None
            data = _read_capped(absolute)
        except OSError:
            return None
        self.digests[rel] = _digest(data)  # the cache records it: no second read
        text = _decode(data)
        if len(data) > MAX_FILE_BYTES or isinstance(text, Problem):
            return None
        try:
            return ast.parse(text, filename=rel)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


@dataclass(frozen=True)
class _FileOutcome:
    """What one file held; ``depends`` (for a cached outcome) maps each other file its
    flows' types were read from to that file's digest then."""

    functions: tuple[str, ...] = ()
    problems: tuple[tuple[str, int | None], ...] = ()
    flows: tuple[_Found, ...] = ()
    depends: Mapping[str, str] = field(default_factory=dict)


# A flow decorator: @flow, @prefect.flow(...), @pf.flow, @my_flow ... (what is parsed).
_DECORATOR = re.compile(r"^[ \t]*@[ \t]*[\w.]*flow\b", re.MULTILINE)
# ``from prefect import flow as step``: then @step is a flow decorator too.
_FLOW_ALIAS = re.compile(r"\bflow[ \t]+as[ \t]+(\w+)")
# ``from prefect import flow`` (one line or a parenthesised list): a file that imports
# the decorator is read even without a decorator in sight (a half-typed flow file).
_FLOW_IMPORT = re.compile(
    r"^[ \t]*from[ \t]+prefect(?:\.flows)?[ \t]+import[ \t]+"
    r"(?:\([^)]*\bflow\b[^)]*\)|[^\n(]*\bflow\b)",
    re.MULTILINE,
)


def _could_define_flow(text: str) -> bool:
    """Whether ``text`` may define a flow: it names prefect and imports prefect's flow
    or has a decorator that could be it (parsing decides); most library files that
    mention both words have neither."""
    if "prefect" not in text or "flow" not in text:
        return False
    if _DECORATOR.search(text) or _FLOW_IMPORT.search(text):
        return True
    return any(
        re.search(rf"^[ \t]*@[ \t]*{re.escape(alias)}\b", text, re.MULTILINE)
        for alias in _FLOW_ALIAS.findall(text)
    )


def _read_capped(path: str) -> bytes:
    """A file's bytes, at most one more than ``MAX_FILE_BYTES`` (so a huge one is told
    apart without reading it all)."""
    with open(path, "rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


def _digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


CACHE_FILE = "discovery.json"
# Anything that changes what a file's outcome holds bumps this: older caches are ignored.
_CACHE_VERSION = 1
# A file whose mtime is this close to the cache's own write may have changed within the
# clock's resolution after it was read: its size and mtime are not trusted.
_RACY_SECONDS = 2.0


class _Cache:
    """Each file's outcome, keyed by its project-relative path and its content digest.

    Read once, written once (atomically, mode 0600) when anything changed; a cache that
    cannot be read, is of another version or Python, or holds an entry of the wrong
    shape, counts as empty: it is never trusted, only rebuilt."""

    def __init__(self, folder: Path, entries: dict[str, dict[str, Any]], written: float) -> None:
        self.folder = folder
        self.entries = entries
        self.written = written
        self.changed = False

    @classmethod
    def load(cls, folder: Path) -> _Cache:
        try:
            with open(folder / CACHE_FILE, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("key") != _cache_key() or not isinstance(data.get("files"), dict):
                raise ValueError("another version's cache")
            return cls(folder, data["files"], float(data["written"]))
        except (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError):
            return cls(folder, {}, 0.0)

    def by_stat(self, rel: str, info: os.stat_result) -> _FileOutcome | None:
        """The outcome when size and mtime are those recorded, and older than the cache."""
        entry = self.entries.get(rel)
        if not isinstance(entry, dict) or entry.get("stat") != [info.st_size, info.st_mtime_ns]:
            return None
        if info.st_mtime_ns / 1e9 >= self.written - _RACY_SECONDS:
            return None
        return self._outcome(rel, entry)

    def by_content(self, rel: str, info: os.stat_result, digest: str) -> _FileOutcome | None:
        entry = self.entries.get(rel)
        if not isinstance(entry, dict) or entry.get("digest") != digest:
            return None
        outcome = self._outcome(rel, entry)
        if outcome is not None and entry.get("stat") != [info.st_size, info.st_mtime_ns]:
            entry["stat"] = [info.st_size, info.st_mtime_ns]  # touched, not changed
            self.changed = True
        return outcome

    def _outcome(self, rel: str, entry: dict[str, Any]) -> _FileOutcome | None:
        try:
            return _outcome_from(entry["outcome"], dict(entry.get("depends") or {}))
        except (KeyError, TypeError, ValueError, AttributeError):
            del self.entries[rel]
            self.changed = True
            return None

    def store(
        self,
        rel: str,
        info: os.stat_result,
        digest: str,
        outcome: _FileOutcome,
        depends: Mapping[str, str],
    ) -> None:
        self.entries[rel] = {
            "stat": [info.st_size, info.st_mtime_ns],
            "digest": digest,
            "outcome": _outcome_to(outcome),
            "depends": dict(depends),
        }
        self.changed = True

    def save(self, seen: set[str]) -> None:
        """Write the cache (dropping files no longer seen); a failure is ignored: the
        cache only saves time."""
        gone = set(self.entries) - seen
        if not self.changed and not gone:
            return
        for rel in gone:
            del self.entries[rel]
        document = {"key": _cache_key(), "written": time.time(), "files": self.entries}
        tmp = self.folder / f".{CACHE_FILE}.{os.getpid()}.tmp"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ignore = self.folder / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# made by deploy-lib: its discovery cache\n*\n")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, separators=(",", ":"))
            os.replace(tmp, self.folder / CACHE_FILE)
        except (OSError, TypeError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _cache_key() -> list[Any]:
    """What a cached outcome depends on besides the file: this format, the Python that
    judged it, and the code that read it (so a new version never trusts an old cache)."""
    code = [
        [os.path.getsize(module.__file__ or ""), os.path.getmtime(module.__file__ or "")]
        for module in (sys.modules[__name__], pysource)
    ]
    return [_CACHE_VERSION, list(sys.version_info[:2]), code]


def _outcome_to(outcome: _FileOutcome) -> dict[str, Any]:
    return {
        "functions": list(outcome.functions),
        "problems": [list(p) for p in outcome.problems],
        "flows": [
            {
                "meta": {
                    **item.meta,
                    "parameters": [asdict(p) for p in item.meta["parameters"]],
                    "notes": list(item.meta.get("notes") or ()),
                },
                "problems": list(item.problems),
                "depends": list(item.depends),
            }
            for item in outcome.flows
        ],
    }


def _outcome_from(data: Mapping[str, Any], depends: dict[str, str]) -> _FileOutcome:
    flows = []
    for item in data["flows"]:
        meta = dict(item["meta"])
        meta["parameters"] = tuple(Parameter(**p) for p in meta["parameters"])
        meta["notes"] = tuple(str(n) for n in meta.get("notes") or ())
        FlowMetadata(**meta, problems=tuple(item["problems"]))  # the shape must hold
        flows.append(_Found(meta, [str(p) for p in item["problems"]], tuple(item["depends"])))
    problems = tuple((str(m), None if line is None else int(line)) for m, line in data["problems"])
    return _FileOutcome(
        functions=tuple(str(f) for f in data["functions"]),
        problems=problems,
        flows=tuple(flows),
        depends={str(k): str(v) for k, v in depends.items()},
    )


def _parent(rel: str) -> str:
    parent = PurePosixPath(rel).parent.as_posix()
    return "" if parent == "." else parent


def _nearest(folder: str, rel_folder: str, name: str) -> str | None:
    """``name`` beside a single-file root (its folder is that root's top)."""
    if os.path.isfile(os.path.join(folder, name)):
        return f"{rel_folder}/{name}" if rel_folder else name
    return None


def _is_under(rel: str, rel_root: str) -> bool:
    return not rel_root or rel == rel_root or rel.startswith(rel_root + "/")


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_link_loop(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _broken_link_message(path: str) -> str:
    target = os.readlink(path)
    if _is_link_loop(path):
        return f"symlink loop: -> {target} never reaches a file; skipped"
    return f"broken symlink: -> {target} does not exist; skipped"


def _decode(data: bytes) -> str | Problem:
    """UTF-8 text (or the encoding a PEP 263 cookie declares), else a Problem."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        declared = _declared_encoding(data)
        if declared is not None:
            try:
                return data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                pass
        line = data[: exc.start].count(b"\n") + 1
        return Problem(
            message=(
                f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); "
                "save the file as UTF-8"
            ),
            line=line,
        )
    return text.removeprefix("\ufeff")


_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def _declared_encoding(data: bytes) -> str | None:
    for line in data.splitlines()[:2]:
        match = _CODING.match(line)
        if match:
            return match.group(1).decode("ascii")
    return None


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    flows: list[_Found]
    other_functions: tuple[str, ...]


def _parse_module(tree: ast.Module, rel: str, resolver: Resolver) -> _Parsed:
    module_path = _module_path(rel)
    scope = Scope.of(tree, rel, module_path, is_package=rel.endswith("__init__.py"))
    resolver.add_scope(scope)
    bindings = dict(scope.imports)
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for node in pysource.module_statements(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "prefect"
            and not node.level
            and any(alias.name == "*" for alias in node.names)
        ):
            bindings["flow"] = "prefect.flow"

    flows: list[_Found] = []
    others: set[str] = set()
    flow_functions: set[str] = set()
    for func in functions:
        decorator = _flow_decorator(func.decorator_list, bindings)
        if decorator is None:
            others.add(func.name)
            continue
        flow_functions.add(func.name)
        flows.append(_flow_from(func, decorator, rel, module_path, scope, resolver))
    return _Parsed(flows=flows, other_functions=tuple(sorted(others - flow_functions)))


def _module_path(rel: str) -> str:
    """models.module_path_for without pathlib (it runs once per flow)."""
    dotted = rel[:-3].replace("/", ".") if rel.endswith(".py") else rel.replace("/", ".")
    if dotted == "__init__" or dotted.endswith(".__init__"):
        dotted = dotted[: -len("__init__")].rstrip(".")
    return dotted


def _flow_decorator(decorators: Sequence[ast.expr], bindings: Mapping[str, str]) -> ast.expr | None:
    """The decorator that makes this function a Prefect flow, or None."""
    for decorator in decorators:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        dotted = pysource.dotted(target)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        bound = bindings.get(head)
        if bound is None:
            continue
        resolved = f"{bound}.{rest}" if rest else bound
        if resolved in _FLOW_DECORATORS:
            return decorator
    return None


_UNREADABLE = object()


def _keyword_value(
    decorator: ast.expr, keyword: str, scope: Scope, resolver: Resolver
) -> tuple[bool, Any, str]:
    """(found, value, source) of ``keyword=`` in a decorator call.

    ``value`` is the literal as Python computes it (f-strings, concatenation, module
    constants and enum values folded); ``_UNREADABLE`` when it cannot be known
    without running the module.
    """
    if not isinstance(decorator, ast.Call):
        return False, None, ""
    for kw in decorator.keywords:
        if kw.arg == keyword:
            source = ast.unparse(kw.value)
            try:
                value = resolver.fold(kw.value, scope)
            except (NotLiteral, RecursionError, MemoryError):
                return True, _UNREADABLE, source
            if isinstance(value, pysource.EnumMember):
                return True, _UNREADABLE, source
            return True, value, source
    if any(kw.arg is None for kw in decorator.keywords):
        return (
            True,
            _UNREADABLE,
            "**"
            + ", **".join(ast.unparse(kw.value) for kw in decorator.keywords if kw.arg is None),
        )
    return False, None, ""


def _flow_from(
    func: ast.FunctionDef | ast.AsyncFunctionDef,
    decorator: ast.expr,
    rel: str,
    module_path: str,
    scope: Scope,
    resolver: Resolver,
) -> _Found:
    problems: list[str] = []
    found, value, source = _keyword_value(decorator, "name", scope, resolver)
    name = flow_name_for(func.name)
    if found and value is _UNREADABLE:
        problems.append(
            f"flow name is not a string literal (name={source}); it cannot be read "
            "without running the module: use a literal string"
        )
    elif found and value and not isinstance(value, str):
        problems.append(f"flow name must be a string, not {type(value).__name__} ({source})")
    elif found and value:
        name = value  # Prefect: `name or fn.__name__...`, so "" and None mean the default
    banned = [c for c in _BANNED_NAME_CHARACTERS if c in name]
    if banned:
        problems.append(
            f"flow name {name!r} contains {', '.join(repr(c) for c in banned)}; Prefect "
            f"refuses any of {' '.join(_BANNED_NAME_CHARACTERS)} in names"
        )
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        # A newline or an escape sequence would forge log lines or clear the screen.
        problems.append(f"flow name {name!r} holds control characters; use printable text")

    found, value, _ = _keyword_value(decorator, "description", scope, resolver)
    # Prefect: `description or inspect.getdoc(fn)`: the whole cleaned docstring.
    doc = ast.get_docstring(func)
    description: str | None = None
    if found and isinstance(value, str) and value:
        description = value
    elif (not found or not value) and doc:
        description = doc

    notes = [
        f"decorated also with @{ast.unparse(d)}, which may change its signature: the "
        "parameters are read from the function as written"
        for d in func.decorator_list
        if d is not decorator
    ]
    resolver.used.clear()
    params = tuple(_parameters(func.args, scope, resolver))
    meta: dict[str, Any] = {
        "name": name,
        "function": func.name,
        "path": rel,
        "module_path": module_path,
        "is_async": isinstance(func, ast.AsyncFunctionDef),
        "description": description,
        "docstring": doc,
        "parameters": params,
        "line": func.lineno,
        "types": _closure(params, resolver.definitions),
        "notes": tuple(notes),
    }
    return _Found(meta=meta, problems=problems, depends=tuple(sorted(resolver.used - {rel})))


_REFERENCE = re.compile(re.escape(TYPE_REFERENCE) + r"\.(\w+)")


def _closure(params: Sequence[Parameter], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """The definitions the parameters refer to, and those they refer to in turn."""
    wanted = [k for p in params if p.resolved for k in _REFERENCE.findall(p.resolved)]
    out: dict[str, Any] = {}
    while wanted:
        key = wanted.pop()
        if key in out or key not in definitions:
            continue
        out[key] = definitions[key]
        for item in definitions[key].get("fields") or ():
            wanted += _REFERENCE.findall(str(item.get("annotation") or ""))
    return dict(sorted(out.items()))


def _parameters(args: ast.arguments, scope: Scope, resolver: Resolver) -> Iterator[Parameter]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = "positional_only" if index < len(args.posonlyargs) else "positional_or_keyword"
        yield _parameter(arg, default, kind, scope, resolver)
    if args.vararg is not None:
        yield _parameter(args.vararg, None, "var_positional", scope, resolver, required=False)
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        yield _parameter(arg, kw_default, "keyword_only", scope, resolver)
    if args.kwarg is not None:
        yield _parameter(args.kwarg, None, "var_keyword", scope, resolver, required=False)


def _parameter(
    arg: ast.arg,
    default: ast.expr | None,
    kind: str,
    scope: Scope,
    resolver: Resolver,
    *,
    required: bool = True,
) -> Parameter:
    annotation: str | None = None
    resolved: str | None = None
    note: str | None = None
    if arg.annotation is not None:
        ann = arg.annotation
        # A quoted annotation ("list[str]") stands for the text inside the quotes.
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            annotation = ann.value
        else:
            annotation = _source(ann)
        try:
            text = _source(resolver.annotation(ann, scope))
        except (Unresolved, RecursionError) as exc:
            note = str(exc) if isinstance(exc, Unresolved) else "the annotation nests too deeply"
        else:
            resolved = text if text != annotation else None
    if default is None:
        return Parameter(
            name=arg.arg, annotation=annotation, required=required, kind=kind,
            resolved=resolved, note=note,
        )
    value, is_literal = _default_value(default, scope, resolver)
    return Parameter(
        name=arg.arg,
        annotation=annotation,
        default=value,
        required=False,
        default_is_literal=is_literal,
        kind=kind,
        resolved=resolved,
        note=note,
    )


# Operands that never need parentheses beside "|" (a BinOp only on the left: a | b | c).
_UNION_MEMBERS = (ast.BinOp, ast.Name, ast.Attribute, ast.Subscript, ast.Constant)


def _source(node: ast.expr) -> str:
    """``ast.unparse(node)``, with a fast path for the usual annotation shapes.

    Names, dotted names, subscripts (``dict[str, int]``), ``X | Y`` and plain constants
    are written here directly (identical text, several times faster); anything else
    goes to ``ast.unparse``.
    """
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
        return f"{_source(node.value)}.{node.attr}"
    if isinstance(node, ast.Subscript) and isinstance(node.value, (ast.Name, ast.Attribute)):
        inner = node.slice
        if isinstance(inner, ast.Tuple) and inner.elts:
            return f"{_source(node.value)}[{', '.join(_source(e) for e in inner.elts)}]"
        if not isinstance(inner, (ast.Tuple, ast.Slice)):
            return f"{_source(node.value)}[{_source(inner)}]"
    elif (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.BitOr)
        and isinstance(node.left, _UNION_MEMBERS)
        and isinstance(node.right, _UNION_MEMBERS[1:])
    ):
        return f"{_source(node.left)} | {_source(node.right)}"
    elif isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, (bool, int)):
            return repr(value)
        if isinstance(value, str) and value.isprintable() and not any(c in value for c in "'\\"):
            return repr(value)
    elif isinstance(node, ast.List):
        return f"[{', '.join(_source(e) for e in node.elts)}]"
    return ast.unparse(node)


def _default_value(node: ast.expr, scope: Scope, resolver: Resolver) -> tuple[Any, bool]:
    """A JSON-able literal and True (folded as Python computes it: ``60 * 60``, a
    module constant, ``Color.RED`` as pydantic writes it), else the expression's source
    text and False."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool, type(None))):
        return node.value, True  # the common case, without folding's overhead
    try:
        value = pysource.jsonable(resolver.fold(node, scope))
    except (NotLiteral, RecursionError, MemoryError):
        return ast.unparse(node), False
    if _json_able(value):
        return value, True
    return ast.unparse(node), False


def _json_able(value: Any) -> bool:
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_able(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_able(v) for k, v in value.items())
    return False
