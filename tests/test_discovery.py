"""Static flow discovery: real files in tmp_path, parsed and never imported."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from deploy_lib.discovery import (
    Discovery,
    discover_flows,
    find_flow,
    flow_name_for,
)
from deploy_lib.errors import EXIT_VALIDATION, DiscoveryError
from deploy_lib.report import format_discovery

REPO = Path(__file__).resolve().parent.parent

Tree = dict[str, Any]


def write_tree(root: Path, tree: Tree) -> Path:
    """Create ``tree`` under ``root``: a str value is a file (dedented), bytes a raw file,
    a dict a folder."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in tree.items():
        target = root / name
        if isinstance(content, dict):
            write_tree(target, content)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return root


def discover(root: Path, tree: Tree, **kwargs: Any) -> Discovery:
    write_tree(root, tree)
    return discover_flows(root, **kwargs)


def names(discovery: Discovery) -> list[str]:
    return [f.name for f in discovery.flows]


def messages(discovery: Discovery) -> list[str]:
    return [str(p) for p in discovery.problems]


# --------------------------------------------------------------------------- decorators

DECORATOR_FORMS = {
    "bare @flow imported from prefect": """
        from prefect import flow

        @flow
        def job(): ...
    """,
    "@flow() called with no arguments": """
        from prefect import flow

        @flow()
        def job(): ...
    """,
    "@flow(...) called with arguments": """
        from prefect import flow

        @flow(retries=2, log_prints=True)
        def job(): ...
    """,
    "@prefect.flow after import prefect": """
        import prefect

        @prefect.flow
        def job(): ...
    """,
    "@prefect.flow(...) after import prefect": """
        import prefect

        @prefect.flow(retries=1)
        def job(): ...
    """,
    "from prefect import flow as pflow": """
        from prefect import flow as pflow

        @pflow
        def job(): ...
    """,
    "import prefect as pf then @pf.flow(...)": """
        import prefect as pf

        @pf.flow(log_prints=True)
        def job(): ...
    """,
    "from prefect.flows import flow": """
        from prefect.flows import flow

        @flow
        def job(): ...
    """,
    "import prefect.flows then @prefect.flows.flow": """
        import prefect.flows

        @prefect.flows.flow
        def job(): ...
    """,
    "from prefect import flow inside try/except": """
        try:
            from prefect import flow
        except ImportError:
            raise

        @flow
        def job(): ...
    """,
    "flow decorator below another decorator": """
        import functools
        from prefect import flow

        @functools.lru_cache
        @flow
        def job(): ...
    """,
}


@pytest.mark.parametrize("source", DECORATOR_FORMS.values(), ids=DECORATOR_FORMS.keys())
def test_every_decorator_form_is_recognised(tmp_path: Path, source: str) -> None:
    result = discover(tmp_path, {"flows": {"job.py": source}})

    assert [(f.name, f.function, f.path) for f in result.flows] == [("job", "job", "flows/job.py")]
    assert result.problems == ()


def test_async_and_sync_flows_are_both_found_and_marked(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "both.py": """
                    from prefect import flow

                    @flow
                    def sync_job(): ...

                    @flow
                    async def async_job(): ...
                """
            }
        },
    )

    assert [(f.function, f.is_async) for f in result.flows] == [
        ("sync_job", False),
        ("async_job", True),
    ]


NOT_FLOWS = {
    "a flow decorator imported from another library": """
        from workflows import flow

        @flow
        def other(): ...
    """,
    "a bare @flow that was never imported": """
        @flow
        def other(): ...
    """,
    "a local function named flow": """
        def flow(fn):
            return fn

        @flow
        def other(): ...
    """,
    "a prefect task, not a flow": """
        from prefect import task

        @task
        def other(): ...
    """,
    "@prefect.flow without importing prefect": """
        @prefect.flow
        def other(): ...
    """,
}


@pytest.mark.parametrize("source", NOT_FLOWS.values(), ids=NOT_FLOWS.keys())
def test_functions_that_are_not_prefect_flows_are_not_recorded(tmp_path: Path, source: str) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "other.py": source,
                "real.py": "from prefect import flow\n\n@flow\ndef real(): ...\n",
            }
        },
    )

    assert names(result) == ["real"]
    assert result.problems == ()
    assert "other" in result.functions["flows/other.py"]


