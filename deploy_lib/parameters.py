"""A flow's parameter schema and parameter type checks, computed from source text alone.

``parameter_schema(flow)`` returns what Prefect's own
``prefect.utilities.callables.parameter_schema(fn).model_dump(exclude_unset=True)``
returns (the form ``RunnerDeployment`` sends to the API), for parameters annotated with
builtin scalars, ``Optional``/``Union``/``X | None``, ``Literal``, the ``list``, ``tuple``,
``set``, ``dict`` (and ``typing``/``collections.abc``) generics, ``datetime``, ``date``,
``timedelta``, ``UUID``, ``Path``, ``Any`` and no annotation at all.  Any other
annotation (a custom class, a pydantic model, an alias we cannot resolve without
importing the module) gets a permissive property: title, position, default and
description, no type.  Nothing here imports Prefect, pydantic or the flow's module.

``python_type_check(annotation, value)`` tells whether a value suits an annotation from
that same set, or ``None`` when it cannot tell.
"""

from __future__ import annotations

import ast
import copy
import datetime as _dt
import inspect
import json
import math
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from deploy_lib.models import FIELD_CONSTRAINTS, FIELD_MARK, FlowMetadata, Parameter, json_value
from deploy_lib.models import TYPE_REFERENCE as REFERENCE

__all__ = ["parameter_docstrings", "parameter_schema", "python_type_check", "schema_notes"]


class _Unsupported(Exception):
    """The annotation uses something we cannot map without importing the module."""


# Names as written in source, mapped to one canonical spelling.
_TYPING = ("", "typing.", "typing_extensions.")
_ABC = ("", "typing.", "collections.abc.")


def _aliases(names: tuple[str, ...], prefixes: tuple[str, ...], canonical: str) -> dict[str, str]:
    return {prefix + name: canonical for prefix in prefixes for name in names}


_CANONICAL: dict[str, str] = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "bytes": "bytes",
    "object": "any",
    "list": "list",
    "tuple": "tuple",
    "set": "set",
    "frozenset": "set",
    "dict": "dict",
    **_aliases(("Any",), _TYPING, "any"),
    **_aliases(("Optional",), _TYPING, "optional"),
    **_aliases(("Union",), _TYPING, "union"),
    **_aliases(("Literal",), _TYPING, "literal"),
    **_aliases(("Annotated",), _TYPING, "annotated"),
    **_aliases(("List",), ("", "typing."), "list"),
    **_aliases(("Tuple",), ("", "typing."), "tuple"),
    **_aliases(("Set", "FrozenSet"), ("", "typing."), "set"),
    **_aliases(("Dict",), ("", "typing."), "dict"),
    **_aliases(("Sequence",), _ABC, "list"),
    **_aliases(("Mapping",), _ABC, "dict"),
    **_aliases(("datetime",), ("", "datetime."), "datetime"),
    **_aliases(("date",), ("", "datetime."), "date"),
    **_aliases(("timedelta",), ("", "datetime."), "timedelta"),
    **_aliases(("UUID",), ("", "uuid."), "uuid"),
    **_aliases(("Path",), ("", "pathlib."), "path"),
}

# JSON schema of each scalar, exactly as pydantic writes it.
_SCALAR_SCHEMA: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "bytes": {"format": "binary", "type": "string"},
    "any": {},
    "datetime": {"format": "date-time", "type": "string"},
    "date": {"format": "date", "type": "string"},
    "timedelta": {"format": "duration", "type": "string"},
    "uuid": {"format": "uuid", "type": "string"},
    "path": {"format": "path", "type": "string"},
}
_NULL: dict[str, Any] = {"type": "null"}

# Prefect (and pydantic) type *args as list[...] and **kwargs as dict[str, ...].
_KIND_ORDER = {
    "positional_only": 0,
    "positional_or_keyword": 1,
    "var_positional": 2,
    "keyword_only": 3,
    "var_keyword": 4,
}


