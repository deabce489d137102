"""Overlay ``templates/*.yaml`` on the built deployment bodies; write rendered files.

``build`` makes the whole body.  A template is an overlay: YAML that names only what it
changes, in the body's own structure (``job_variables: {stream_output: false}``), with
Jinja placeholders in its values.  Mappings merge key by key; any other value (a list, a
string, a number) replaces the built one.  The overlay is parsed with
``yaml.safe_load`` and the placeholders are filled in the parsed values (keys are not
rendered), with Jinja2's sandbox and ``StrictUndefined``:

- a string that is exactly one placeholder, ``"{{ deployment.tags }}"``, becomes the
  value itself, keeping its type (list, dict, int, bool, None);
- any other string renders as text;
- Prefect's run-time placeholders, ``{{ prefect.* }}``, ``{{ ctx.* }}`` and
  ``{{ $ENV_VAR }}``, pass through untouched;
- an unknown variable, bad placeholder syntax or a placeholder left unresolved raises
  ``TemplateError`` naming the template file, the key path and the variable.

Template variables (``TEMPLATE_VARIABLES``): ``flow`` (FlowMetadata fields, see
``FlowMetadata.to_dict`` plus ``module_path``), ``env``, ``settings`` (all settings
data), ``git`` (``sha``, ``short_sha``, ``branch``, ``dirty``, ``is_repo``), ``now`` (ISO
8601 text, UTC) and ``deployment`` (the values ``build.build_deployments`` computed).
``git.sha`` and ``now`` change on every commit or run: a body that uses them is never
"unchanged", so the shipped templates do not.

Layers: ``<type>_deployment.yaml`` (every environment), then ``<type>_<env>.yaml`` when
it exists; either may be missing, not both.  An empty file overlays nothing.  After
rendering, job variables whose value is ``None`` are dropped (the pool's default
applies).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from deploy_lib.errors import DiscoveryError, InputError, TemplateError
from deploy_lib.models import (
    BUILD_EXTRAS,
    DEPLOYMENT_TYPES,
    BuildContext,
    DeploymentSpec,
    FlowMetadata,
    GitInfo,
    Masker,
    Settings,
)
from deploy_lib.models import plain as _plain

TEMPLATE_VARIABLES = ("flow", "env", "settings", "git", "now", "deployment")
RUNTIME_PLACEHOLDER = re.compile(
    r"\{\{\s*(?:prefect\.[^{}]*?|ctx\.[^{}]*?|\$[A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
)
_WHOLE = re.compile(r"\A\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*\Z", re.DOTALL)
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_PLACEHOLDER = re.compile(r"\{\{(?P<expr>.*?)\}\}", re.DOTALL)
_JINJA_MARKS = ("{{", "{%", "{#")
FORMATS = ("yaml", "json")
MANIFEST = ".deploy-lib-render.json"


# -- loading and rendering ----------------------------------------------------------------


# Bounds on what a template may make: a body is a few kilobytes; these are far above
# anything real and far below what would exhaust the machine (an alias bomb, "x" * 10**9).
MAX_VALUES = 100_000
MAX_TEXT = 1_000_000


def _expanded_size(data: Any) -> int:
    """How many values ``data`` holds once every YAML alias is expanded, counting
    shared containers once per use (memoised, so a bomb is measured, not walked)."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = MAX_VALUES + 1  # a container inside itself: too big
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                break
        sizes[id(node)] = total
        return total

    return size(data)


def _too_big(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_TEXT


class _BoundedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox, with bounds: ``*``, ``**``, ``+`` and ``%`` may not build a
    value larger than ``MAX_TEXT``, and no method or filter may be handed a number
    that large (``"x".center(10**9)``).  Loops are refused where templates are
    compiled (``_refuse_statements``), so a render always ends, and soon."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and right * max(abs(left), 2).bit_length() > 4096
        ):
            raise SecurityError(f"{left} ** {right} is too large")
        if operator == "*" and any(
            isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_TEXT
            for seq, times in ((left, right), (right, left))
        ):
            raise SecurityError(f"a value longer than {MAX_TEXT:,} is too large")
        result = super().call_binop(context, operator, left, right)
        if _too_big(result):
            raise SecurityError(f"a value longer than {MAX_TEXT:,} is too large")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if _too_big(result):
            raise SecurityError(f"a value longer than {MAX_TEXT:,} is too large")
        return result