def test_flows_nested_in_classes_functions_or_main_guard_are_not_module_flows(
    tmp_path: Path,
) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "nested.py": """
                    from prefect import flow

                    class Holder:
                        @flow
                        def method_flow(self): ...

                    def factory():
                        @flow
                        def inner(): ...
                        return inner

                    if __name__ == "__main__":
                        @flow
                        def only_when_run_as_script(): ...

                    if True:
                        @flow
                        def conditional_but_imported(): ...
                """
            }
        },
    )

    assert [f.function for f in result.flows] == ["conditional_but_imported"]


# --------------------------------------------------------------------------- names, descriptions


def test_flow_name_comes_from_literal_name_else_function_name(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "names.py": """
                    from prefect import flow

                    FLOW_NAME = "from-a-constant"

                    @flow(name="explicit name")
                    def first_flow(): ...

                    @flow
                    def second_flow_here(): ...

                    @flow(name=FLOW_NAME)
                    def third(): ...

                    @flow(name=None)
                    def fourth_flow(): ...
                """
            }
        },
    )

    assert names(result) == ["explicit name", "second-flow-here", "from-a-constant", "fourth-flow"]
    assert all(f.is_valid for f in result.flows)


def test_a_name_that_cannot_be_read_without_running_code_is_a_problem(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "dynamic.py": """
                    import os
                    from prefect import flow

                    @flow(name=os.environ["NAME"])
                    def dynamic(): ...
                """
            }
        },
    )

    (flow,) = result.flows
    assert not flow.is_valid
    assert "flow name is not a string literal (name=os.environ['NAME'])" in flow.problems[0]
    assert result.problems[0].path == "flows/dynamic.py"
    assert result.problems[0].line == 5


def test_a_name_with_characters_prefect_refuses_is_a_problem(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {"flows": {"bad.py": 'from prefect import flow\n\n@flow(name="a/b")\ndef bad(): ...\n'}},
    )

    (flow,) = result.flows
    assert flow.problems == (
        "flow name 'a/b' contains '/'; Prefect refuses any of / % & > < in names",
    )


def test_our_flow_name_rule_matches_prefects(tmp_path: Path) -> None:
    from prefect import Flow

    def template() -> None:
        return None

    for function in ("daily_etl", "a__b", "_private_job", "Mixed_Case_1", "plain"):
        template.__name__ = function
        assert flow_name_for(function) == Flow(template).name


def test_description_is_the_literal_else_the_whole_cleaned_docstring_as_prefect_sends_it(
    tmp_path: Path,
) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "docs.py": '''
                    from prefect import flow

                    @flow(description="Given explicitly.")
                    def explicit():
                        """Ignored docstring."""

                    @flow
                    def documented():
                        """
                        First line of the docstring.

                        More detail, part of the description too.
                        """

                    @flow
                    def undocumented(): ...
                '''
            }
        },
    )

    assert [f.description for f in result.flows] == [
        "Given explicitly.",
        "First line of the docstring.\n\nMore detail, part of the description too.",
        None,
    ]


# --------------------------------------------------------------------------- parameters


def test_parameters_record_annotation_text_defaults_and_requiredness(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "params.py": """
                    from datetime import date
                    from typing import Literal, Optional
                    from prefect import flow

                    @flow
                    def params(
                        source: str,
                        count: int = 3,
                        ratio: float = -0.5,
                        nickname: Optional[str] = None,
                        mode: Literal["fast", "slow"] = "fast",
                        tags: list[str] = ["a", "b"],
                        limits: dict[str, int] = {"x": 1},
                        pair: tuple[int, int] = (1, 2),
                        day: date = date(2024, 1, 2),
                        quoted: "list[int] | None" = None,
                        untyped=True,
                        *args: int,
                        must: bool,
                        maybe: str | None = "m",
                        **kwargs: object,
                    ): ...
                """
            }
        },
    )

    by_name = {p.name: p for p in result.flows[0].parameters}
    assert list(by_name) == [
        "source", "count", "ratio", "nickname", "mode", "tags", "limits", "pair", "day",
        "quoted", "untyped", "args", "must", "maybe", "kwargs",
    ]  # fmt: skip
    assert {n: p.annotation for n, p in by_name.items()} == {
        "source": "str",
        "count": "int",
        "ratio": "float",
        "nickname": "Optional[str]",
        "mode": "Literal['fast', 'slow']",
        "tags": "list[str]",
        "limits": "dict[str, int]",
        "pair": "tuple[int, int]",
        "day": "date",
        "quoted": "list[int] | None",
        "untyped": None,
        "args": "int",
        "must": "bool",
        "maybe": "str | None",
        "kwargs": "object",
    }
    assert [n for n, p in by_name.items() if p.required] == ["source", "must"]
    defaults = {n: p.default for n, p in by_name.items() if not p.required}
    assert defaults == {
        "count": 3,
        "ratio": -0.5,
        "nickname": None,
        "mode": "fast",
        "tags": ["a", "b"],
        "limits": {"x": 1},
        "pair": [1, 2],  # as JSON holds it
        "day": "date(2024, 1, 2)",
        "quoted": None,
        "untyped": True,
        "args": None,
        "maybe": "m",
        "kwargs": None,
    }
    assert by_name["day"].default_is_literal is False
    assert by_name["count"].default_is_literal is True
    assert {n: p.kind for n, p in by_name.items() if p.kind != "positional_or_keyword"} == {
        "args": "var_positional",
        "must": "keyword_only",
        "maybe": "keyword_only",
        "kwargs": "var_keyword",
    }


