"""parameter_schema (from source text) against Prefect's own, plus docstrings and type checks."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from deploy_lib.models import FlowMetadata, Parameter
from deploy_lib.parameters import (
    parameter_docstrings,
    parameter_schema,
    python_type_check,
    schema_notes,
)

# Every annotation parameter_schema promises to map exactly as Prefect does.
SUPPORTED_FLOWS = '''
import collections.abc
import datetime
import typing
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Literal, Optional, Sequence, Set, Tuple, Union
from uuid import UUID

from prefect import flow


@flow
def scalars(a, b: str, c: int = 3, d: float = 1.5, e: bool = False, f: float = 1,
            g: int = -1, h: str = None, i: bytes = b"raw", j: Any = None, k: object = None,
            l: None = None):
    """Scalars.

    Args:
        a: the first one
        b (str): the second one,
            over two lines
        c: an int

    Returns:
        nothing: really
    """


@flow
def optionals(a: Optional[int] = None, b: int | None = 5, c: None | str = "x",
              d: Union[int, str] = 1, e: Union[int, None, str] = None,
              f: str | int | None = None, g: Optional[Union[int, str]] = None,
              h: Optional[Optional[int]] = None, i: typing.Optional[str] = "x",
              j: Union[int, int] = 1, k: Union[int] = 2, l: Optional[Any] = None,
              m: Optional[List[int]] = None, n: int | None = None):
    pass


@flow
def literals(a: Literal["x", "y"] = "x", b: Literal["only"] = "only", c: Literal[1, 2] = 1,
             d: Literal[True] = True, e: Literal["a", 1] = "a", f: Literal[-1] = -1,
             g: Literal[1.5, 2.5] = 1.5, h: Literal["a", None] = None,
             i: Optional[Literal["a", "b"]] = None, j: Literal["a"] | Literal["b"] = "a",
             k: Literal["x", "x"] = "x", l: Literal[True, 1] = 1, m: typing.Literal["t"] = "t"):
    pass


@flow
def containers(a: list[int] = [1], b: List[str] = ["a"], c: list = [], d: List = [],
                e: list[Any] = [], f: list[list[int]] = [], g: list[Optional[int]] = [],
                h: tuple = (1, 2), i: tuple[int, str] = (1, "a"), j: tuple[int, ...] = (),
                k: Tuple[int, ...] = (), l: Tuple = (), m: tuple[()] = (), n: tuple[int] = (1,),
                o: set[int] = set(), p: Set = set(), q: frozenset[str] = frozenset(),
                r: FrozenSet[int] = frozenset({1}), s: Sequence[int] = (),
                t: dict[str, int] = {}, u: Dict = {}, v: dict = {"k": (1, 2)},
                w: Dict[str, Any] = {}, x: dict[int, str] = {1: "x"},
                y: dict[Literal["a", "b"], int] = {}, z: collections.abc.Mapping[str, int] = {},
                aa: List[Dict[str, List[int]]] = [], bb: Optional[dict[str, list[int]]] = None,
                cc: typing.List[int] = [], dd: dict[str, datetime.datetime] = {}):
    pass


@flow
def temporal(a: datetime.datetime = None, b: datetime.datetime | None = None,
             c: date = None, d: datetime.date = None, e: timedelta = None,
             f: UUID = None, g: Path = Path("."), h: list[datetime.date] = [],
             i: datetime.datetime = datetime.datetime(2024, 1, 2, 3, 4),
             j: date = date(2024, 1, 2), k: Path = Path("data", "in")):
    pass


@flow
def kinds(a: int, /, b: str, *args, c: int, d: str = "d", **kwargs):
    pass


@flow
def typed_varargs(*numbers: int, **options: str):
    pass


@flow
def no_parameters():
    """Nothing to see.

    Args:
        ghost: documented but absent
    """


@flow
def quoted(a: "int" = 1, b: "Optional[str]" = None, c: "list[int]" = []):
    pass


@flow
def descriptions(a: int = 1, b: int = 2, c: int = 3):
    """Summary line.

    Arguments:
        a: overwritten by the later section

    Note:
        an admonition, not parameters

    Args:
        a (int): kept
        b: spans
            two lines

            and a blank one
        c:
    """
'''

# Annotations we cannot resolve from source alone: each gets a permissive property.
OTHER_FLOWS = """
import datetime as dt
from decimal import Decimal
from enum import Enum
from typing import Annotated