def _check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEXT:
            raise SecurityError(f"{value} is too large an argument")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja's pass_context / pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[1:], kwargs)
        result = function(*args, **kwargs)
        if _too_big(result):
            raise SecurityError(f"a value longer than {MAX_TEXT:,} is too large")
        return result

    return bounded


def _refuse_statements(environment: SandboxedEnvironment, text: str) -> None:
    """A placeholder is a value: ``{% for %}`` loops, macros and call blocks (which
    could run without end) are refused; ``{% if %}`` and ``{% set %}`` are fine."""
    if "{%" not in text:
        return
    tree = environment.parse(text)
    for kind in (nodes.For, nodes.Macro, nodes.CallBlock, nodes.FilterBlock):
        found = next(tree.find_all(kind), None)
        if found is not None:
            raise SecurityError(
                f"{{% {type(found).__name__.lower()} %}} is not allowed in a template value "
                "(use a filter such as join or map instead of a loop)"
            )


class TemplateRenderer:
    """Loads templates from ``templates_dir`` and renders them; parsed templates and
    compiled placeholders are cached for the life of the object (one run).

    ``root`` only shortens the file names used in messages and ``DeploymentSpec.source``.
    """

    def __init__(self, templates_dir: str | os.PathLike[str], *, root: Any = None) -> None:
        self.templates_dir = Path(templates_dir)
        self.root = Path(root).resolve() if root is not None else None
        self._parsed: dict[Path, dict[str, Any]] = {}
        self._expressions: dict[str, Callable[..., Any]] = {}
        self._texts: dict[str, Any] = {}
        self._display: dict[Path, str] = {}
        self._kinds: dict[str, str] = {}
        self._selected: dict[tuple[str, str], tuple[Path, ...]] = {}
        self._jinja = _BoundedEnvironment(undefined=StrictUndefined, autoescape=False)

    def select(self, type_: str, env: str) -> Path:
        """The most specific template of ``type_`` in ``env`` (the last of ``layers``)."""
        layers = self.layers(type_, env)
        if not layers:
            raise TemplateError(
                f"no template for type {type_!r} in environment {env!r}: the built body is "
                f"used as it is (add {type_}_deployment.yaml to change it)",
                path=self.display(self.templates_dir),
            )
        return layers[-1]

    def layers(self, type_: str, env: str) -> tuple[Path, ...]:
        """``<type>_deployment.yaml``, then ``<type>_<env>.yaml``, those that exist."""
        chosen = self._selected.get((type_, env))
        if chosen is None:
            chosen = self._selected[(type_, env)] = self._layers(type_, env)
        return chosen

    def _layers(self, type_: str, env: str) -> tuple[Path, ...]:
        specific = self.templates_dir / f"{type_}_{env}.yaml"
        base = self.templates_dir / f"{type_}_deployment.yaml"
        found = tuple(path for path in (base, specific) if path.is_file())
        if found or type_ not in DEPLOYMENT_TYPES:
            # A pool type beyond python and docker needs no overlay of its own: the body
            # build makes is the deployment unless a <type>_*.yaml changes it.
            return found
        raise TemplateError(
            f"no template for type {type_!r} in environment {env!r}: "
            f"neither {specific.name} nor {base.name} exists",
            path=self.display(self.templates_dir),
        )

    def display(self, path: Path) -> str:
        """``path`` relative to the project root when inside it (POSIX form)."""
        shown = self._display.get(path)
        if shown is None:
            shown = path.as_posix()
            if self.root is not None:
                with contextlib.suppress(ValueError):  # outside the root: keep it whole
                    shown = path.resolve().relative_to(self.root).as_posix()
            self._display[path] = shown
        return shown

    def load(self, path: Path) -> dict[str, Any]:
        """The parsed template (cached). Raises ``TemplateError`` for a file that cannot
        be read, a YAML syntax error (with its line) or a top level that is no mapping."""
        cached = self._parsed.get(path)
        if cached is not None:
            return cached
        name = self.display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"cannot read the template: {exc}", path=name) from exc
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no code runs
        except _DuplicateKey as exc:
            raise TemplateError(str(exc), path=f"{name}:{exc.line}") from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{name}:{mark.line + 1}" if mark is not None else name
            column = f", column {mark.column + 1}" if mark is not None else ""
            what = exc.problem or exc.context or "invalid YAML"
            raise TemplateError(
                f"YAML syntax error: {what} (line {mark.line + 1 if mark else '?'}{column})",
                path=where,
            ) from exc
        except yaml.YAMLError as exc:
            raise TemplateError(f"YAML error: {exc}", path=name) from exc
        if data is None:  # an empty overlay (comments only) changes nothing
            data = {}
        if _expanded_size(data) > MAX_VALUES:
            raise TemplateError(
                f"expands to more than {MAX_VALUES:,} values (YAML aliases nested in "
                "aliases?); a deployment body is far smaller",
                path=name,
            )
        if not isinstance(data, dict):
            raise TemplateError(
                f"a template must be a mapping of deployment body keys, not {type(data).__name__}",
                path=name,
            )
        self._parsed[path] = data
        return data

    def render(self, path: Path, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The template at ``path`` with every placeholder filled from ``variables``."""
        source = self.display(path)
        return dict(self._value(self.load(path), "", variables, source))

    def overlay(
        self, body: Mapping[str, Any], paths: Sequence[Path], variables: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``body`` with each template of ``paths`` rendered and merged on top, in order;
        job variables left ``None`` are dropped (the pool's default applies)."""
        merged = _copied(body)
        for path in paths:
            merged = _merge(merged, self.render(path, variables))
        job_variables = merged.get("job_variables")
        if isinstance(job_variables, dict):
            merged["job_variables"] = {k: v for k, v in job_variables.items() if v is not None}
        return dict(merged)

    def _value(self, value: Any, key: str, variables: Mapping[str, Any], source: str) -> Any:
        if isinstance(value, dict):
            return {
                k: self._value(v, f"{key}.{k}" if key else str(k), variables, source)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._value(v, f"{key}[{i}]", variables, source) for i, v in enumerate(value)]
        if isinstance(value, str) and any(mark in value for mark in _JINJA_MARKS):
            return self._string(value, key, variables, source)
        return value

    def _string(self, text: str, key: str, variables: Mapping[str, Any], source: str) -> Any:
        kind = self._kinds.get(text)
        if kind is None:
            kind = self._kinds[text] = _classify(text)
        if kind == _RUNTIME:
            return text
        if kind != _TEXT:
            result = self._evaluate(kind, key, variables, source)
            if isinstance(result, str):
                self._check_resolved(result, key, source)
                return result
            return _copied(result)
        try:
            template = self._texts.get(text)
            if template is None:
                protected = RUNTIME_PLACEHOLDER.sub(
                    lambda m: "{% raw %}" + m.group(0) + "{% endraw %}", text
                )
                _refuse_statements(self._jinja, protected)
                template = self._texts[text] = self._jinja.from_string(protected)
            rendered = str(template.render(**variables))
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"bad placeholder syntax: {exc.message}", path=source, key=key
            ) from exc
        except UndefinedError as exc:
            variable = self._find_undefined(text, variables)
            raise TemplateError(
                _undefined_message(exc), path=source, key=key, variable=variable
            ) from None
        except SecurityError as exc:
            raise TemplateError(f"not allowed in a template: {exc}", path=source, key=key) from exc
        except Exception as exc:  # a filter or operator failing on the given values
            raise TemplateError(f"cannot render: {exc}", path=source, key=key) from exc
        self._check_resolved(rendered, key, source)
        return rendered

    def _evaluate(self, expr: str, key: str, variables: Mapping[str, Any], source: str) -> Any:
        try:
            compiled = self._expressions.get(expr)
            if compiled is None:
                compiled = self._expressions[expr] = self._compile(expr)
            result = compiled(variables)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"bad placeholder syntax: {exc.message}", path=source, key=key, variable=expr
            ) from exc
        except UndefinedError as exc:
            raise TemplateError(
                _undefined_message(exc), path=source, key=key, variable=expr
            ) from None
        except SecurityError as exc:
            raise TemplateError(
                f"not allowed in a template: {exc}", path=source, key=key, variable=expr
            ) from exc
        except Exception as exc:
            raise TemplateError(
                f"cannot evaluate: {exc}", path=source, key=key, variable=expr
            ) from exc
        if isinstance(result, Undefined):
            raise TemplateError(
                _undefined_message(None, result), path=source, key=key, variable=expr
            )
        return result

    def _compile(self, expr: str) -> Callable[[Mapping[str, Any]], Any]:
        if _DOTTED.match(expr):
            # A plain ``a.b.c`` (nearly every placeholder) is looked up with the sandbox's
            # own getattr, exactly as the compiled expression would, minus the cost of
            # building a Jinja context for each value (a third of a 1,000-flow render).
            head, *attrs = expr.split(".")
            jinja = self._jinja

            def lookup(variables: Mapping[str, Any]) -> Any:
                if head in variables:
                    value = variables[head]
                elif head in jinja.globals:
                    value = jinja.globals[head]
                else:
                    value = jinja.undefined(name=head)
                for attr in attrs:
                    value = jinja.getattr(value, attr)
                return value

            return lookup
        expression = self._jinja.compile_expression(expr, undefined_to_none=False)
        return lambda variables: expression(**variables)

    def _find_undefined(self, text: str, variables: Mapping[str, Any]) -> str | None:
        for match in _PLACEHOLDER.finditer(text):
            if RUNTIME_PLACEHOLDER.fullmatch(match.group(0)):
                continue
            expr = match.group("expr").strip()
            try:
                value = self._jinja.compile_expression(expr, undefined_to_none=False)(**variables)
            except UndefinedError:
                return expr
            except Exception:
                continue
            if isinstance(value, Undefined):
                return expr
        return None

    def _check_resolved(self, text: str, key: str, source: str) -> None:
        if "{{" not in text or key in _DATA_KEYS:
            return
        for match in _PLACEHOLDER.finditer(text):
            if not RUNTIME_PLACEHOLDER.fullmatch(match.group(0)):
                raise TemplateError(
                    "unresolved placeholder left after rendering (a value that itself "
                    "holds a placeholder?); only Prefect's run-time placeholders "
                    "prefect.*, ctx.* and $ENV may remain",
                    path=source,
                    key=key,
                    variable=match.group("expr").strip(),
                )


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(
            f"key {key!r} is given twice in one mapping (line {line}); YAML would keep the "
            "last one silently"
        )
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a complex key: the mapping's own construction judges it
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Keys whose text comes from a flow's own source (its description or docstring): data,
# never a template, so braces in them are kept as written.
_DATA_KEYS = frozenset({"description"})
_RUNTIME = "\0runtime"
_TEXT = "\0text"