def test_positional_only_parameters_keep_their_kind_and_defaults(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "posonly.py": """
                    from prefect import flow

                    @flow
                    def posonly(a: int, b: int = 2, /, c: int = 3): ...
                """
            }
        },
    )

    params = result.flows[0].parameters
    assert [(p.name, p.kind, p.required, p.default) for p in params] == [
        ("a", "positional_only", True, None),
        ("b", "positional_only", False, 2),
        ("c", "positional_or_keyword", False, 3),
    ]


def test_defaults_are_kept_as_json_holds_them_and_as_source_text_when_json_cannot(
    tmp_path: Path,
) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "sets.py": """
                    from prefect import flow

                    @flow
                    def sets(s: set[int] = {1, 2}, b: bytes = b"x", big: float = 1e999): ...
                """
            }
        },
    )

    params = result.flows[0].parameters
    assert [(p.default, p.default_is_literal) for p in params] == [
        ([1, 2], True),  # pydantic writes a set as a list and bytes as UTF-8 text
        ("x", True),
        ("1e309", False),
    ]
    json.dumps(result.to_dict())  # everything stays JSON-able


# --------------------------------------------------------------------------- Dockerfile lookup


def test_dockerfile_and_requirements_are_found_beside_or_above_up_to_the_flows_root(
    tmp_path: Path,
) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n"
    result = discover(
        tmp_path,
        {
            "Dockerfile": "FROM scratch\n",  # above the flows root: never used
            "requirements.txt": "outside\n",
            "flows": {
                "top.py": flow.format("top"),
                "team": {
                    "Dockerfile": "FROM python\n",
                    "requirements.txt": "team\n",
                    "mid.py": flow.format("mid"),
                    "deeper": {
                        "requirements.txt": "deeper\n",
                        "deep.py": flow.format("deep"),
                    },
                },
            },
        },
    )

    found = {f.function: (f.dockerfile, f.requirements) for f in result.flows}
    assert found == {
        "top": (None, None),
        "mid": ("flows/team/Dockerfile", "flows/team/requirements.txt"),
        "deep": ("flows/team/Dockerfile", "flows/team/deeper/requirements.txt"),
    }
    by_name = {f.function: f for f in result.flows}
    assert by_name["mid"].supports_docker_deployment
    assert not by_name["top"].supports_docker_deployment
    assert by_name["top"].supports_python_deployment


# --------------------------------------------------------------------------- skipping


def test_virtualenvs_caches_hidden_folders_and_tests_are_skipped(tmp_path: Path) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n"
    result = discover(
        tmp_path,
        {
            "flows": {
                "kept.py": flow.format("kept"),
                ".venv": {"a.py": flow.format("in_dot_venv")},
                "venv": {"a.py": flow.format("in_venv")},
                "__pycache__": {"a.py": flow.format("in_pycache")},
                ".hidden": {"a.py": flow.format("in_hidden")},
                "tests": {"test_a.py": flow.format("in_tests")},
                "sub": {"tests": {"a.py": flow.format("in_sub_tests")}},
            }
        },
    )

    assert names(result) == ["kept"]
    assert result.files == ("flows/kept.py",)


def test_exclude_patterns_match_relative_paths_and_names(tmp_path: Path) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n"
    write_tree(
        tmp_path,
        {
            "flows": {
                "kept.py": flow.format("kept"),
                "old_job.py": flow.format("old_job"),
                "scratch": {"a.py": flow.format("scratch_flow")},
                "team": {"drafts": {"b.py": flow.format("draft_flow")}},
            }
        },
    )

    result = discover_flows(tmp_path, exclude=["*old_*.py", "scratch", "flows/team/drafts/"])

    assert names(result) == ["kept"]


# --------------------------------------------------------------------------- bad files


