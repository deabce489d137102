"""Reading Python source as Python would see it, without running any of it.

Two jobs, both for discovery:

- ``fold(node, scope)``: the value of a literal expression: constants, f-strings whose
  placeholders are themselves literal, ``+ - * / // % **`` of literals (with caps, so
  ``"a" * 10**12`` is refused instead of filling memory), tuples, lists, sets and
  dicts of them, module-level constants (followed through the project's imports),
  class attributes holding a literal and ``Enum`` members (``Color.RED`` and
  ``Color.RED.value``).  Anything else raises ``NotLiteral``.

- ``Resolver.annotation(node, scope)``: an annotation rewritten so that every name in
  it says what it is: ``dt`` (``from datetime import datetime as dt``) becomes
  ``datetime.datetime``, a module-level alias (``Currency = Literal["USD", "EUR"]``) is
  put in its place, and a pydantic model, ``Enum``, dataclass or ``TypedDict`` of the
  project becomes ``__types__.<Name>``, its definition (fields, defaults, ``Field(...)``
  titles, descriptions and constraints, enum values, docstring) kept as plain data in
  ``Resolver.definitions``.  Classes are followed into the project's other modules
  through absolute and relative imports (the project root and the importing file's
  folder are searched, as Python's path does for a script).  What cannot be known
  without running code raises ``Unresolved`` with the reason.

Files are read through the callable the resolver is given (discovery's own reader,
which refuses FIFOs, devices and huge files); nothing is imported.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from deploy_lib.models import FIELD_CONSTRAINTS, FIELD_MARK, EnumMember, json_value
from deploy_lib.models import TYPE_REFERENCE as REFERENCE

__all__ = [
    "EnumMember",
    "NotLiteral",
    "Resolver",
    "Scope",
    "Unresolved",
    "fold",
    "jsonable",
]

# Caps on folded values: bigger results are not literals anyone writes by hand.
_MAX_TEXT = 100_000
_MAX_BITS = 4_096
_MAX_DEPTH = 40
_BUILTINS = frozenset(dir(__import__("builtins")))

_MODEL_BASES = frozenset({"pydantic.BaseModel", "pydantic.main.BaseModel"})
_ENUM_BASES = frozenset(
    {"enum.Enum", "enum.IntEnum", "enum.StrEnum", "enum.Flag", "enum.IntFlag"}
)
_TYPEDDICT_BASES = frozenset({"typing_extensions.TypedDict", "typing.TypedDict"})
_DATACLASS_DECORATORS = frozenset(
    {"dataclasses.dataclass", "pydantic.dataclasses.dataclass"}
)
_FIELD_FUNCTIONS = frozenset({"pydantic.Field", "pydantic.fields.Field"})
_DATACLASS_FIELD = frozenset({"dataclasses.field"})
_CLASSVAR = frozenset({"typing.ClassVar", "typing_extensions.ClassVar"})
_ANNOTATED = frozenset({"typing.Annotated", "typing_extensions.Annotated"})
_LITERAL = frozenset({"typing.Literal", "typing_extensions.Literal"})
_REQUIRED = frozenset({"typing.Required", "typing_extensions.Required"})
_NOT_REQUIRED = frozenset({"typing.NotRequired", "typing_extensions.NotRequired"})
_CONFIG_DICT = frozenset({"pydantic.ConfigDict", "pydantic.config.ConfigDict"})
# Field(...) keywords that change nothing in the JSON schema.
_FIELD_QUIET = frozenset(
    {
        "repr",
        "exclude",
        "frozen",
        "init",
        "init_var",
        "kw_only",
        "validate_default",
        "strict",
        "coerce_numbers_to_str",
        "fail_fast",
    }
)
_FIELD_INFO = frozenset({"title", "description", "examples", "alias"})
# model_config keys that change nothing in the JSON schema (validation mode).
_CONFIG_QUIET = frozenset(
    {
        "frozen",
        "populate_by_name",
        "validate_assignment",
        "arbitrary_types_allowed",
        "str_strip_whitespace",
        "str_to_lower",
        "str_to_upper",
        "use_enum_values",
        "from_attributes",
        "validate_default",
        "protected_namespaces",
        "revalidate_instances",
        "validate_by_name",
        "validate_by_alias",
        "serialize_by_alias",
        "ser_json_timedelta",
        "hide_input_in_errors",
        "defer_build",
    }
)


class NotLiteral(Exception):
    """The expression's value cannot be known without running code."""


class Unresolved(Exception):
    """An annotation names something this module cannot describe; str() says why."""