def _classify(text: str) -> str:
    """``_RUNTIME`` for a whole Prefect run-time placeholder, ``_TEXT`` for text to
    render, else the expression of a whole-value placeholder."""
    whole = _WHOLE.match(text)
    if not whole or "{%" in text or "{#" in text:
        return _TEXT
    if RUNTIME_PLACEHOLDER.fullmatch(text.strip()):
        return _RUNTIME
    return whole.group("expr").strip()


def _undefined_message(exc: UndefinedError | None, value: Undefined | None = None) -> str:
    detail = exc.message if exc is not None else getattr(value, "_undefined_message", None)
    return (
        f"unknown variable ({detail}); template variables are "
        f"{', '.join(TEMPLATE_VARIABLES)}, and Prefect's run-time placeholders "
        "prefect.*, ctx.* and $ENV pass through"
    )


# -- build + render -----------------------------------------------------------------------


def template_variables(settings: Settings, *, git: GitInfo, now: datetime) -> dict[str, Any]:
    """The variables every template of one environment shares (all but ``flow`` and
    ``deployment``)."""
    return {
        "env": settings.env,
        "settings": _plain(settings.data),
        "git": git.to_dict(),
        "now": now.astimezone(timezone.utc).isoformat() if now.tzinfo else now.isoformat(),
    }