def test_a_syntax_error_is_recorded_with_its_line_and_other_files_still_count(
    tmp_path: Path,
) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "broken.py": "from prefect import flow\n\n@flow\ndef broken(:\n    pass\n",
                "good.py": "from prefect import flow\n\n@flow\ndef good(): ...\n",
            }
        },
    )

    assert names(result) == ["good"]
    (problem,) = result.problems
    assert (problem.path, problem.line) == ("flows/broken.py", 4)
    assert problem.message.startswith("syntax error: ")


def test_a_non_utf8_file_is_a_problem_but_a_declared_encoding_is_honoured(
    tmp_path: Path,
) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}():\n    return '{1}'\n"
    result = discover(
        tmp_path,
        {
            "flows": {
                "latin.py": flow.format("latin", "caf\xe9").encode("latin-1"),
                "declared.py": (
                    "# -*- coding: latin-1 -*-\n" + flow.format("declared", "caf\xe9")
                ).encode("latin-1"),
            }
        },
    )

    assert names(result) == ["declared"]
    (problem,) = result.problems
    assert problem.path == "flows/latin.py"
    assert problem.line == 5
    assert problem.message == "not valid UTF-8 (byte 0xe9 at line 5); save the file as UTF-8"


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_unreadable_file_is_a_problem_and_the_walk_goes_on(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows": {"ok.py": "from prefect import flow\n\n@flow\ndef ok(): ...\n"}})
    # Reading a process's memory from offset 0 fails with EIO, even for root (who can
    # read a chmod 000 file), so this is a file that opens but cannot be read.
    os.symlink("/proc/self/mem", tmp_path / "flows" / "unreadable.py")

    result = discover_flows(tmp_path, follow_outside_links=True)  # read it anyway

    assert names(result) == ["ok"]
    assert messages(result) == ["flows/unreadable.py: cannot read file: Input/output error"]


def test_a_symlink_loop_is_reported_and_the_walk_terminates(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {"flows": {"team": {"job.py": "from prefect import flow\n\n@flow\ndef job(): ...\n"}}},
    )
    os.symlink("..", tmp_path / "flows" / "team" / "up")  # a folder that contains itself
    os.symlink("self.py", tmp_path / "flows" / "self.py")  # a link to itself

    result = discover_flows(tmp_path)

    assert names(result) == ["job"]
    assert messages(result) == [
        "flows/self.py: symlink loop: -> self.py never reaches a file; skipped",
        "flows/team/up: symlink loop: flows/team/up -> .. points back to a folder that "
        "contains it; not followed",
    ]


def test_symlinked_folders_are_followed_once_and_never_counted_twice(tmp_path: Path) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n"
    write_tree(
        tmp_path,
        {
            "shared": {"lib_flow.py": flow.format("lib_flow")},
            "flows": {"real": {"job.py": flow.format("job")}},
        },
    )
    os.symlink("../shared", tmp_path / "flows" / "linked_outside")
    os.symlink("real", tmp_path / "flows" / "a_link_to_real")

    result = discover_flows(tmp_path)

    assert [f.path for f in result.flows] == [
        "flows/linked_outside/lib_flow.py",
        "flows/real/job.py",
    ]
    assert result.problems == ()


def test_one_flow_name_in_several_files_is_legal_one_flow_with_several_deployments(
    tmp_path: Path,
) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "a.py": "from prefect import flow\n\n@flow(name='report')\ndef a(): ...\n",
                "b.py": "from prefect import flow\n\n@flow\ndef report(): ...\n",
                "c.py": "from prefect import flow\n\n@flow\ndef other(): ...\n",
            }
        },
    )

    assert [(f.name, f.entrypoint, f.is_valid) for f in result.flows] == [
        ("report", "flows/a.py:a", True),
        ("report", "flows/b.py:report", True),
        ("other", "flows/c.py:other", True),
    ]
    assert result.problems == ()


def test_an_empty_or_missing_flows_root_is_a_problem(tmp_path: Path) -> None:
    write_tree(tmp_path, {"flows": {"helpers.py": "def helper(): ...\n"}})

    result = discover_flows(tmp_path, roots=["flows", "missing"])

    assert result.flows == ()
    assert messages(result) == [
        "flows: no flows found under flows",
        "missing: flow root missing does not exist",
    ]


def test_a_root_outside_the_project_is_refused(tmp_path: Path) -> None:
    project = write_tree(tmp_path / "project", {"flows": {}})

    result = discover_flows(project, roots=["../elsewhere"])

    assert messages(result) == ["../elsewhere: flow root ../elsewhere is outside the project root"]


