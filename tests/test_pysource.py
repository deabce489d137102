"""Reading source as Python sees it: literal folding, scopes and annotation resolution."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Any

import pytest

from deploy_lib.pysource import EnumMember, NotLiteral, Resolver, Scope, Unresolved


def _scope(source: str, path: str = "pkg/mod.py") -> tuple[Resolver, Scope]:
    tree = ast.parse(textwrap.dedent(source))
    resolver = Resolver(lambda _rel: None)
    scope = Scope.of(tree, path, path[:-3].replace("/", "."))
    resolver.add_scope(scope)
    return resolver, scope


def _fold(expression: str, source: str = "") -> Any:
    resolver, scope = _scope(source)
    return resolver.fold(ast.parse(expression, mode="eval").body, scope)


MODULE = '''
import enum
from enum import Enum

PREFIX = "bond"
HOURS = 24
NAME: str = PREFIX + "-daily"

class Color(Enum):
    RED = "red"
    BLUE = "blue"

class Limits:
    ROWS = 1_000
'''


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('f"Bond Reporting"', "Bond Reporting"),
        ('"a" + "b"', "ab"),
        ("60 * 60", 3600),
        ("-3 + 1.5", -1.5),
        ("2 ** 10", 1024),
        ("7 // 2, 7 % 2", (3, 1)),
        ("PREFIX", "bond"),
        ("NAME", "bond-daily"),
        ('f"{PREFIX}-{HOURS * 60:05d}"', "bond-01440"),
        ('f"{PREFIX!r}"', "'bond'"),
        ("Color.RED.value", "red"),
        ("Limits.ROWS", 1000),
        ('{"a": [1, (2, 3)], "b": {PREFIX}}', {"a": [1, (2, 3)], "b": {"bond"}}),
        ('"ab" * 3', "ababab"),
    ],
    ids=lambda v: str(v),
)
def test_literals_fold_as_python_computes_them(expression: str, value: Any) -> None:
    assert _fold(expression, MODULE) == value


def test_an_enum_member_folds_to_a_member_carrying_its_value() -> None:
    assert _fold("Color.BLUE", MODULE) == EnumMember("Color", "BLUE", "blue")


@pytest.mark.parametrize(
    "expression",
    [
        "datetime.today()",
        "os.environ['X']",
        "UNDEFINED",
        'f"{undefined}"',
        '"a" * 10**9',  # would fill memory: refused, not computed
        "2 ** 10**9",
        "1 / 0",
        "[*PARTS]",
        "Color.GREEN",
        "Limits.MISSING",
        "PREFIX + 1",
    ],
)
def test_what_needs_running_code_or_would_explode_is_not_a_literal(expression: str) -> None:
    with pytest.raises(NotLiteral):
        _fold(expression, MODULE)


def test_relative_imports_are_made_absolute_against_the_package() -> None:
    _, scope = _scope(
        """
        from . import models
        from ..shared.units import Unit as U
        from .... import too_far
        """,
        path="pkg/sub/flow.py",
    )
    assert scope.imports == {"models": "pkg.sub.models", "U": "pkg.shared.units.Unit"}


def test_names_are_followed_through_imports_into_the_project(tmp_path: Path) -> None:
    files = {
        "pkg/flow.py": "from pkg.models import Record as R\nfrom datetime import datetime as dt\n",
        "pkg/models.py": "from pydantic import BaseModel\nclass Record(BaseModel):\n    id: int\n",
    }
    trees = {path: ast.parse(text) for path, text in files.items()}
    resolver = Resolver(trees.get)
    scope = resolver.scope_for("pkg/flow.py")
    assert scope is not None

    def resolved(annotation: str) -> str:
        return ast.unparse(resolver.annotation(ast.parse(annotation, mode="eval").body, scope))

    assert resolved("list[R] | None") == "list[__types__.Record] | None"
    assert resolved("dt") == "datetime.datetime"
    assert resolver.definitions["Record"]["fields"] == [
        {"name": "id", "annotation": "int", "required": True}
    ]
    assert resolver.used == {"pkg/models.py"}


def test_a_plain_class_is_unresolved_with_the_reason() -> None:
    resolver, scope = _scope("class Custom:\n    pass\n")
    with pytest.raises(Unresolved, match=r"Custom .* is a plain class"):
        resolver.annotation(ast.parse("Custom", mode="eval").body, scope)


def test_a_name_that_is_not_defined_is_left_as_written() -> None:
    resolver, scope = _scope("")
    node = resolver.annotation(ast.parse("Optional[int]", mode="eval").body, scope)
    assert ast.unparse(node) == "Optional[int]"


def test_a_self_referencing_model_is_described_once() -> None:
    resolver, scope = _scope(
        """
        from pydantic import BaseModel

        class Node(BaseModel):
            children: list["Node"] = []
        """
    )
    node = resolver.annotation(ast.parse("Node", mode="eval").body, scope)
    assert ast.unparse(node) == "__types__.Node"
    assert resolver.definitions["Node"]["fields"][0]["annotation"] == "list[__types__.Node]"