def flow_variables(flow: FlowMetadata) -> dict[str, Any]:
    """``flow.*`` in a template: ``FlowMetadata.to_dict()`` plus ``module_path``."""
    return {**flow.to_dict(), "module_path": flow.module_path}


def render_specs(
    contexts: Iterable[BuildContext],
    settings: Settings,
    *,
    git: GitInfo,
    now: datetime,
    templates_dir: str | os.PathLike[str] | None = None,
) -> list[DeploymentSpec]:
    """One ``DeploymentSpec`` per built deployment: its body with the templates of its
    type and environment overlaid (``templates_dir`` defaults to ``<root>/templates``).

    Reads the templates; raises ``TemplateError`` naming the template, key and variable.
    """
    directory = (
        Path(templates_dir) if templates_dir is not None else Path(settings.root) / "templates"
    )
    renderer = TemplateRenderer(directory, root=settings.root)
    shared = template_variables(settings, git=git, now=now)
    flow_vars: dict[int, dict[str, Any]] = {}
    specs: list[DeploymentSpec] = []
    for context in contexts:
        paths = renderer.layers(context.type, settings.env)
        fvars = flow_vars.setdefault(id(context.flow), flow_variables(context.flow))
        variables = {**shared, "flow": fvars, "deployment": context.deployment}
        built = {k: v for k, v in context.deployment.items() if k not in BUILD_EXTRAS}
        sources = dict(context.deployment.get("sources", {}))
        for path in paths:
            sources = _overlay_sources(renderer.load(path), sources)
        try:
            body = renderer.overlay(built, paths, variables)
        except TemplateError as exc:
            # Name the flow too: a value of its own may be what the template tripped on.
            named = TemplateError(
                f"{exc.message} (rendering flow {context.flow.name!r}, {context.flow.path})"
            )
            named.path, named.key, named.variable = exc.path, exc.key, exc.variable
            raise named from exc
        specs.append(
            DeploymentSpec(
                type=context.type,
                env=settings.env,
                flow=context.flow,
                body=body,
                source=renderer.display(paths[-1]) if paths else "settings.toml",
                sources=sources,
                triggers=tuple(context.deployment.get("triggers") or ()),
                secrets=dict(context.deployment.get("secrets") or {}),
            )
        )
    return specs