def test_a_single_file_and_overlapping_roots_count_each_flow_once(tmp_path: Path) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n"
    write_tree(
        tmp_path,
        {"flows": {"a.py": flow.format("a"), "etl": {"b.py": flow.format("b")}}},
    )

    result = discover_flows(tmp_path, roots=["flows", "flows/etl", "flows/a.py", "flows/"])

    assert [f.path for f in result.flows] == ["flows/a.py", "flows/etl/b.py"]
    assert result.problems == ()


# --------------------------------------------------------------------------- guarantees


def test_output_is_sorted_by_path_then_line_and_repeatable(tmp_path: Path) -> None:
    flow = "from prefect import flow\n\n@flow\ndef {0}(): ...\n\n@flow\ndef {0}_two(): ...\n"
    tree: Tree = {"flows": {}}
    for name in ("zeta", "alpha", "mid", "beta"):
        tree["flows"][f"{name}.py"] = flow.format(name)
    tree["flows"]["sub"] = {"aa.py": flow.format("aa")}
    first = discover(tmp_path, tree)
    second = discover_flows(tmp_path)

    assert [(f.path, f.line) for f in first.flows] == [
        ("flows/alpha.py", 4),
        ("flows/alpha.py", 7),
        ("flows/beta.py", 4),
        ("flows/beta.py", 7),
        ("flows/mid.py", 4),
        ("flows/mid.py", 7),
        ("flows/sub/aa.py", 4),
        ("flows/sub/aa.py", 7),
        ("flows/zeta.py", 4),
        ("flows/zeta.py", 7),
    ]
    assert first == second
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())


def test_discovery_never_imports_or_runs_the_flow_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    result = discover(
        tmp_path,
        {
            "flows": {
                "dangerous.py": f"""
                    from pathlib import Path
                    from prefect import flow

                    Path({str(marker)!r}).write_text("imported!")
                    raise RuntimeError("module body ran")

                    @flow
                    def dangerous(): ...
                """
            }
        },
    )

    assert names(result) == ["dangerous"]
    assert result.problems == ()
    assert not marker.exists()
    assert "flows.dangerous" not in sys.modules and "dangerous" not in sys.modules


def test_to_dict_has_the_flow_and_problem_keys_the_cli_promises(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "ok.py": "from prefect import flow\n\n@flow\ndef ok(x: int = 1): ...\n",
                "bad.py": "from prefect import flow\n\ndef (:\n",
            }
        },
    )

    data = result.to_dict()
    assert set(data) == {"flows", "problems"}
    assert {
        "name", "function", "path", "entrypoint", "module_entrypoint", "is_async",
        "description", "parameters", "dockerfile", "requirements",
        "supports_python_deployment", "supports_docker_deployment", "is_valid", "problems",
    } <= set(data["flows"][0])  # fmt: skip
    assert data["flows"][0]["entrypoint"] == "flows/ok.py:ok"
    assert data["flows"][0]["module_entrypoint"] == "flows.ok:ok"
    assert {"path", "line", "message"} <= set(data["problems"][0])
    assert data["problems"][0]["path"] == "flows/bad.py"


def test_raise_for_problems_raises_a_discovery_error_that_exits_3(tmp_path: Path) -> None:
    result = discover(tmp_path, {"flows": {"bad.py": "from prefect import flow\ndef (:\n"}})

    with pytest.raises(DiscoveryError) as caught:
        result.raise_for_problems()

    assert caught.value.exit_code == EXIT_VALIDATION
    assert "flows/bad.py:2: syntax error" in str(caught.value)
    assert "flows: no flows found under flows" in str(caught.value)


def test_the_table_lists_flows_types_and_problems(tmp_path: Path) -> None:
    result = discover(
        tmp_path,
        {
            "flows": {
                "box": {
                    "Dockerfile": "FROM python\n",
                    "job.py": "from prefect import flow\n\n@flow\nasync def job(n: int = 1): ...\n",
                },
                "bad.py": "from prefect import flow\n\ndef (:\n",
            }
        },
    )

    table = format_discovery(result)

    assert table.splitlines()[0].split() == [
        "FLOW",
        "ENTRYPOINT",
        "PARAMETERS",
        "TYPES",
        "PROBLEMS",
    ]
    assert table.splitlines()[1].split() == [
        "job", "(async)", "flows/box/job.py:job", "n:", "int", "=", "1", "python,", "docker", "-",
    ]  # fmt: skip
    assert "1 flow(s), 1 problem(s)" in table
    assert "  - flows/bad.py:3: syntax error:" in table


# --------------------------------------------------------------------------- entrypoints