import pydantic
from prefect import flow


class Custom:
    pass


class Model(pydantic.BaseModel):
    x: int


class Color(Enum):
    RED = "red"


@flow
def others(a: Custom = None, b: Model = None, c: Color = Color.RED, d: dt.datetime = None,
           e: Decimal = None, f: "Undefined" = 3, g: Annotated[int, "meta"] = 1,
           h: list[Custom] = []):
    pass
"""

SUPPORTED = [
    "scalars",
    "optionals",
    "literals",
    "containers",
    "temporal",
    "kinds",
    "typed_varargs",
    "no_parameters",
    "quoted",
    "descriptions",
]


def _json_able(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_able(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_able(v) for k, v in value.items())
    return False


def _metadata(path: Path, function: str) -> FlowMetadata:
    """FlowMetadata read from source the way models.Parameter documents it: annotation
    source text (quotes dropped), a JSON-able literal default or else its source text."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    args = node.args

    def param(arg: ast.arg, default: ast.expr | None, kind: str) -> Parameter:
        ann = arg.annotation
        if ann is None:
            annotation = None
        elif isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            annotation = ann.value
        else:
            annotation = ast.unparse(ann)
        if default is None:
            required = kind not in ("var_positional", "var_keyword")
            return Parameter(arg.arg, annotation, None, required, True, kind)
        try:
            value = ast.literal_eval(default)
            literal = _json_able(value)
        except ValueError:
            literal = False
        if not literal:
            value = ast.unparse(default)
        return Parameter(arg.arg, annotation, value, False, literal, kind)

    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    params = [
        param(a, d, "positional_only" if i < len(args.posonlyargs) else "positional_or_keyword")
        for i, (a, d) in enumerate(zip(positional, defaults, strict=True))
    ]
    if args.vararg:
        params.append(param(args.vararg, None, "var_positional"))
    params += [
        param(a, d, "keyword_only") for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    if args.kwarg:
        params.append(param(args.kwarg, None, "var_keyword"))
    return FlowMetadata(
        name=function.replace("_", "-"),
        function=function,
        path=path.name,
        parameters=tuple(params),
        docstring=ast.get_docstring(node),
    )


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"flows_under_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prefect_schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Prefect's own ParameterSchema for every example flow, and the file it lives in."""
    from prefect.utilities.callables import parameter_schema as prefect_parameter_schema

    root = tmp_path_factory.mktemp("flows")
    found: dict[str, Any] = {}
    for stem, source in (("supported", SUPPORTED_FLOWS), ("others", OTHER_FLOWS)):
        path = root / f"{stem}.py"
        path.write_text(textwrap.dedent(source))
        module = _import(path)
        names = SUPPORTED if stem == "supported" else ["others"]
        for name in names:
            found[name] = (path, prefect_parameter_schema(getattr(module, name)))
    return found


@pytest.mark.parametrize("function", SUPPORTED)
def test_schema_equals_what_prefect_registers(
    prefect_schemas: dict[str, Any], function: str
) -> None:
    from prefect.utilities.callables import ParameterSchema

    path, theirs = prefect_schemas[function]
    ours = parameter_schema(_metadata(path, function))
    # RunnerDeployment sends model_dump(exclude_unset=True) as parameter_openapi_schema.
    registered = theirs.model_dump(exclude_unset=True)
    assert ours == registered
    assert list(ours["properties"]) == list(registered["properties"])
    assert ParameterSchema(**ours).model_dump_for_openapi() == theirs.model_dump_for_openapi()


def test_unresolvable_annotations_get_a_permissive_property(
    prefect_schemas: dict[str, Any],
) -> None:
    path, theirs = prefect_schemas["others"]
    ours = parameter_schema(_metadata(path, "others"))
    props = ours["properties"]
    assert props["a"] == {"title": "a", "position": 0, "default": None}
    assert props["b"] == {"title": "b", "position": 1, "default": None}
    # Color.RED is not a literal: the flow's own default applies at run time.
    assert props["c"] == {"title": "c", "position": 2}
    assert props["d"] == {"title": "d", "position": 3, "default": None}
    assert props["h"] == {"title": "h", "position": 7, "default": []}
    registered = theirs.model_dump(exclude_unset=True)["properties"]
    # Where Prefect cannot resolve the annotation either, it is permissive too: the same.
    assert props["a"] == registered["a"]
    assert props["f"] == registered["f"] == {"title": "f", "position": 5, "default": 3}
    assert "required" not in ours


def test_schema_of_a_hand_written_flow_needs_no_prefect() -> None:
    flow = FlowMetadata(
        name="etl",
        function="etl",
        path="flows/etl.py",
        parameters=(
            Parameter("rows", "int"),
            Parameter("mode", 'Literal["fast", "slow"]', "fast", required=False),
            Parameter("when", "datetime | None", None, required=False),
        ),
        docstring="ETL.\n\nArgs:\n    rows: how many rows\n",
    )
    assert parameter_schema(flow) == {
        "title": "Parameters",
        "type": "object",
        "properties": {
            "rows": {
                "title": "rows",
                "position": 0,
                "type": "integer",
                "description": "how many rows",
            },
            "mode": {
                "title": "mode",
                "position": 1,
                "enum": ["fast", "slow"],
                "type": "string",
                "default": "fast",
            },
            "when": {
                "title": "when",
                "position": 2,
                "anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["rows"],
    }


def test_non_literal_defaults_are_evaluated_only_when_safe() -> None:
    flow = FlowMetadata(
        name="f",
        function="f",
        path="f.py",
        parameters=(
            Parameter("a", "set[int]", "{1, 2}", required=False, default_is_literal=False),
            Parameter("b", "list[int]", "list()", required=False, default_is_literal=False),
            Parameter("c", "bytes", "b'x'", required=False, default_is_literal=False),
            Parameter("d", "int", "compute()", required=False, default_is_literal=False),
            Parameter("e", "str", "os.sep", required=False, default_is_literal=False),
            Parameter("f", "Path", "Path('a', 'b')", required=False, default_is_literal=False),
        ),
    )
    props = parameter_schema(flow)["properties"]
    assert props["a"]["default"] == [1, 2]
    assert props["b"]["default"] == []
    assert props["c"]["default"] == "x"
    assert "default" not in props["d"]
    assert "default" not in props["e"]
    assert props["f"]["default"] == "a/b"


def test_parameter_schema_does_not_import_prefect() -> None:
    code = textwrap.dedent(
        """
        import sys
        from deploy_lib.models import FlowMetadata, Parameter
        from deploy_lib.parameters import parameter_schema
        flow = FlowMetadata(name="f", function="f", path="f.py",
                            parameters=(Parameter("x", "Optional[int]", None, False),))
        parameter_schema(flow)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "pydantic")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    assert json.loads(out.stdout.replace("'", '"')) == []


DOCSTRINGS = [
    "Summary.\n\nArgs:\n    a: first\n    b (int): second\n        more\n          deeper\n",
    "Summary.\nArgs:\n    a: no blank line above, so not a section\n",
    "Summary.\n\nArgs:\n\n    a: a blank line below the title\n",
    "Summary.\n\nParameters:\n  a: two-space indent\n    continued\n  b: x\nArguments:\n  c: y\n",
    "Summary.\n\n```\nArgs:\n    a: inside a code fence\n```\n\nParams:\n    z: z\n",
    "Summary\n\nArgs:\n    a : spaced name\n    no colon here\n    b:\n    *args: starred\n",
    "Args:\n    first: at the very top\n",
    "Example:\n    Args:\n        a: nested in an admonition\n",
    "Note:\n    some note\n\nArgs:\n    q: here\n      odd indent\n",
    "Summary.\n\nReturns:\n    int: not a parameter\n\nRaises:\n    ValueError: nor this\n",
]


@pytest.mark.parametrize("docstring", DOCSTRINGS)
def test_parameter_docstrings_read_like_prefect(docstring: str) -> None:
    from prefect.utilities.callables import parameter_docstrings as prefect_docstrings

    assert parameter_docstrings(docstring) == prefect_docstrings(docstring)


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        ("int", 3, True),
        ("int", True, False),
        ("int", "3", False),
        ("float", 3, True),
        ("float", 2.5, True),
        ("float", False, False),
        ("str", "x", True),
        ("str", 1, False),
        ("bool", False, True),
        ("bool", 0, False),
        ("Optional[int]", None, True),
        ("int | None", "x", False),
        ("Union[int, str]", "x", True),
        ("Literal['a', 'b']", "a", True),
        ("Literal['a', 'b']", "c", False),
        ("Literal[1]", True, False),
        ("list[int]", [1, 2], True),
        ("list[int]", [1, "2"], False),
        ("List[str]", "abc", False),
        ("tuple[int, str]", [1, "a"], True),
        ("tuple[int, str]", [1], False),
        ("tuple[int, ...]", [1, 2, 3], True),
        ("dict[str, int]", {"a": 1}, True),
        ("dict[str, int]", {"a": "1"}, False),
        ("Dict", [], False),
        ("datetime", "2024-01-02T03:04:05", True),
        ("datetime.datetime", "yesterday", False),
        ("date", "2024-01-02", True),
        ("date", "2024-13-02", False),
        ("Any", object(), True),
        ('"int"', 1, True),
        ("list[MyModel]", [1], None),
        ("MyModel", {}, None),
        ("Optional[MyModel]", {}, None),
        ("Optional[MyModel]", None, True),
        ("not python (", 1, None),
    ],
)
def test_python_type_check(annotation: str, value: Any, expected: bool | None) -> None:
    assert python_type_check(annotation, value) is expected


REPO = Path(__file__).resolve().parents[1]


def test_schema_of_every_example_flow_equals_prefects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real path: discovery reads the example flows, we compute each schema from that
    metadata, and Prefect computes it by importing the flow."""
    from prefect.utilities.callables import parameter_schema as prefect_parameter_schema

    from deploy_lib.discovery import discover_flows

    monkeypatch.syspath_prepend(str(REPO))
    flows = discover_flows(REPO, ["flows"]).flows
    assert len(flows) >= 5
    for flow in flows:
        module = importlib.import_module(flow.module_path)
        theirs = prefect_parameter_schema(getattr(module, flow.function))
        assert parameter_schema(flow) == theirs.model_dump(exclude_unset=True), flow.entrypoint


def test_a_default_that_is_no_json_number_is_left_out_of_the_schema() -> None:
    flow = FlowMetadata(
        name="f",
        function="f",
        path="f.py",
        parameters=(
            Parameter("limit", annotation="float", default=float("inf"), required=False),
            Parameter("rows", annotation="int", default=3, required=False),
        ),
    )

    properties = parameter_schema(flow)["properties"]

    assert "default" not in properties["limit"]
    assert properties["rows"]["default"] == 3
    assert json.dumps(parameter_schema(flow), allow_nan=False)  # valid JSON, no Infinity


# -- a repository as real ones are: every corpus flow against Prefect's own schema -------

CORPUS = Path(__file__).resolve().parent / "corpus"
# Defaults Prefect computes by running code at import time (datetime.today()): left out
# of our schema on purpose, so the flow's own default applies at run time.
EXPRESSION_DEFAULTS = {("fetch", "since")}


@pytest.fixture(scope="module")
def corpus_flows() -> list[FlowMetadata]:
    from deploy_lib.discovery import discover_flows

    return list(discover_flows(CORPUS, ["pipelines"]).flows)


def _corpus_ids() -> list[str]:
    from deploy_lib.discovery import discover_flows

    return [f.entrypoint for f in discover_flows(CORPUS, ["pipelines"]).flows]


@pytest.mark.parametrize("entrypoint", _corpus_ids())
def test_every_corpus_flow_that_imports_has_prefects_own_schema(
    entrypoint: str, corpus_flows: list[FlowMetadata], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.utilities.callables import parameter_schema as prefect_parameter_schema

    flow = next(f for f in corpus_flows if f.entrypoint == entrypoint)
    monkeypatch.syspath_prepend(str(CORPUS))
    for name in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module(flow.module_path)
    theirs = prefect_parameter_schema(getattr(module, flow.function)).model_dump(
        exclude_unset=True
    )
    for function, name in EXPRESSION_DEFAULTS:
        if function == flow.function:
            theirs["properties"][name].pop("default")
    assert parameter_schema(flow) == theirs


def test_the_corpus_covers_models_enums_dataclasses_typeddicts_and_aliases(
    corpus_flows: list[FlowMetadata],
) -> None:
    schemas = {f.function: parameter_schema(f) for f in corpus_flows}
    definitions = {
        name: schema.get("definitions", {}) for name, schema in schemas.items()
    }
    assert set(definitions["load_records"]) == {"Address", "Record"}
    assert set(definitions["run_pipeline"]) == {"PipelineConfig", "Priority", "Target", "Unit"}
    assert set(definitions["export"]) == {"PipelineConfig", "Priority", "Target", "Unit"}
    assert set(definitions["paint"]) == {"Color", "Level", "Size", "Step"}
    assert set(definitions["shapes"]) == {"Options", "Partial", "Point", "Window"}
    convert = schemas["convert"]["properties"]
    assert convert["start"]["format"] == "date-time"  # `from datetime import datetime as dt`
    assert convert["currency"]["enum"] == ["USD", "EUR"]  # Currency = Literal[...]


def test_a_model_parameter_refuses_what_the_model_refuses() -> None:
    """The point of the definitions: the server checks values against them."""
    import jsonschema

    from deploy_lib.discovery import discover_flows

    (flow,) = [
        f for f in discover_flows(CORPUS, ["pipelines"]).flows if f.function == "load_records"
    ]
    schema = parameter_schema(flow)
    good = {"data": [{"id": 1, "kind": "company"}]}
    jsonschema.validate(good, schema)
    for bad in ({"data": [{"id": "one"}]}, {"data": [{"kind": "robot", "id": 1}]}, {"data": {}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_parameter_whose_type_cannot_be_read_stays_permissive_and_says_why(
    tmp_path: Path,
) -> None:
    from deploy_lib.discovery import discover_flows

    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "odd.py").write_text(
        textwrap.dedent(
            """
            from prefect import flow
            from somewhere_else import Thing

            class Plain:
                pass

            @flow
            def odd(a: Plain = None, b: Thing = None, c: int = 1):
                pass
            """
        )
    )
    (flow,) = discover_flows(tmp_path).flows
    props = parameter_schema(flow)["properties"]
    assert props["a"] == {"title": "a", "position": 0, "default": None}
    assert props["b"] == {"title": "b", "position": 1, "default": None}
    notes = dict(schema_notes(flow))
    assert "Plain (flows/odd.py) is a plain class" in notes["a"]
    assert "somewhere_else.Thing" in notes["b"]
    assert "c" not in notes