# -- output -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """What ``render_to_files`` wrote: the directory, the file names, the warnings."""

    out_dir: Path
    files: tuple[str, ...]
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


def select_specs(
    specs: Sequence[DeploymentSpec],
    *,
    flow_names: Sequence[str] = (),
    types: Sequence[str] = (),
    known: Sequence[str] = (),
) -> list[DeploymentSpec]:
    """Keep the specs of the named flows and types (all when empty); ``known`` are the
    types the settings use besides those the specs have.  A flow is named
    by its name (every file that defines it) or by an entrypoint (that one function,
    ``path.py:fn`` or ``module:fn``).  Raises ``InputError`` for an unknown type and
    ``DiscoveryError`` for a flow that has no deployment."""
    known_types = list(dict.fromkeys([*DEPLOYMENT_TYPES, *known, *(s.type for s in specs)]))
    unknown_types = [t for t in types if t not in known_types]
    if unknown_types:
        raise InputError(
            f"unknown deployment type(s) {', '.join(unknown_types)}; "
            f"known: {', '.join(known_types)}"
        )
    known = sorted({s.flow.name for s in specs})
    missing = [n for n in flow_names if not any(s.flow.is_named(n) for s in specs)]
    if missing:
        raise DiscoveryError(
            f"no deployment for flow(s) {', '.join(map(repr, missing))}; "
            f"flows with deployments: {', '.join(known) or 'none'}"
        )
    return [
        s
        for s in specs
        if (not flow_names or any(s.flow.is_named(n) for n in flow_names))
        and (not types or s.type in types)
    ]


def mask_body(body: Any, settings: Settings) -> Any:
    """``body`` with secret values replaced by ``****`` (by value, by secret-looking
    key name, and by the settings' secret keys, ``env_vars.X`` meaning
    ``job_variables.env.X``). Prefect run-time placeholders are never secrets and stay."""
    keys = set(settings.secret_keys)
    keys |= {
        "job_variables.env." + k.split(".", 1)[1]
        for k in settings.secret_keys
        if k.startswith("env_vars.")
    }
    masked = Masker(settings.secret_values).data(body, keys)
    return _keep_placeholders(body, masked)