@pytest.fixture
def etl_discovery(tmp_path: Path) -> Discovery:
    return discover(
        tmp_path,
        {
            "flows": {
                "etl": {
                    "daily.py": """
                        from prefect import flow, task

                        @task
                        def extract(): ...

                        def helper(): ...

                        @flow
                        def daily_etl(): ...
                    """,
                    "helpers.py": "def make_rows(): ...\n",
                }
            }
        },
    )


@pytest.mark.parametrize(
    "reference",
    ["daily-etl", "flows/etl/daily.py:daily_etl", "./flows/etl/daily.py:daily_etl",
     "flows.etl.daily:daily_etl"],
    ids=["flow name", "path entrypoint", "path with ./", "module entrypoint"],
)  # fmt: skip
def test_find_flow_accepts_a_name_or_either_entrypoint_form(
    etl_discovery: Discovery, reference: str
) -> None:
    flow = find_flow(etl_discovery, reference)

    assert flow is not None and flow.function == "daily_etl"


# --------------------------------------------------------------------------- the real repo


def test_the_example_flows_of_this_repository_are_all_discovered_valid() -> None:
    result = discover_flows(REPO)

    assert result.problems == ()
    flows = {f.name: f for f in result.flows}
    assert set(flows) == {
        "hello", "async-report", "daily-etl", "table-report", "env-report", "order-totals"
    }
    assert all(f.is_valid for f in result.flows)
    assert flows["async-report"].is_async
    assert flows["daily-etl"].entrypoint == "flows/etl/daily.py:daily_etl"
    assert flows["daily-etl"].module_entrypoint == "flows.etl.daily:daily_etl"
    assert flows["table-report"].dockerfile == "flows/containerized/Dockerfile"
    assert flows["table-report"].requirements == "flows/containerized/requirements.txt"
    assert [p.name for p in flows["env-report"].parameters] == [
        "cleanup",
        "use_distributed",
        "debug",
        "extra_vars",
    ]
    assert len(flows["hello"].parameters) >= 10


def test_invoke_discover_json_prints_the_flows_of_this_repository() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "discover", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert sorted(f["name"] for f in data["flows"]) == [
        "async-report",
        "daily-etl",
        "env-report",
        "hello",
        "order-totals",
        "table-report",
    ]
    assert data["problems"] == []


def test_the_whole_docstring_is_kept_so_parameter_descriptions_can_be_read(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "doc.py").write_text(
        'from prefect import flow\n\n\n@flow\ndef documented(rows: int = 1):\n'
        '    """Load rows.\n\n    Args:\n        rows: how many rows to load\n    """\n'
    )
    (found,) = discover_flows(tmp_path).flows
    assert found.description == "Load rows.\n\nArgs:\n    rows: how many rows to load"
    assert found.docstring is not None and "rows: how many rows to load" in found.docstring


@pytest.mark.parametrize("name", ["evil\\n2026-12-01T00:00:00Z deleted prod", "clear\\x1b[2J"])
def test_a_flow_name_with_control_characters_is_a_problem(tmp_path: Path, name: str) -> None:
    source = f'from prefect import flow\n\n\n@flow(name="{name}")\ndef f() -> None: ...\n'

    result = discover(tmp_path, {"flows": {"f.py": source}})

    (flow,) = result.flows
    assert not flow.is_valid
    assert any("holds control characters" in p for p in flow.problems)


def test_a_fifo_or_a_device_in_the_flows_never_blocks_discovery(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "ok.py").write_text('from prefect import flow\n\n\n@flow\ndef ok() -> None: ...\n')
    os.mkfifo(flows / "pipe.py")
    (flows / "zero.py").symlink_to("/dev/zero")

    # returns: nothing waits on the FIFO (and the device is read, links allowed)
    result = discover_flows(tmp_path, ["flows"], follow_outside_links=True)

    assert [f.name for f in result.flows] == ["ok"]
    problems = {p.path: p.message for p in result.problems}
    assert problems["flows/pipe.py"].startswith("not a regular file")
    assert problems["flows/zero.py"].startswith("not a regular file")


def test_a_huge_source_file_is_not_read_whole(tmp_path: Path) -> None:
    from deploy_lib.discovery import MAX_FILE_BYTES

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "big.py").write_bytes(b"# flow prefect\n" + b"x" * MAX_FILE_BYTES)

    problems = {p.path: p.message for p in discover_flows(tmp_path, ["flows"]).problems}

    assert problems["flows/big.py"] == "larger than 8 MiB: not a flow file; not read"


# --------------------------------------------------------------- a repository as real ones are