def jsonable(value: Any) -> Any:
    """A folded value as pydantic writes it in JSON (``models.json_value``); raises
    ``NotLiteral`` for what JSON cannot hold."""
    try:
        return json_value(value)
    except ValueError as exc:
        raise NotLiteral(str(exc)) from exc


# --------------------------------------------------------------------------- scopes


@dataclass
class Scope:
    """One module's top level: what each name is bound to.

    ``imports`` maps a name to the dotted target it stands for (``datetime.datetime``,
    ``flows.models.Record``, a module ``flows.models``), with relative imports already
    made absolute; ``assigned`` holds the last module-level value of each name;
    ``classes`` the class statements.
    """

    path: str
    module: str
    imports: dict[str, str] = field(default_factory=dict)
    assigned: dict[str, ast.expr] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)
    type_aliases: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, tree: ast.Module, path: str, module: str, is_package: bool = False) -> Scope:
        scope = cls(path=path, module=module)
        package = module if is_package else module.rpartition(".")[0]
        for node in module_statements(tree.body):
            scope._bind(node, package)
        return scope

    def _bind(self, node: ast.stmt, package: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".", 1)[0]
                    self.imports[head] = head
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            if base is None:
                return
            for alias in node.names:
                if alias.name != "*":
                    self.imports[alias.asname or alias.name] = (
                        f"{base}.{alias.name}" if base else alias.name
                    )
        elif isinstance(node, ast.ClassDef):
            self.classes[node.name] = node
            self.assigned.pop(node.name, None)
            self.imports.pop(node.name, None)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self._assign(target.id, node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.value is not None:
                self._assign(node.target.id, node.value)
        elif type(node).__name__ == "TypeAlias":  # `type X = ...` (Python 3.12)
            alias_node: Any = node
            if isinstance(alias_node.name, ast.Name):
                self._assign(alias_node.name.id, alias_node.value)
                self.type_aliases.add(alias_node.name.id)

    def _assign(self, name: str, value: ast.expr) -> None:
        self.assigned[name] = value
        self.classes.pop(name, None)
        self.imports.pop(name, None)


def _absolute(module: str | None, level: int, package: str) -> str | None:
    """``from ..x import y`` in package ``a.b.c`` -> ``a.b.x``; None when it leaves the top."""
    if not level:
        return module or ""
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base)


def module_statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run at import time at module scope, through if/try/with blocks
    (the ``if __name__ == "__main__":`` block excluded, ``TYPE_CHECKING`` included)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if _is_main_guard(node.test):
                yield from module_statements(node.orelse)
                continue
            yield from module_statements(node.body)
            yield from module_statements(node.orelse)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            try_node: Any = node
            yield from module_statements(try_node.body)
            for handler in try_node.handlers:
                yield from module_statements(handler.body)
            yield from module_statements(try_node.orelse)
            yield from module_statements(try_node.finalbody)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from module_statements(node.body)


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


# --------------------------------------------------------------------------- folding

# What a dotted name turned out to be.
@dataclass(frozen=True)
class _Found:
    kind: str  # "class", "value", "external", "builtin", "module", "function"
    scope: Scope | None = None
    node: Any = None
    name: str = ""