def check_format(fmt: str) -> None:
    """Raise ``InputError`` for an output format other than yaml or json."""
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def dump(body: Any, fmt: str, *, header: str = "") -> str:
    """``body`` as YAML (keys in template order, with an optional ``#`` header) or JSON."""
    if fmt == "json":
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    check_format(fmt)
    text = yaml.safe_dump(
        body, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10**6
    )
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + str(text)


def prefect_yaml(specs: Sequence[DeploymentSpec], *, name: str) -> dict[str, Any]:
    """A prefect.yaml mapping for ``specs`` (every type) that ``prefect deploy --all
    --prefect-file`` accepts: flat schedules with their own parameters and slug,
    ``work_pool`` with its queue and job variables, ``concurrency_limit`` with its
    collision strategy, the triggers, and each deployment's own ``pull`` steps."""
    deployments = []
    for spec in specs:
        body = spec.body
        limit: Any = body["concurrency_limit"]
        options = body.get("concurrency_options")
        if isinstance(options, Mapping) and options.get("collision_strategy"):
            limit = {"limit": limit, "collision_strategy": options["collision_strategy"]}
        deployment: dict[str, Any] = {
            "name": body["name"],
            "version": body["version"],
            "description": body["description"],
            "entrypoint": body["entrypoint"],
            "tags": list(body["tags"]),
            "parameters": dict(body["parameters"]),
            "enforce_parameter_schema": body["enforce_parameter_schema"],
            "concurrency_limit": limit,
            "paused": body["paused"],
            "schedules": [_flat_schedule(s) for s in body["schedules"] or []],
            "work_pool": {
                "name": body["work_pool_name"],
                "work_queue_name": body["work_queue_name"],
                "job_variables": dict(body["job_variables"]),
            },
            "pull": list(body["pull_steps"]),
        }
        if spec.triggers:
            deployment["triggers"] = [dict(t) for t in spec.triggers]
        deployments.append(deployment)
    return {"name": name, "deployments": deployments}


def write_rendered(
    specs: Sequence[DeploymentSpec],
    settings: Settings,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fmt: str = "yaml",
    write_prefect_yaml: bool = False,
    show_secrets: bool = False,
) -> RenderResult:
    """Write one file per spec (``<deployment-name>.<fmt>``) into ``out_dir`` (default
    ``<root>/build/<env>``), plus ``prefect.yaml`` when asked.

    Every file is serialised in memory before the first is written. Files that a
    previous render of that directory wrote and this one does not are removed (only
    those: the directory's manifest lists them). Secrets are masked unless
    ``show_secrets``. Raises ``InputError`` for an unknown format, two deployments that
    would share a file, or a directory that cannot be written.
    """
    check_format(fmt)
    root = Path(settings.root).resolve()
    outputs: dict[str, str] = {}
    shared = {n for n, c in Counter(s.name for s in specs).items() if c > 1}
    for spec in specs:
        body = spec.body if show_secrets else mask_body(spec.body, settings)
        # Two flows may give a deployment one name: then the file names the flow too.
        stem = spec.name if spec.name not in shared else f"{spec.flow.name}__{spec.name}"
        filename = f"{_safe_filename(stem)}.{fmt}"
        if filename in outputs:
            raise InputError(
                f"two deployments would both be written to {filename}: deployment names must "
                f"be unique within an environment (flow {spec.flow.name!r}, "
                f"deployment {spec.name!r})"
            )
        header = f"{spec.full_name} ({spec.type}, env {spec.env}), rendered from {spec.source}"
        outputs[filename] = dump(body, fmt, header=header)
    if write_prefect_yaml:
        if "prefect.yaml" in outputs:
            raise InputError(
                "a deployment named 'prefect' would be written to prefect.yaml, which "
                "--prefect-yaml writes too: rename the deployment (naming or flows.<flow>.names) "
                "or render without --prefect-yaml; nothing was written"
            )
        data = prefect_yaml(specs, name=root.name)
        if not show_secrets:
            data = mask_body(data, settings)
        outputs["prefect.yaml"] = dump(
            data, "yaml", header=f"prefect.yaml for environment {settings.env}"
        )
    target = Path(out_dir) if out_dir is not None else root / "build" / settings.env
    # With the secrets shown, only the owner may read the files.
    removed = _write_all(target, outputs, mode=0o600 if show_secrets else 0o644)
    return RenderResult(target, tuple(outputs), removed)