CORPUS = REPO / "tests" / "corpus"


@pytest.fixture(scope="module")
def corpus() -> Discovery:
    return discover_flows(CORPUS, ["pipelines"])


def test_a_cookiecutter_template_in_the_tree_is_one_problem_and_every_flow_is_found(
    corpus: Discovery,
) -> None:
    assert messages(corpus) == [
        "pipelines/{{ cookiecutter.project_slug }}/flow.py:5: syntax error: invalid syntax"
    ]
    assert all(f.is_valid for f in corpus.flows)
    assert len(corpus.flows) == 14


def test_names_and_descriptions_are_folded_as_python_computes_them(corpus: Discovery) -> None:
    by_function = {f.function: f for f in corpus.flows}
    assert by_function["bond_reporting"].name == "Bond Reporting Data Scripts"
    assert by_function["bond_daily"].name == "bond-daily"
    assert by_function["bond_daily"].description == "bond figures, every 1440 minutes"
    assert by_function["fetch"].description == "data loader"


def test_defaults_naming_constants_are_folded_and_expressions_are_marked(
    corpus: Discovery,
) -> None:
    (fetch,) = [f for f in corpus.flows if f.function == "fetch"]
    defaults = {p.name: (p.default, p.default_is_literal) for p in fetch.parameters}
    assert defaults == {
        "url": ("https://example.com/api", True),
        "timeout": (3600, True),
        "path": ("data/in", True),
        "mode": ("safe", True),
        "rows": (1000, True),
        "ratio": (0.25, True),
        "label": ("data-3600", True),
        "since": ("datetime.today()", False),
    }
    shown = {p["name"]: p for p in fetch.to_dict()["parameters"]}
    assert shown["url"]["default_kind"] == "literal"
    assert shown["since"]["default_kind"] == "expression"
    assert "default" not in shown["since"]  # never a string that looks like a literal
    assert shown["since"]["default_source"] == "datetime.today()"


def test_a_second_decorator_gets_a_note(corpus: Discovery) -> None:
    (audited,) = [f for f in corpus.flows if f.function == "audited"]
    assert audited.notes == (
        "decorated also with @logged, which may change its signature: the parameters "
        "are read from the function as written",
    )


# --------------------------------------------------------------------------- the cache