def parameter_schema(flow: FlowMetadata) -> dict[str, Any]:
    """The OpenAPI schema of ``flow``'s parameters, as Prefect registers it.

    Takes the flow's metadata (annotations as source text, resolved by discovery where
    they name the project's classes, defaults, ``flow.types`` and the docstring for
    parameter descriptions); returns a new dict.  No side effects.
    """
    descriptions = parameter_docstrings(flow.docstring)
    parameters = sorted(flow.parameters, key=lambda p: _KIND_ORDER.get(p.kind, 1))
    properties: dict[str, Any] = {}
    required: list[str] = []
    definitions: dict[str, Any] = {}
    for position, param in enumerate(parameters):
        if param.name in ("self", "cls"):
            continue  # Prefect leaves these out, but still counts their position
        properties[param.name] = _property(
            param, position, descriptions.get(param.name), flow.types, definitions
        )
        if param.required and param.kind not in ("var_positional", "var_keyword"):
            required.append(param.name)
    schema: dict[str, Any] = {"title": "Parameters", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if definitions:
        schema["definitions"] = definitions
    return schema


def schema_notes(flow: FlowMetadata) -> list[tuple[str, str]]:
    """``(parameter, why)`` for each annotated parameter whose schema accepts any value
    because its type could not be read from source (a plain class, a type from outside
    the project, an expression): the server then checks nothing about it."""
    notes: list[tuple[str, str]] = []
    for param in flow.parameters:
        if param.annotation is None or param.kind in ("var_positional", "var_keyword"):
            continue
        if param.note is not None:
            notes.append((param.name, f"{param.note}; any value is accepted"))
            continue
        try:
            _type_schema(param, flow.types, {})
        except _Unsupported as exc:
            what = str(exc) or param.resolved or param.annotation
            notes.append(
                (param.name, f"type {what} is not one read from source; any value is accepted")
            )
    return notes


def _type_schema(
    param: Parameter, types: Mapping[str, Any], definitions: dict[str, Any]
) -> dict[str, Any]:
    """The JSON schema of ``param``'s annotation; the classes it refers to go into
    ``definitions`` (only when the whole schema resolved).  Raises ``_Unsupported``."""
    annotation = param.resolved or param.annotation
    if annotation is None or REFERENCE not in annotation:
        return _top_level_metadata(_annotation_schema(annotation))
    found: dict[str, Any] = {}
    schema = _top_level_metadata(_schema(_parse(annotation), _Definitions(types, found)))
    definitions.update(found)
    return schema


def _property(
    param: Parameter,
    position: int,
    description: str | None,
    types: Mapping[str, Any],
    definitions: dict[str, Any],
) -> dict[str, Any]:
    try:
        type_schema = _type_schema(param, types, definitions)
    except _Unsupported:
        type_schema = {}
    if param.kind == "var_positional":
        type_schema = {"items": type_schema, "type": "array"}
        default: Any = []
    elif param.kind == "var_keyword":
        type_schema = _dict_schema(_SCALAR_SCHEMA["str"], type_schema)
        default = {}
    elif param.required:
        default = _NO_DEFAULT
    else:
        default = _json_default(param)
    prop = {"title": param.name, "position": position, **type_schema}
    if default is not _NO_DEFAULT:
        prop["default"] = default
    if description is not None:
        prop["description"] = description
    return prop


_NO_DEFAULT: Any = object()


def _annotation_schema(annotation: str | None) -> dict[str, Any]:
    """JSON schema for an annotation's source text (a fresh copy); raises _Unsupported."""
    if annotation is None:
        return {}
    return copy.deepcopy(_cached_annotation_schema(annotation))


@lru_cache(maxsize=4096)
def _cached_annotation_schema(annotation: str) -> dict[str, Any]:
    return _schema(_parse(annotation))


@lru_cache(maxsize=4096)
def _parse(text: str) -> ast.expr:
    """The annotation's syntax tree (cached; callers never change it)."""
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise _Unsupported(text) from exc


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _canonical(node: ast.expr) -> str:
    name = _dotted(node)
    if name is None or name not in _CANONICAL:
        raise _Unsupported(ast.unparse(node))
    return _CANONICAL[name]


def _args(node: ast.Subscript) -> list[ast.expr]:
    inner = node.slice
    return list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]