def _overlay_sources(template: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, str]:
    """The settings keys build recorded for body keys, less those the overlay sets to a
    literal: a template that hardcodes ``entrypoint:`` is the source of that value, not
    ``entrypoint_style``, so a problem with it must not send the reader to settings."""
    kept = {}
    for dotted, key in sources.items():
        node: Any = template
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                kept[dotted] = key  # not overlaid (or overlaid by a placeholder): built
                break
            node = node[part]
        else:
            if _has_placeholder(node):
                kept[dotted] = key
    return kept


def _merge(base: Any, overlay: Any) -> Any:
    """``overlay`` on ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return overlay


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, Mapping):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_placeholder(v) for v in value)
    return False


def _write_all(target: Path, outputs: Mapping[str, str], *, mode: int = 0o644) -> tuple[str, ...]:
    """Write ``outputs`` into ``target`` all at once: everything goes into a folder
    beside it first, which then takes its place, so a full disk or a crash leaves the
    previous render whole.  Files in ``target`` that no render of ours wrote are kept."""
    manifest = target / MANIFEST
    previous: list[str] = []
    if manifest.is_file():
        try:
            previous = list(json.loads(manifest.read_text(encoding="utf-8")).get("files", []))
        except (ValueError, AttributeError, OSError):
            previous = []
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.rendering-", dir=target.parent))
        os.chmod(staging, _folder_mode(target, secret=mode == 0o600))
        if target.is_dir():
            for entry in target.iterdir():
                if entry.name not in (*previous, *outputs, MANIFEST):
                    _keep(entry, staging / entry.name)  # not ours: carried over
        for name, text in outputs.items():
            _write_text(staging / name, text, mode)
        _write_text(staging / MANIFEST, json.dumps({"files": sorted(outputs)}, indent=2) + "\n", 0o644)
        _swap(staging, target)
        staging = None
    except OSError as exc:
        raise InputError(
            f"{target}: cannot write the rendered files: {exc.strerror or exc}; the "
            "previous files are as they were"
        ) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return tuple(name for name in previous if name not in outputs)


def _folder_mode(target: Path, *, secret: bool) -> int:
    """The output folder's mode: what it had, else what the umask gives (owner only
    when the files hold secrets)."""
    if secret:
        return 0o700
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o777 & ~umask


def _write_text(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)  # whatever the umask said


def _keep(source: Path, copy: Path) -> None:
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, copy, symlinks=True)
    elif source.is_symlink():
        os.symlink(os.readlink(source), copy)
    else:
        try:
            os.link(source, copy)
        except OSError:
            shutil.copy2(source, copy)


def _swap(staging: Path, target: Path) -> None:
    """Put ``staging`` where ``target`` is: two renames, the old one removed after; if
    the second rename fails the old folder is put back."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.previous-{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "deployment"


def _flat_schedule(item: Any) -> Any:
    if isinstance(item, Mapping) and isinstance(item.get("schedule"), Mapping):
        flat = dict(item["schedule"])
        flat["active"] = item.get("active", True)
        for key in ("parameters", "slug"):
            if item.get(key):
                flat[key] = item[key]
        return flat
    return item


def _keep_placeholders(original: Any, masked: Any) -> Any:
    if isinstance(original, Mapping) and isinstance(masked, Mapping):
        return {k: _keep_placeholders(original[k], masked[k]) for k in masked}
    if isinstance(original, (list, tuple)) and isinstance(masked, list):
        return [_keep_placeholders(o, m) for o, m in zip(original, masked, strict=True)]
    if isinstance(original, str) and RUNTIME_PLACEHOLDER.fullmatch(original.strip()):
        return original
    return masked


def _copied(value: Any) -> Any:
    """A copy of the containers in a value (JSON-like data: dicts, lists, tuples), so a
    rendered body never shares a list or dict with its inputs; faster than deepcopy."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copied(v) for v in value]
    return value