class Resolver:
    """Follows names through one project's modules.

    ``read(rel_path)`` returns the parsed module at that project-relative path (and
    whether it is a package ``__init__``), or None when there is no such readable
    file; each file is read once per resolver.  ``definitions`` collects the classes
    that ``annotation`` met, keyed by the name used after ``__types__.``.
    """

    def __init__(self, read: Callable[[str], ast.Module | None]) -> None:
        self._read = read
        self._scopes: dict[str, Scope | None] = {}
        self.definitions: dict[str, dict[str, Any]] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._failed: dict[tuple[str, str], str] = {}
        # The files each definition was read from (its own and those it refers to).
        self._deps: dict[str, set[str]] = {}
        self._class_kinds: dict[tuple[str, str], str | None] = {}
        # Files a result depended on (beyond the flow's own), for the discovery cache.
        self.used: set[str] = set()

    # -- modules

    def scope_for(self, path: str) -> Scope | None:
        """The scope of the module at ``path`` (project-relative), parsed once."""
        if path not in self._scopes:
            tree = self._read(path)
            self._scopes[path] = None
            if tree is not None:
                is_package = path.endswith("/__init__.py") or path == "__init__.py"
                self._scopes[path] = Scope.of(tree, path, _module_name(path), is_package)
        return self._scopes[path]

    def add_scope(self, scope: Scope) -> None:
        self._scopes[scope.path] = scope

    def _module_file(self, module: str, near: Scope) -> str | None:
        """The project file of dotted ``module``: under the project root, else (an
        absolute import in a script) beside the importing file."""
        rel = module.replace(".", "/")
        folder = os.path.dirname(near.path)
        candidates = [f"{rel}.py", f"{rel}/__init__.py"]
        if folder:
            candidates += [f"{folder}/{rel}.py", f"{folder}/{rel}/__init__.py"]
        for candidate in candidates:
            if self.scope_for(candidate) is not None:
                if candidate != near.path:
                    self.used.add(candidate)
                return candidate
        return None

    def lookup(self, name: str, scope: Scope, depth: int = 0) -> _Found | None:
        """What the dotted ``name`` is, seen from ``scope``; None when unknown."""
        if depth > _MAX_DEPTH:
            return None
        head, _, rest = name.partition(".")
        if head in scope.classes:
            found = _Found("class", scope, scope.classes[head], head)
        elif head in scope.assigned:
            found = _Found("value", scope, scope.assigned[head], head)
        elif head in scope.functions:
            found = _Found("function", scope, None, head)
        elif head in scope.imports:
            return self._qualified(scope.imports[head], rest, scope, depth)
        elif head in _BUILTINS:
            return _Found("builtin", name=name) if not rest else None
        else:
            return None
        return self._member(found, rest, depth) if rest else found

    def _qualified(self, target: str, rest: str, near: Scope, depth: int) -> _Found | None:
        """``target`` (``pkg.mod.Name``) then ``rest``: into the project if it is there."""
        full = f"{target}.{rest}" if rest else target
        parts = full.split(".")
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            path = self._module_file(module, near)
            if path is None:
                continue
            scope = self.scope_for(path)
            assert scope is not None
            remainder = ".".join(parts[cut:])
            if not remainder:
                return _Found("module", scope, None, module)
            return self.lookup(remainder, scope, depth + 1)
        return _Found("external", name=full)

    def _member(self, found: _Found, rest: str, depth: int) -> _Found | None:
        """``Class.ATTR`` (a class attribute) or ``Class.MEMBER.value``."""
        if found.kind != "class" or found.scope is None:
            return None
        attr, _, more = rest.partition(".")
        for node in found.node.body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            )
            if not any(isinstance(t, ast.Name) and t.id == attr for t in targets):
                continue
            assert isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
            if self._is_enum(found):
                # Color.RED (a member) or Color.RED.value (its value); nothing else.
                member = _Found("member", found.scope, (found, attr), attr)
                return member if more in ("", "value") else None
            return _Found("value", found.scope, node.value, attr) if not more else None
        return None

    # -- folding

    def fold(self, node: ast.expr, scope: Scope, depth: int = 0) -> Any:
        """The literal value of ``node`` in ``scope``; raises ``NotLiteral``."""
        if depth > _MAX_DEPTH:
            raise NotLiteral("too deeply nested")
        if isinstance(node, ast.Constant):
            if node.value is Ellipsis:
                raise NotLiteral("...")
            return node.value
        if isinstance(node, ast.JoinedStr):
            return self._fstring(node, scope, depth)
        if isinstance(node, ast.BinOp):
            return _binop(
                node.op, self.fold(node.left, scope, depth + 1), self.fold(node.right, scope, depth + 1)
            )
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.fold(node.operand, scope, depth + 1)
            if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
                raise NotLiteral(ast.unparse(node))
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise NotLiteral(ast.unparse(node))
            items = [self.fold(e, scope, depth + 1) for e in node.elts]
            if isinstance(node, ast.Tuple):
                return tuple(items)
            if isinstance(node, ast.Set):
                try:
                    return set(items)
                except TypeError as exc:
                    raise NotLiteral(ast.unparse(node)) from exc
            return items
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise NotLiteral(ast.unparse(node))
            try:
                return {
                    self.fold(k, scope, depth + 1): self.fold(v, scope, depth + 1)
                    for k, v in zip(node.keys, node.values, strict=True)
                    if k is not None
                }
            except TypeError as exc:
                raise NotLiteral(ast.unparse(node)) from exc
        if isinstance(node, ast.Call):
            return self._instance(node, scope, depth)
        name = dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
        if name is not None:
            found = self.lookup(name, scope)
            if found is not None:
                if found.kind == "value":
                    return self.fold(found.node, found.scope or scope, depth + 1)
                if found.kind == "member":
                    return self._member_value(found, name.endswith(".value"))
        raise NotLiteral(ast.unparse(node))

    def _instance(self, node: ast.Call, scope: Scope, depth: int) -> dict[str, Any]:
        """``Address(street="Main St")``: a model or dataclass of the project made of
        literals, as pydantic writes it in JSON (every field, defaults filled in)."""
        name = dotted(node.func)
        found = self.lookup(name, scope) if name else None
        if found is None or found.kind != "class" or self._kind_of(found) not in ("model", "dataclass"):
            raise NotLiteral(ast.unparse(node))
        try:
            definition = self.definitions.get(self.define(found))
        except Unresolved as exc:
            raise NotLiteral(str(exc)) from exc
        fields = list((definition or {}).get("fields") or ())
        if any(f.get("alias") for f in fields) or any(k.arg is None for k in node.keywords):
            raise NotLiteral(ast.unparse(node))
        positional = node.args if self._kind_of(found) == "dataclass" else []
        if len(node.args) != len(positional) or len(positional) > len(fields):
            raise NotLiteral(ast.unparse(node))
        given = {f["name"]: arg for f, arg in zip(fields, positional, strict=False)}
        for keyword in node.keywords:
            given[str(keyword.arg)] = keyword.value
        if set(given) - {f["name"] for f in fields}:
            raise NotLiteral(ast.unparse(node))
        out: dict[str, Any] = {}
        for item in fields:
            if item["name"] in given:
                out[item["name"]] = jsonable(self.fold(given[item["name"]], scope, depth + 1))
            elif "default" in item:
                out[item["name"]] = item["default"]
            else:
                raise NotLiteral(ast.unparse(node))  # required, or made by a factory
        return out

    def _member_value(self, found: _Found, want_value: bool) -> Any:
        enum, attr = found.node
        try:
            values = self._enum_values(enum)
        except Unresolved as exc:
            raise NotLiteral(str(exc)) from exc
        if attr not in values:
            raise NotLiteral(f"{enum.name}.{attr}")
        return values[attr] if want_value else EnumMember(enum.name, attr, values[attr])

    def _fstring(self, node: ast.JoinedStr, scope: Scope, depth: int) -> str:
        out: list[str] = []
        for part in node.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                out.append(part.value)
                continue
            if not isinstance(part, ast.FormattedValue):
                raise NotLiteral(ast.unparse(node))
            value = self.fold(part.value, scope, depth + 1)
            if isinstance(value, EnumMember):
                raise NotLiteral(ast.unparse(node))
            if part.conversion == ord("r"):
                value = repr(value)
            elif part.conversion == ord("a"):
                value = ascii(value)
            elif part.conversion == ord("s"):
                value = str(value)
            spec = "" if part.format_spec is None else self.fold(part.format_spec, scope, depth + 1)
            try:
                out.append(format(value, spec))
            except (ValueError, TypeError) as exc:
                raise NotLiteral(ast.unparse(node)) from exc
            if sum(map(len, out)) > _MAX_TEXT:
                raise NotLiteral("a string too long to be a literal")
        return "".join(out)

    # -- classes

    def _bases(self, found: _Found) -> list[_Found | None]:
        assert found.scope is not None
        bases: list[_Found | None] = []
        for base in found.node.bases:
            if isinstance(base, ast.Subscript):  # Generic[T], BaseModel[...]
                bases.append(None)
                continue
            name = dotted(base)
            bases.append(self.lookup(name, found.scope) if name else None)
        return bases

    def _kind_of(self, found: _Found, depth: int = 0) -> str | None:
        """model / enum / typeddict / dataclass / None (a plain class); worked out once
        per class (every use of a class asks)."""
        if depth > _MAX_DEPTH or found.kind != "class" or found.scope is None:
            return None
        ident = (found.scope.path, found.name)
        if ident not in self._class_kinds:
            self._class_kinds[ident] = self._classify(found, depth)
        return self._class_kinds[ident]

    def _classify(self, found: _Found, depth: int) -> str | None:
        assert found.scope is not None
        for decorator in found.node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            name = dotted(target)
            hit = self.lookup(name, found.scope) if name else None
            if hit is not None and hit.kind == "external" and hit.name in _DATACLASS_DECORATORS:
                return "dataclass"
        for base in self._bases(found):
            if base is None:
                continue
            if base.kind == "external":
                if base.name in _MODEL_BASES:
                    return "model"
                if base.name in _ENUM_BASES:
                    return "enum"
                if base.name in _TYPEDDICT_BASES:
                    return "typeddict"
            elif base.kind == "class":
                kind = self._kind_of(base, depth + 1)
                if kind in ("model", "enum", "typeddict"):
                    return kind
        return None

    def _is_enum(self, found: _Found) -> bool:
        return self._kind_of(found) == "enum"

    def _enum_values(self, found: _Found) -> dict[str, Any]:
        assert found.scope is not None
        values: dict[str, Any] = {}
        last: Any = 0
        strings = any(
            b is not None and b.kind == "external" and b.name == "enum.StrEnum"
            for b in self._bases(found)
        )
        for node in found.node.body:
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            target = node.targets[0]
            if not isinstance(target, ast.Name) or target.id.startswith("_"):
                continue
            if _is_auto(node.value, found.scope, self):
                value: Any = target.id.lower() if strings else (last + 1 if isinstance(last, int) else None)
                if value is None:
                    raise Unresolved(f"{found.name}.{target.id} = auto() after a non-integer value")
            else:
                try:
                    value = self.fold(node.value, found.scope)
                except NotLiteral as exc:
                    raise Unresolved(
                        f"enum {found.name}: the value of {target.id} is not a literal ({exc})"
                    ) from exc
            if isinstance(value, tuple):
                raise Unresolved(f"enum {found.name}: {target.id} has a tuple value")
            values[target.id] = value
            last = value
        return values

    # -- annotations

    def annotation(self, node: ast.expr, scope: Scope, depth: int = 0) -> ast.expr:
        """``node`` with every name replaced by what it means (see the module doc).

        Raises ``Unresolved`` when a name is defined in the project but is something
        no JSON schema describes (a plain class, a function), or a class cannot be read.
        A name that is not defined or imported at all is left as written."""
        if depth > _MAX_DEPTH:
            raise Unresolved("the annotation nests too deeply")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):  # a forward reference: "Record"
                try:
                    inner = ast.parse(node.value.strip(), mode="eval").body
                except SyntaxError as exc:
                    raise Unresolved(f"{node.value!r} is not an annotation") from exc
                return self.annotation(inner, scope, depth + 1)
            return node
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self._name(node, scope, depth)
        if isinstance(node, ast.Subscript):
            return self._subscript(node, scope, depth)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return ast.BinOp(
                left=self.annotation(node.left, scope, depth + 1),
                op=ast.BitOr(),
                right=self.annotation(node.right, scope, depth + 1),
            )
        if isinstance(node, (ast.Tuple, ast.List)):
            elts = [self.annotation(e, scope, depth + 1) for e in node.elts]
            return ast.Tuple(elts=elts, ctx=ast.Load()) if isinstance(node, ast.Tuple) else ast.List(elts=elts, ctx=ast.Load())
        raise Unresolved(f"{ast.unparse(node)} is not a type")

    def _name(self, node: ast.expr, scope: Scope, depth: int) -> ast.expr:
        name = dotted(node)
        assert name is not None
        found = self.lookup(name, scope)
        if found is None:
            return node  # not defined here: left as written (a typing name, or a NameError)
        if found.kind == "builtin":
            return ast.Name(id=name, ctx=ast.Load())
        if found.kind == "external":
            return ast.Name(id=found.name, ctx=ast.Load())
        if found.kind == "value":
            assert found.scope is not None
            if found.name in found.scope.type_aliases:
                raise Unresolved(f"{name} is a `type` statement alias (TypeAliasType)")
            return self.annotation(found.node, found.scope, depth + 1)
        if found.kind == "class":
            return ast.Name(id=f"{REFERENCE}.{self.define(found)}", ctx=ast.Load())
        raise Unresolved(f"{name} is a {found.kind}, not a type")

    def _subscript(self, node: ast.Subscript, scope: Scope, depth: int) -> ast.expr:
        value = self._name(node.value, scope, depth) if isinstance(node.value, (ast.Name, ast.Attribute)) else None
        if value is None:
            raise Unresolved(f"{ast.unparse(node)} is not a type")
        head = dotted(value) or ""
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head in _LITERAL or head == "Literal":
            values: list[ast.expr] = []
            for arg in args:
                try:
                    folded = self.fold(arg, scope)
                except NotLiteral as exc:
                    raise Unresolved(f"Literal value {ast.unparse(arg)} is not a literal") from exc
                if isinstance(folded, EnumMember):
                    raise Unresolved(f"Literal of an enum member ({ast.unparse(arg)})")
                values.append(ast.Constant(value=folded))
            inner: ast.expr = ast.Tuple(elts=values, ctx=ast.Load()) if len(values) != 1 else values[0]
            return ast.Subscript(value=value, slice=inner, ctx=ast.Load())
        if head in _ANNOTATED:
            meta = [self._metadata(arg, scope) for arg in args[1:]]
            first = self.annotation(args[0], scope, depth + 1)
            merged: dict[str, Any] = {}
            for item in meta:
                merged.update(item)
            if not merged:
                return first
            info = ast.Call(
                func=ast.Name(id=FIELD_MARK, ctx=ast.Load()),
                args=[],
                keywords=[ast.keyword(arg=k, value=_constant(v)) for k, v in merged.items()],
            )
            return ast.Subscript(
                value=value, slice=ast.Tuple(elts=[first, info], ctx=ast.Load()), ctx=ast.Load()
            )
        rewritten = [self.annotation(a, scope, depth + 1) for a in args]
        inner = rewritten[0] if not isinstance(node.slice, ast.Tuple) else ast.Tuple(elts=rewritten, ctx=ast.Load())
        return ast.Subscript(value=value, slice=inner, ctx=ast.Load())

    def _metadata(self, node: ast.expr, scope: Scope) -> dict[str, Any]:
        """``Annotated`` metadata: a ``Field(...)`` call (its schema keywords), or a
        string (ignored by pydantic); anything else cannot be read."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {}
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            hit = self.lookup(name, scope) if name else None
            if hit is not None and hit.kind == "external" and hit.name in _FIELD_FUNCTIONS:
                info = self._field_call(node, scope)
                if "default" in info or "factory" in info:
                    raise Unresolved("a default inside Annotated[...]")
                return info
        raise Unresolved(f"Annotated metadata {ast.unparse(node)}")

    def define(self, found: _Found) -> str:
        """The definition key of a class, describing it on first use."""
        assert found.scope is not None
        ident = (found.scope.path, found.name)
        if ident in self._failed:
            raise Unresolved(self._failed[ident])
        if ident in self._keys:
            key = self._keys[ident]
            self.used |= self._deps.get(key, {found.scope.path} - {""})
            return key
        key = found.name
        taken = {k for i, k in self._keys.items() if i != ident}
        n = 2
        while key in taken:
            key = f"{found.name}__{n}"
            n += 1
        self._keys[ident] = key
        outer, self.used = self.used, set()
        try:
            self.definitions[key] = self._describe(found)
        except (Unresolved, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, Unresolved) else "nests too deeply"
            self._failed[ident] = reason
            self._keys.pop(ident, None)
            self.definitions.pop(key, None)
            raise Unresolved(reason) from None
        finally:
            deps = self.used | ({found.scope.path} - {""})
            self.used = outer | deps
        self._deps[key] = deps
        return key

    def _describe(self, found: _Found) -> dict[str, Any]:
        kind = self._kind_of(found)
        doc = ast.get_docstring(found.node, clean=False)
        description = inspect.cleandoc(doc) if doc else None
        base: dict[str, Any] = {"kind": kind, "title": found.name, "description": description}
        if kind is None:
            raise Unresolved(
                f"{found.name} ({found.scope.path if found.scope else '?'}) is a plain class: "
                "no pydantic model, Enum, dataclass or TypedDict"
            )
        if kind == "enum":
            values = list(self._enum_values(found).values())
            if not values:
                raise Unresolved(f"enum {found.name} has no members that can be read")
            return {**base, "values": [jsonable(v) for v in values]}
        if kind == "typeddict" and sys.version_info < (3, 12):
            for b in self._bases(found):
                if b is not None and b.kind == "external" and b.name == "typing.TypedDict":
                    raise Unresolved(
                        f"{found.name} subclasses typing.TypedDict, which pydantic refuses "
                        "before Python 3.12 (use typing_extensions.TypedDict)"
                    )
        fields, config = self._fields(found, kind)
        return {**base, "fields": fields, **config}

    def _fields(self, found: _Found, kind: str, depth: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        assert found.scope is not None
        if depth > _MAX_DEPTH:
            raise Unresolved("the class hierarchy nests too deeply")
        fields: dict[str, dict[str, Any]] = {}
        config: dict[str, Any] = {}
        for base in self._bases(found):
            if base is not None and base.kind == "class" and self._kind_of(base) == kind:
                inherited, base_config = self._fields(base, kind, depth + 1)
                for item in inherited:
                    fields[item["name"]] = item
                config.update(base_config)
            elif base is None:
                raise Unresolved(f"{found.name} has a base class that cannot be read")
            elif base.kind == "class":
                raise Unresolved(f"{found.name} mixes in {base.name}, which is no {kind}")
        total = True
        for keyword in found.node.keywords:
            if kind == "typeddict" and keyword.arg == "total":
                total = bool(self._literal(keyword.value, found.scope, "total"))
            elif kind == "model" and keyword.arg is not None:
                config.update(self._config({keyword.arg: keyword.value}, found))
            else:
                raise Unresolved(f"class {found.name}({ast.unparse(keyword)}) cannot be read")
        for node in found.node.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
                if self._is_classvar(node.annotation, found.scope):
                    continue
                if kind == "model" and name.startswith("_"):
                    continue  # private attributes are no fields
                fields[name] = self._field(name, node.annotation, node.value, found, kind, total)
            elif (
                kind == "model"
                and isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "model_config" for t in node.targets)
            ):
                config.update(self._config_value(node.value, found))
            elif isinstance(node, ast.ClassDef) and node.name == "Config":
                raise Unresolved(f"{found.name} uses a class Config (pydantic v1 style)")
        return list(fields.values()), config

    def _is_classvar(self, annotation: ast.expr, scope: Scope) -> bool:
        target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
        name = dotted(target)
        hit = self.lookup(name, scope) if name else None
        return hit is not None and hit.kind == "external" and hit.name in _CLASSVAR

    def _literal(self, node: ast.expr, scope: Scope, what: str) -> Any:
        try:
            return self.fold(node, scope)
        except NotLiteral as exc:
            raise Unresolved(f"{what}={ast.unparse(node)} is not a literal") from exc

    def _config_value(self, node: ast.expr, found: _Found) -> dict[str, Any]:
        assert found.scope is not None
        if isinstance(node, ast.Call):
            name = dotted(node.func)
            hit = self.lookup(name, found.scope) if name else None
            if hit is None or hit.kind != "external" or hit.name not in _CONFIG_DICT or node.args:
                raise Unresolved(f"{found.name}.model_config cannot be read")
            return self._config({k.arg: k.value for k in node.keywords if k.arg}, found)
        if isinstance(node, ast.Dict) and all(isinstance(k, ast.Constant) for k in node.keys):
            return self._config(
                {
                    str(k.value): v
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant)
                },
                found,
            )
        raise Unresolved(f"{found.name}.model_config cannot be read")

    def _config(self, items: Mapping[str, ast.expr], found: _Found) -> dict[str, Any]:
        assert found.scope is not None
        config: dict[str, Any] = {}
        for key, node in items.items():
            if key in _CONFIG_QUIET:
                continue
            if key == "extra":
                value = self._literal(node, found.scope, "extra")
                if value not in ("forbid", "allow", "ignore"):
                    raise Unresolved(f"{found.name}: extra={value!r}")
                config["extra"] = value
                continue
            raise Unresolved(f"{found.name}: model_config key {key!r} changes the schema")
        return config

    def _field(
        self,
        name: str,
        annotation: ast.expr,
        value: ast.expr | None,
        found: _Found,
        kind: str,
        total: bool,
    ) -> dict[str, Any]:
        assert found.scope is not None
        scope = found.scope
        required = total
        if kind == "typeddict":
            head = annotation.value if isinstance(annotation, ast.Subscript) else None
            hit = self.lookup(dotted(head) or "", scope) if head is not None else None
            if hit is not None and hit.kind == "external" and hit.name in _REQUIRED | _NOT_REQUIRED:
                required = hit.name in _REQUIRED
                assert isinstance(annotation, ast.Subscript)
                annotation = annotation.slice
            if value is not None:
                raise Unresolved(f"TypedDict {found.name}.{name} has a value")
        info: dict[str, Any] = {}
        if value is not None:
            info = self._default(value, scope, kind)
        try:
            text = ast.unparse(self.annotation(annotation, scope))
        except Unresolved as exc:
            raise Unresolved(f"{found.name}.{name}: {exc}") from None
        item: dict[str, Any] = {"name": name, "annotation": text}
        if kind == "typeddict":
            item["required"] = required
        else:
            item["required"] = "default" not in info and "factory" not in info and "opaque_default" not in info
        item.update(info)
        return item

    def _default(self, value: ast.expr, scope: Scope, kind: str) -> dict[str, Any]:
        """The field's right-hand side: a default, or a Field(...)/field(...) call."""
        if isinstance(value, ast.Call):
            name = dotted(value.func)
            hit = self.lookup(name, scope) if name else None
            if hit is not None and hit.kind == "external":
                if hit.name in _FIELD_FUNCTIONS and kind in ("model", "dataclass"):
                    return self._field_call(value, scope)
                if hit.name in _DATACLASS_FIELD and kind == "dataclass":
                    return self._dataclass_field(value, scope)
        return self._default_value(value, scope)

    def _default_value(self, value: ast.expr, scope: Scope) -> dict[str, Any]:
        if isinstance(value, ast.Constant) and value.value is Ellipsis:
            return {}
        try:
            return {"default": jsonable(self.fold(value, scope))}
        except NotLiteral:
            return {"opaque_default": ast.unparse(value)}

    def _field_call(self, call: ast.Call, scope: Scope) -> dict[str, Any]:
        info: dict[str, Any] = {}
        if len(call.args) > 1 or any(isinstance(a, ast.Starred) for a in call.args):
            raise Unresolved(f"{ast.unparse(call)} cannot be read")
        if call.args:
            info.update(self._default_value(call.args[0], scope))
        for keyword in call.keywords:
            key = keyword.arg
            if key is None:
                raise Unresolved(f"{ast.unparse(call)} cannot be read")
            if key == "default":
                info.update(self._default_value(keyword.value, scope))
            elif key == "default_factory":
                info["factory"] = True
            elif key in _FIELD_QUIET:
                continue
            elif key in _FIELD_INFO or key in FIELD_CONSTRAINTS:
                info[key] = jsonable(self._literal(keyword.value, scope, key))
            else:
                raise Unresolved(f"Field({key}=...) changes the schema in ways not read here")
        return info

    def _dataclass_field(self, call: ast.Call, scope: Scope) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for keyword in call.keywords:
            if keyword.arg == "default":
                info.update(self._default_value(keyword.value, scope))
            elif keyword.arg == "default_factory":
                info["factory"] = True
            elif keyword.arg in ("init", "repr", "hash", "compare", "kw_only"):
                if keyword.arg == "init":
                    raise Unresolved("dataclasses.field(init=...)")
            else:
                raise Unresolved(f"dataclasses.field({keyword.arg}=...)")
        if call.args:
            raise Unresolved(f"{ast.unparse(call)} cannot be read")
        return info