def _schema(node: ast.expr, ctx: _Definitions | None = None) -> dict[str, Any]:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return dict(_NULL)
        if isinstance(node.value, str):  # a quoted forward reference: "int"
            return _schema(_parse(node.value), ctx)
        raise _Unsupported(repr(node.value))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_schema(node, ctx)
    if isinstance(node, ast.Subscript):
        return _generic_schema(_canonical(node.value), node, ctx)
    name = _dotted(node)
    if name is not None and name.startswith(REFERENCE + "."):
        if ctx is None:
            raise _Unsupported(name)
        return ctx.ref(name[len(REFERENCE) + 1 :])
    kind = _canonical(node)
    if kind in _SCALAR_SCHEMA:
        return dict(_SCALAR_SCHEMA[kind])
    if kind == "list":
        return {"items": {}, "type": "array"}
    if kind == "tuple":
        return {"items": {}, "type": "array"}
    if kind == "set":
        return {"items": {}, "type": "array", "uniqueItems": True}
    if kind == "dict":
        return {"additionalProperties": True, "type": "object"}
    raise _Unsupported(ast.unparse(node))  # bare Optional, Union, Literal


def _generic_schema(kind: str, node: ast.Subscript, ctx: _Definitions | None) -> dict[str, Any]:
    args = _args(node)
    if kind in ("optional", "union"):
        return _union_schema(node, ctx)
    if kind == "literal":
        return _literal_schema(list(_literal_values(node)))
    if kind == "annotated":
        annotated = _schema(args[0], ctx)
        for meta in args[1:]:
            if isinstance(meta, ast.Constant) and isinstance(meta.value, str):
                continue  # pydantic ignores metadata it does not know
            if not (isinstance(meta, ast.Call) and _dotted(meta.func) == FIELD_MARK):
                raise _Unsupported(ast.unparse(node))
            info = {k.arg: ast.literal_eval(k.value) for k in meta.keywords if k.arg}
            constraints = {k: v for k, v in info.items() if k in FIELD_CONSTRAINTS}
            annotated = _constrained(annotated, constraints)
            # Field information (title, description) rides along for the field to use.
            annotated.update({f"__{k}": v for k, v in info.items() if k not in FIELD_CONSTRAINTS})
        return annotated
    if kind == "list" and len(args) == 1:
        return {"items": _schema(args[0], ctx), "type": "array"}
    if kind == "set" and len(args) == 1:
        return {"items": _schema(args[0], ctx), "type": "array", "uniqueItems": True}
    if kind == "tuple":
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return {"items": _schema(args[0], ctx), "type": "array"}
        items = [] if _is_empty_tuple(node.slice) else [_schema(a, ctx) for a in args]
        schema: dict[str, Any] = {"type": "array"}
        if items:
            schema["prefixItems"] = items
        schema["minItems"] = len(items)
        schema["maxItems"] = len(items)
        return schema
    if kind == "dict" and len(args) == 2:
        return _dict_schema(_schema(args[0], ctx), _schema(args[1], ctx))
    raise _Unsupported(ast.unparse(node))


def _is_empty_tuple(node: ast.expr) -> bool:
    return isinstance(node, ast.Tuple) and not node.elts