CACHED_TREE: Tree = {
    "flows": {
        "a.py": """
            from prefect import flow
            from flows.models import Order

            @flow
            def a(order: Order | None = None, n: int = 1): ...
        """,
        "b.py": "from prefect import flow\n\n@flow\ndef b(): ...\n",
        "models.py": """
            from pydantic import BaseModel

            class Order(BaseModel):
                id: int
        """,
        "helpers.py": "def helper():\n    return 1\n",
    }
}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files discovery parses for flows (each call of _parse_module)."""
    import deploy_lib.discovery as module

    seen: list[str] = []
    real = module._parse_module

    def spy(tree: Any, rel: str, resolver: Any) -> Any:
        seen.append(rel)
        return real(tree, rel, resolver)

    monkeypatch.setattr(module, "_parse_module", spy)
    return seen


def _age(root: Path, seconds: float = 60) -> None:
    """Make every file look written a while ago (as a checkout is, by the next run)."""
    past = time.time() - seconds
    for path in root.rglob("*.py"):
        os.utime(path, (past, past))


def test_an_unchanged_tree_is_discovered_from_the_cache_without_parsing(
    tmp_path: Path, parses: list[str]
) -> None:
    write_tree(tmp_path, CACHED_TREE)
    _age(tmp_path)
    cache = tmp_path / ".deploy-cache"
    cold = discover_flows(tmp_path, cache_dir=cache)
    assert sorted(parses) == ["flows/a.py", "flows/b.py"]
    parses.clear()

    warm = discover_flows(tmp_path, cache_dir=cache)

    assert parses == []
    assert warm == cold == discover_flows(tmp_path)
    assert (cache / ".gitignore").read_text().endswith("*\n")
    assert stat.S_IMODE((cache / "discovery.json").stat().st_mode) == 0o600


def _warm_cache(root: Path, parses: list[str]) -> Path:
    """CACHED_TREE under ``root``, discovered once into its cache (the parses of that
    first run forgotten); the cache folder."""
    write_tree(root, CACHED_TREE)
    _age(root)
    cache = root / ".deploy-cache"
    discover_flows(root, cache_dir=cache)
    parses.clear()
    return cache


def test_a_changed_file_is_read_again_and_only_it(tmp_path: Path, parses: list[str]) -> None:
    cache = _warm_cache(tmp_path, parses)

    (tmp_path / "flows" / "b.py").write_text(
        "from prefect import flow\n\n@flow(name='renamed')\ndef b(): ...\n"
    )
    found = discover_flows(tmp_path, cache_dir=cache)

    assert parses == ["flows/b.py"]
    assert [f.name for f in found.flows] == ["a", "renamed"]


def test_a_flow_is_read_again_when_a_module_its_types_come_from_changes(
    tmp_path: Path, parses: list[str]
) -> None:
    from deploy_lib.parameters import parameter_schema

    cache = _warm_cache(tmp_path, parses)

    (tmp_path / "flows" / "models.py").write_text(
        "from pydantic import BaseModel\n\nclass Order(BaseModel):\n    id: int\n    note: str = ''\n"
    )
    (flow, _) = discover_flows(tmp_path, cache_dir=cache).flows

    assert parses == ["flows/a.py"]
    order = parameter_schema(flow)["definitions"]["Order"]
    assert set(order["properties"]) == {"id", "note"}


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"key": [1, [3, 11]], "written": 1e18, "files": {"flows/b.py": {"stat": 1}}}',
        b'{"key": "someone else", "files": {}}',
        b"[]",
        b"BAD OUTCOME",  # this run's own key, with an entry whose outcome is nonsense
    ],
    ids=["garbage", "entry of the wrong shape", "foreign key", "a list", "bad outcome"],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_rebuilt(tmp_path: Path, content: bytes) -> None:
    write_tree(tmp_path, CACHED_TREE)
    cache = tmp_path / ".deploy-cache"
    cache.mkdir()
    if content == b"BAD OUTCOME":
        from deploy_lib.discovery import _cache_key, _digest

        digest = _digest((tmp_path / "flows" / "b.py").read_bytes())
        entry = {"stat": None, "digest": digest, "outcome": {"flows": 5}, "depends": {}}
        content = json.dumps(
            {"key": _cache_key(), "written": 1e18, "files": {"flows/b.py": entry}}
        ).encode()
    (cache / "discovery.json").write_bytes(content)

    found = discover_flows(tmp_path, cache_dir=cache)

    assert found == discover_flows(tmp_path)
    assert json.loads((cache / "discovery.json").read_text())["files"]


def test_a_cache_entry_that_lies_about_the_content_is_not_trusted(tmp_path: Path) -> None:
    write_tree(tmp_path, CACHED_TREE)
    cache = tmp_path / ".deploy-cache"
    discover_flows(tmp_path, cache_dir=cache)
    data = json.loads((cache / "discovery.json").read_text())
    entry = data["files"]["flows/b.py"]
    entry["outcome"]["flows"][0]["meta"]["name"] = "forged"
    entry["stat"] = [0, 0]  # the stat no longer matches: the content decides
    entry["digest"] = "0" * 40
    (cache / "discovery.json").write_text(json.dumps(data))

    assert "forged" not in [f.name for f in discover_flows(tmp_path, cache_dir=cache).flows]


def test_an_unwritable_cache_folder_only_costs_time(tmp_path: Path) -> None:
    write_tree(tmp_path, CACHED_TREE)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")

    assert discover_flows(tmp_path, cache_dir=blocked / "cache") == discover_flows(tmp_path)


def test_a_symlink_leading_outside_the_project_is_named_and_not_followed(tmp_path: Path) -> None:
    outside = write_tree(
        tmp_path / "elsewhere",
        {"theirs.py": "from prefect import flow\n\n@flow\ndef theirs(): ...\n", "pkg": {
            "deep.py": "from prefect import flow\n\n@flow\ndef deep(): ...\n"}},
    )
    root = write_tree(tmp_path / "project", {"flows": {"ours.py": "from prefect import flow\n\n@flow\ndef ours(): ...\n"}})
    os.symlink(outside / "theirs.py", root / "flows" / "linked.py")
    os.symlink(outside / "pkg", root / "flows" / "linked_pkg")

    found = discover_flows(root)

    assert names(found) == ["ours"]
    assert messages(found) == [
        f"flows/linked.py: symlink flows/linked.py -> {outside / 'theirs.py'} leads outside "
        "the project root; not followed (set follow_outside_links = true to follow it)",
        f"flows/linked_pkg: symlink flows/linked_pkg -> {outside / 'pkg'} leads outside "
        "the project root; not followed (set follow_outside_links = true to follow it)",
    ]
    allowed = discover_flows(root, follow_outside_links=True)
    assert sorted(names(allowed)) == ["deep", "ours", "theirs"]
    assert allowed.problems == ()