def _constant(value: Any) -> ast.expr:
    """A JSON-able value as an expression (``ast.unparse`` writes it back as a literal)."""
    if isinstance(value, list):
        return ast.List(elts=[_constant(v) for v in value], ctx=ast.Load())
    if isinstance(value, dict):
        return ast.Dict(
            keys=[ast.Constant(value=k) for k in value],
            values=[_constant(v) for v in value.values()],
        )
    return ast.Constant(value=value)


def _is_auto(node: ast.expr, scope: Scope, resolver: Resolver) -> bool:
    if not isinstance(node, ast.Call) or node.args or node.keywords:
        return False
    name = dotted(node.func)
    hit = resolver.lookup(name, scope) if name else None
    return hit is not None and hit.kind == "external" and hit.name == "enum.auto"


def _module_name(path: str) -> str:
    dotted_path = path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")
    if dotted_path == "__init__" or dotted_path.endswith(".__init__"):
        dotted_path = dotted_path[: -len("__init__")].rstrip(".")
    return dotted_path


def _binop(op: ast.operator, left: Any, right: Any) -> Any:
    """``left <op> right`` for literals, refusing results no one writes by hand."""
    for value in (left, right):
        if isinstance(value, EnumMember):
            raise NotLiteral("arithmetic on an enum member")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    try:
        sequences = (str, bytes, tuple, list)
        if isinstance(op, ast.Add):
            if not (numbers or (type(left) is type(right) and isinstance(left, sequences))):
                raise NotLiteral("+")
            result = left + right
        elif isinstance(op, ast.Mult):
            if not (
                numbers
                or (isinstance(left, sequences) and _count(right) * len(left) <= _MAX_TEXT)
                or (isinstance(right, sequences) and _count(left) * len(right) <= _MAX_TEXT)
            ):
                raise NotLiteral("*")
            result = left * right
        elif numbers and isinstance(op, ast.Sub):
            result = left - right
        elif numbers and isinstance(op, ast.Div):
            result = left / right
        elif numbers and isinstance(op, ast.FloorDiv):
            result = left // right
        elif numbers and isinstance(op, ast.Mod):
            result = left % right
        elif numbers and isinstance(op, ast.Pow):
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right * max(abs(left), 2).bit_length() > _MAX_BITS
            ):
                raise NotLiteral("**: too large")
            result = left**right
        else:
            raise NotLiteral(type(op).__name__)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise NotLiteral(str(exc)) from exc
    if isinstance(result, int) and result.bit_length() > _MAX_BITS:
        raise NotLiteral("too large")
    if isinstance(result, complex):
        raise NotLiteral("complex")
    return result


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotLiteral("*")
    return max(value, 0)


def fold(node: ast.expr, scope: Scope | None = None) -> Any:
    """The literal value of ``node`` (names looked up in ``scope``, if given, without
    following imports); raises ``NotLiteral``."""
    resolver = Resolver(lambda _path: None)
    return resolver.fold(node, scope or Scope(path="", module=""))