def _dict_schema(keys: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """pydantic's dict schema: values under additionalProperties, key constraints under
    propertyNames (a key pattern would go to patternProperties; none of ours has one)."""
    schema: dict[str, Any] = {"type": "object"}
    schema["additionalProperties"] = dict(values) if values else True
    if keys.get("type") == "string" and len(keys) > 1:
        schema["propertyNames"] = {k: v for k, v in keys.items() if k != "type"}
    return schema


def _union_members(node: ast.expr) -> Iterator[ast.expr]:
    """The members of a union, nested unions flattened as ``typing.Union`` does."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        yield from _union_members(node.left)
        yield from _union_members(node.right)
        return
    if isinstance(node, ast.Subscript) and _dotted(node.value) in _CANONICAL:
        kind = _CANONICAL[_dotted(node.value) or ""]
        if kind == "optional":
            args = _args(node)
            if len(args) != 1:
                raise _Unsupported(ast.unparse(node))
            yield from _union_members(args[0])
            yield ast.Constant(value=None)
            return
        if kind == "union":
            for arg in _args(node):
                yield from _union_members(arg)
            return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield from _union_members(_parse(node.value))
        return
    yield node


def _union_schema(node: ast.expr, ctx: _Definitions | None = None) -> dict[str, Any]:
    """pydantic: ``None`` becomes a trailing ``{"type": "null"}``; members' anyOf lists are
    flattened and duplicates dropped; a single member stands alone."""
    members = list(_union_members(node))
    nullable = any(isinstance(m, ast.Constant) and m.value is None for m in members)
    schemas = [
        _schema(m, ctx) for m in members if not (isinstance(m, ast.Constant) and m.value is None)
    ]
    if not schemas:
        return dict(_NULL)
    base = schemas[0] if len(schemas) == 1 else _flattened_any_of(schemas)
    if not nullable:
        return base
    if base == _NULL:
        return dict(_NULL)
    return _flattened_any_of([base, dict(_NULL)])


def _flattened_any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    members: list[dict[str, Any]] = []
    for schema in schemas:
        if len(schema) == 1 and "anyOf" in schema:
            members.extend(schema["anyOf"])
        else:
            members.append(schema)
    unique: dict[str, dict[str, Any]] = {}
    for member in members:
        unique[_hashable(member)] = member
    deduplicated = list(unique.values())
    return deduplicated[0] if len(deduplicated) == 1 else {"anyOf": deduplicated}


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _literal_values(node: ast.Subscript) -> Iterator[Any]:
    seen: set[tuple[type, Any]] = set()
    for arg in _args(node):
        for value in _literal_arg(arg):
            key = (type(value), value)
            if key not in seen:
                seen.add(key)
                yield value


def _literal_arg(node: ast.expr) -> Iterator[Any]:
    if isinstance(node, ast.Subscript) and _CANONICAL.get(_dotted(node.value) or "") == "literal":
        yield from _literal_values(node)
        return
    try:
        value = ast.literal_eval(node)
    except ValueError as exc:
        raise _Unsupported(ast.unparse(node)) from exc
    if value is not None and not isinstance(value, (str, bytes, int, float, bool)):
        raise _Unsupported(ast.unparse(node))
    yield value


def _literal_schema(values: list[Any]) -> dict[str, Any]:
    expected = [_jsonable(v) for v in values]
    schema: dict[str, Any] = {}
    if len(expected) == 1:
        schema["const"] = expected[0]
    else:
        schema["enum"] = expected
    types = {type(e) for e in expected}
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if len(types) == 1 and next(iter(types)) in names:
        schema["type"] = names[next(iter(types))]
    return schema


# ------------------------------------------------------------------- definitions


class _Definitions:
    """The classes a schema refers to, written as pydantic writes them under
    ``definitions`` (``$ref: #/definitions/<Name>``).  ``types`` holds what discovery
    read of each class (see ``pysource.Resolver``); ``found`` collects the written ones."""

    def __init__(self, types: Mapping[str, Any], found: dict[str, Any]) -> None:
        self.types = types
        self.found = found
        self.titles: dict[str, str] = {}

    def ref(self, key: str) -> dict[str, Any]:
        definition = self.types.get(key)
        if not isinstance(definition, Mapping):
            raise _Unsupported(key)
        title = str(definition.get("title") or key)
        if self.titles.setdefault(title, key) != key:
            # Two classes of one name: pydantic names them by module; not mapped here.
            raise _Unsupported(f"two classes named {title}")
        if title not in self.found:
            self.found[title] = {}  # placeholder first: a model may refer to itself
            self.found[title] = self._write(definition, title)
        return {"$ref": f"#/definitions/{title}"}

    def _write(self, definition: Mapping[str, Any], title: str) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        description = definition.get("description")
        if description:
            schema["description"] = description
        if definition.get("kind") == "enum":
            values = list(definition.get("values") or [])
            schema["enum"] = values
            schema["title"] = title
            json_type = _single_json_type(values)
            if json_type:
                schema["type"] = json_type
            return schema
        properties: dict[str, Any] = {}
        required: list[str] = []
        for item in definition.get("fields") or ():
            key = str(item.get("alias") or item["name"])
            properties[key] = self._field(item, key)
            if item.get("required"):
                required.append(key)
        schema["properties"] = properties
        if required:
            schema["required"] = required
        schema["title"] = title
        schema["type"] = "object"
        if definition.get("extra") == "forbid":
            schema["additionalProperties"] = False
        elif definition.get("extra") == "allow":
            schema["additionalProperties"] = True
        return schema

    def _field(self, item: Mapping[str, Any], key: str) -> dict[str, Any]:
        if item.get("opaque_default") is not None:
            raise _Unsupported(f"default {item['opaque_default']}")
        schema = _schema(_parse(str(item["annotation"])), self)
        constraints = {k: item[k] for k in FIELD_CONSTRAINTS if k in item}
        schema = _constrained(schema, constraints)
        extra = {k[2:]: schema.pop(k) for k in list(schema) if k.startswith("__")}
        if _marked(schema):
            raise _Unsupported("Annotated field information nested in a type")
        info = {**extra, **{k: item[k] for k in ("title", "description", "examples") if k in item}}
        if "title" not in info and _titled(schema):
            info["title"] = key.title().replace("_", " ").strip()
        if "default" in item:
            schema["default"] = item["default"]
        for name in ("title", "description", "examples"):
            if name in info:
                schema[name] = info[name]
        return schema


def _titled(schema: Mapping[str, Any]) -> bool:
    """pydantic gives a field a title unless its schema refers to a class (itself, or
    as the one member of ``X | None``)."""
    if "$ref" in schema:
        return False
    members = schema.get("anyOf")
    if isinstance(members, list):
        others = [m for m in members if m != _NULL]
        if len(members) == 2 and len(others) == 1 and "$ref" in others[0]:
            return False
    return True


# JSON schema keywords of Field(...) constraints, by the JSON type they apply to.
_CONSTRAINT_KEYWORDS: dict[str, dict[str, str]] = {
    "string": {"min_length": "minLength", "max_length": "maxLength", "pattern": "pattern"},
    "array": {"min_length": "minItems", "max_length": "maxItems"},
    "object": {"min_length": "minProperties", "max_length": "maxProperties"},
    "integer": {
        "gt": "exclusiveMinimum",
        "ge": "minimum",
        "lt": "exclusiveMaximum",
        "le": "maximum",
        "multiple_of": "multipleOf",
    },
}
_CONSTRAINT_KEYWORDS["number"] = _CONSTRAINT_KEYWORDS["integer"]


def _constrained(schema: dict[str, Any], constraints: Mapping[str, Any]) -> dict[str, Any]:
    if not constraints:
        return schema
    keywords = _CONSTRAINT_KEYWORDS.get(str(schema.get("type")))
    if keywords is None or "format" in schema or any(k not in keywords for k in constraints):
        raise _Unsupported(f"constraints {sorted(constraints)} on {schema}")
    return {**schema, **{keywords[k]: v for k, v in constraints.items()}}


def _top_level_metadata(schema: dict[str, Any]) -> dict[str, Any]:
    """A flow parameter's ``Annotated[..., Field(title=/description=)]`` meets the title
    and description Prefect sets itself: not mapped here."""
    if _marked(schema):
        raise _Unsupported("Annotated field information on a flow parameter")
    return schema


def _marked(value: Any) -> bool:
    """Whether Annotated field information is left anywhere in ``value`` (it belongs to
    a field, and nested deeper pydantic would place it where this module does not)."""
    if isinstance(value, dict):
        return any(str(k).startswith("__") or _marked(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_marked(v) for v in value)
    return False


def _single_json_type(values: list[Any]) -> str | None:
    names = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    types = {type(v) for v in values}
    if len(types) == 1 and next(iter(types)) in names:
        return names[next(iter(types))]
    return None


# ---------------------------------------------------------------------------- defaults


def _json_default(param: Parameter) -> Any:
    """The default as pydantic encodes it in JSON mode; _NO_DEFAULT when the default is an
    expression we cannot evaluate without running the module (the flow then uses its
    own default at run time)."""
    try:
        value = param.default if param.default_is_literal else _evaluate(_parse(str(param.default)))
        value = _jsonable(value)
    except (_Unsupported, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NO_DEFAULT
    if not _finite(value):
        # inf / nan are no JSON numbers: sent as Infinity, every plan would show a change.
        return _NO_DEFAULT
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


# Constructors whose call on literals we evaluate, and how pydantic writes the result.
_CONSTRUCTORS: dict[str, Any] = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "dict": dict,
    "Path": lambda *a: str(PurePosixPath(*a)),
    "pathlib.Path": lambda *a: str(PurePosixPath(*a)),
    "datetime": lambda *a: _dt.datetime(*a).isoformat(),
    "datetime.datetime": lambda *a: _dt.datetime(*a).isoformat(),
    "date": lambda *a: _dt.date(*a).isoformat(),
    "datetime.date": lambda *a: _dt.date(*a).isoformat(),
}


def _evaluate(node: ast.expr) -> Any:
    """A literal, or one of _CONSTRUCTORS called with literal positional arguments."""
    if isinstance(node, ast.Call) and not node.keywords:
        constructor = _CONSTRUCTORS.get(_dotted(node.func) or "")
        if constructor is None:
            raise _Unsupported(ast.unparse(node))
        return constructor(*(_evaluate(arg) for arg in node.args))
    return ast.literal_eval(node)


def _jsonable(value: Any) -> Any:
    try:
        return json_value(value)
    except ValueError as exc:
        raise _Unsupported(repr(value)) from exc


# ---------------------------------------------------------------- docstring parameters

_SECTION = re.compile(r"^(?P<type>[\w][\s\w-]*):(\s+(?P<title>[^\s].*))?\s*$", re.IGNORECASE)
_PARAMETER_SECTIONS = frozenset({"args", "arguments", "params", "parameters"})


def parameter_docstrings(docstring: str | None) -> dict[str, str]:
    """Parameter descriptions from a Google-style docstring (``Args:`` and its aliases),
    read the way Prefect reads them (through griffe): ``name (type): text`` items, their
    continuation lines joined with newlines; the last parameters section wins."""
    if not docstring:
        return {}
    lines = inspect.cleandoc(docstring.rstrip()).split("\n")
    found: dict[str, str] = {}
    in_code = False
    offset = 0
    while offset < len(lines):
        line = lines[offset]
        fence = line.lstrip(" ").startswith("```")
        if in_code or fence:
            in_code = in_code != fence
            offset += 1
            continue
        match = _SECTION.match(line) if ":" in line else None
        if match is None or not _is_section_start(lines, offset):
            offset += 1
            continue
        block, offset = _block(lines, offset + 1)
        if match.group("type").lower() in _PARAMETER_SECTIONS:
            found = dict(_parameter_items(block))
        offset += 1
    return found


def _is_empty(line: str) -> bool:
    return not line.strip()


def _is_section_start(lines: list[str], offset: int) -> bool:
    """griffe's rules: indented content right below (or after one blank line), a blank
    line (or nothing) above, and no blank line between the title and indented content."""
    count = len(lines)
    below = offset < count - 1 and _is_empty(lines[offset + 1])
    below2 = offset < count - 2 and _is_empty(lines[offset + 2])
    indented = offset < count - 1 and not below and lines[offset + 1].startswith(" ")
    indented2 = offset < count - 2 and not below2 and lines[offset + 2].startswith(" ")
    if not (indented or indented2):
        return False
    above_blank = offset == 0 or _is_empty(lines[offset - 1])
    return above_blank and not (indented2 and below)


def _block(lines: list[str], offset: int) -> tuple[list[tuple[int, list[str]]], int]:
    """griffe's ``_read_block_items``: items at the first line's indent, continuation lines
    at twice that indent.  Returns the items and the offset of the block's last line."""
    if offset >= len(lines):
        return [], offset
    while offset < len(lines) and _is_empty(lines[offset]):
        offset += 1
    if offset >= len(lines):
        return [], offset
    first = lines[offset]
    indent = len(first) - len(first.lstrip())
    if indent == 0:
        return [], offset - 1
    items: list[tuple[int, list[str]]] = []
    current = (offset, [first[indent:]])
    offset += 1
    while offset < len(lines):
        line = lines[offset]
        if _is_empty(line):
            current[1].append("")
        elif line.startswith(" " * indent * 2):
            current[1].append(line[indent * 2 :])
        elif line.startswith(" " * (indent + 1)):
            current[1].append(line.lstrip(" "))
        elif line.startswith(" " * indent):
            items.append(current)
            current = (offset, [line[indent:]])
        else:
            break
        offset += 1
    items.append(current)
    return items, offset - 1


def _parameter_items(block: list[tuple[int, list[str]]]) -> Iterator[tuple[str, str]]:
    for _, item in block:
        if ":" not in item[0]:
            continue
        name_with_type, first = item[0].split(":", 1)
        description = "\n".join([first.lstrip(), *item[1:]]).rstrip("\n")
        if "(" in name_with_type and name_with_type.endswith(")"):
            name_with_type = name_with_type.split("(", 1)[0].strip()
        yield name_with_type, description


# ------------------------------------------------------------------------- type check


def python_type_check(annotation: str, value: Any) -> bool | None:
    """Whether ``value`` (as it will be sent in JSON) suits ``annotation`` (source text).

    True or False for builtin scalars, ``None``, ``Any``, unions, ``Literal``, the list /
    tuple / set / dict generics, ``datetime`` and ``date`` (ISO strings accepted);
    None when the annotation holds anything else, because then we cannot tell.
    """
    try:
        return _check(_parse(annotation), value)
    except _Unsupported:
        return None


def _check(node: ast.expr, value: Any) -> bool | None:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return value is None
        if isinstance(node.value, str):
            return _check(_parse(node.value), value)
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _check_union(node, value)
    if isinstance(node, ast.Subscript):
        return _check_generic(_canonical(node.value), node, value)
    kind = _canonical(node)
    return _check_scalar(kind, value)


def _check_scalar(kind: str, value: Any) -> bool | None:
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("list", "tuple", "set"):
        return isinstance(value, (list, tuple, set, frozenset))
    if kind == "dict":
        return isinstance(value, Mapping)
    if kind == "datetime":
        return isinstance(value, _dt.datetime) or _iso(value, _dt.datetime.fromisoformat)
    if kind == "date":
        if isinstance(value, _dt.datetime):
            return value.time() == _dt.time() and value.tzinfo is None
        return isinstance(value, _dt.date) or _iso(value, _dt.date.fromisoformat)
    return None


def _iso(value: Any, parse: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _check_union(node: ast.expr, value: Any) -> bool | None:
    results = [_check_or_none(member, value) for member in _union_members(node)]
    if any(r is True for r in results):
        return True
    if all(r is False for r in results):
        return False
    return None


def _check_or_none(node: ast.expr, value: Any) -> bool | None:
    try:
        return _check(node, value)
    except _Unsupported:
        return None


def _check_generic(kind: str, node: ast.Subscript, value: Any) -> bool | None:
    args = _args(node)
    if kind in ("optional", "union"):
        return _check_union(node, value)
    if kind == "literal":
        return any(type(value) is type(v) and value == v for v in _literal_values(node))
    if kind in ("list", "set") and len(args) == 1:
        if not isinstance(value, (list, tuple, set, frozenset)):
            return False
        return _all(_check(args[0], item) for item in value)
    if kind == "tuple":
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return _all(_check(args[0], item) for item in value)
        expected = [] if _is_empty_tuple(node.slice) else args
        if len(value) != len(expected):
            return False
        return _all(_check(a, item) for a, item in zip(expected, value, strict=True))
    if kind == "dict" and len(args) == 2:
        if not isinstance(value, Mapping):
            return False
        keys = _all(_check(args[0], k) for k in value) if _is_str(args[0]) else True
        return _all([keys, *(_check(args[1], v) for v in value.values())])
    return None


def _is_str(node: ast.expr) -> bool:
    return _dotted(node) == "str"


def _all(results: Any) -> bool | None:
    """False if any is False, else None if any is None, else True."""
    unknown = False
    for result in results:
        if result is False:
            return False
        if result is None:
            unknown = True
    return None if unknown else True
