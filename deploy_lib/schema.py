"""The Cerberus schemas of a deployment body, as plain data.

One schema per work pool job template: ``deployment_schema(job_variables_schema(t))``.
Deployment types differ only in ``job_variables``, whose rules are derived from the
``variables`` of the pool type's base job template (Prefect's bundled copy offline,
the live pool's before a write), so a new pool type or Prefect release needs no code
here.  Every schema is strict: a key it does not name is an error.

Rules that Cerberus cannot express are named ``check_with`` rules implemented by the
validator in ``validate.py``:

- ``image_reference``: a docker image reference (``IMAGE_REFERENCE`` below);
- ``schedule``: exactly one of cron / interval / rrule, then the schedule is handed to
  Prefect's own ``CronSchedule`` / ``IntervalSchedule`` / ``RRuleSchedule``;
- ``pull_step``: one known Prefect step's required inputs.

``meta.hint`` says in words what a ``regex`` or ``allowed`` rule wants; validation
messages quote it instead of the pattern.  Types are Cerberus's, except that
``integer`` never accepts a boolean (see ``validate.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from deploy_lib.models import COLLISION_STRATEGIES

__all__ = [
    "COLLISION_STRATEGIES",
    "DEPLOYMENT_KEYS",
    "ENTRYPOINT",
    "ENV_VAR_NAME",
    "IMAGE_REFERENCE",
    "NAME",
    "SCHEDULE",
    "SCHEDULE_KINDS",
    "STEP_REQUIRED_INPUTS",
    "deployment_schema",
    "job_variables_schema",
]

# Prefect refuses these characters in deployment and flow names (prefect/types/names.py).
NAME = r"[^/%&<>]+"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# path/to/file.py:function or package.module:function
ENTRYPOINT = rf"(?:[^:\s]+\.py|{_IDENTIFIER}(?:\.{_IDENTIFIER})*):{_IDENTIFIER}"
ENV_VAR_NAME = _IDENTIFIER
_STEP_NAME = rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})+"
_SIZE = r"[0-9]+(?:\.[0-9]+)?[bkmgBKMG]?"

# The docker reference grammar (github.com/distribution/reference, regexp.go):
#   reference := name [ ":" tag ] [ "@" digest ]
#   name      := [ domain "/" ] path-component ( "/" path-component )*
#   domain    := host [ ":" port ]   (a DNS name, or an IPv6 address in brackets)
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
IMAGE_NAME_MAX_LENGTH = 255

SCHEDULE_KINDS = ("cron", "interval", "rrule")


# Inputs a Prefect pull step cannot run without (prefect/deployments/steps).
STEP_REQUIRED_INPUTS: dict[str, tuple[str, ...]] = {
    "prefect.deployments.steps.set_working_directory": ("directory",),
    "prefect.deployments.steps.git_clone": ("repository",),
    "prefect.deployments.steps.pip_install_requirements": (),
    "prefect.deployments.steps.run_shell_script": ("script",),
    "prefect.deployments.steps.pull_from_remote_storage": ("url",),
}


def _text(*, empty: bool = False, nullable: bool = False, **rules: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"type": "string", **rules}
    if not empty:
        rule["empty"] = False
    if nullable:
        rule["nullable"] = True
    return rule


def _string_map(**rules: Any) -> dict[str, Any]:
    # No keysrules: keys from YAML or TOML are strings already, and each extra rule
    # costs Cerberus a child validator on every body (labels differ per deployment).
    return {"type": "dict", "valuesrules": {"type": "string"}, **rules}


_SIZE_RULE: dict[str, Any] = {
    "type": ["integer", "string"],
    "nullable": True,
    "regex": _SIZE,
    "meta": {"hint": "a size such as 512m or 2g (a number of bytes with an optional b, k, m or g)"},
}

# A worker sets environment variables as strings; a number or boolean here would be
# turned into text by someone else's rules, so we insist on the text itself.
_ENV_RULE: dict[str, Any] = {
    "type": "dict",
    "keysrules": {
        "type": "string",
        "regex": ENV_VAR_NAME,
        "meta": {
            "hint": "an environment variable name (letters, digits and _, not starting with a digit)"
        },
    },
    "valuesrules": {
        "type": "string",
        "meta": {"hint": "a string: a worker sets environment variables as text, so quote it"},
    },
}

# Refinements of what a job template says, by variable name: checks that JSON schema
# cannot state (an image reference, a size) or that it states loosely (env values).
_REFINED: dict[str, dict[str, Any]] = {
    "env": _ENV_RULE,
    "image": {"type": "string", "empty": False, "check_with": "image_reference"},
    "mem_limit": _SIZE_RULE,
    "memswap_limit": _SIZE_RULE,
}
_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "dict",
    "array": "list",
}


def job_variables_schema(template: Mapping[str, Any] | None, *, container: bool = False) -> dict[str, Any]:
    """The Cerberus rules of ``job_variables`` for a work pool's base job ``template``,
    derived from its ``variables`` JSON schema (so a new Prefect release needs no code
    here): each variable's type, enum, pattern, bounds, list items and string maps; an
    object given by reference may also be a ``{{ prefect.blocks... }}`` placeholder.
    A few variables are refined by name (``env``, ``image``, docker sizes).  With
    ``container``, ``image`` is required (a container deployment always names one)."""
    variables = (template or {}).get("variables") or {}
    definitions = variables.get("definitions") or {}
    rules: dict[str, Any] = {}
    for name, prop in (variables.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        rule = _REFINED.get(name) or _json_rule(prop, definitions)
        rules[str(name)] = dict(rule)
    if container and "image" in rules:
        rules["image"]["required"] = True
    return rules


def _json_rule(prop: Mapping[str, Any], definitions: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """One JSON schema property as a Cerberus rule (permissive where it cannot say)."""
    if depth > 8:
        return {"nullable": True}
    target = _resolve(prop, definitions)
    kinds = target.get("type")
    if kinds is None and "anyOf" in target:
        kinds = [
            _resolve(option, definitions).get("type")
            for option in target["anyOf"]
            if isinstance(option, Mapping)
        ]
    kinds = kinds if isinstance(kinds, list) else [kinds]
    rule: dict[str, Any] = {"nullable": True}
    types = [_JSON_TYPES[k] for k in kinds if k in _JSON_TYPES]
    if target is not prop and "dict" in types:
        types.append("string")  # a block given by reference: {{ prefect.blocks.x.y }}
    if types:
        rule["type"] = types[0] if len(types) == 1 else sorted(set(types))
    if isinstance(target.get("enum"), list):
        rule["allowed"] = list(target["enum"])
    if isinstance(target.get("pattern"), str) and rule.get("type") == "string":
        rule["regex"] = target["pattern"].removeprefix("^").removesuffix("$")
        rule["meta"] = {"hint": f"text matching {target['pattern']}" + (
            f", such as {target['example']!r}" if "example" in target else "")}
    for json_key, cerberus_key in (("minimum", "min"), ("maximum", "max")):
        if isinstance(target.get(json_key), (int, float)) and rule.get("type") in ("integer", "number"):
            rule[cerberus_key] = target[json_key]
    if rule.get("type") == "list" and isinstance(target.get("items"), Mapping):
        rule["schema"] = _json_rule(target["items"], definitions, depth + 1)
    extra = target.get("additionalProperties")
    if rule.get("type") == "dict" and isinstance(extra, Mapping) and extra.get("type") in _JSON_TYPES:
        rule["valuesrules"] = {"type": _JSON_TYPES[extra["type"]]}
    return rule


def _resolve(prop: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    """``prop`` itself, or the definition it names (``$ref``, or ``allOf`` of one)."""
    ref = prop.get("$ref")
    if ref is None and isinstance(prop.get("allOf"), list) and len(prop["allOf"]) == 1:
        ref = (prop["allOf"][0] or {}).get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        found = definitions.get(ref.removeprefix("#/definitions/"))
        if isinstance(found, Mapping):
            return found
    return prop


# Inside one schedule item: the union of what Prefect's three schedule models accept.
# The check_with rule then lets the matching model judge the values.
SCHEDULE: dict[str, Any] = {
    "cron": _text(),
    "interval": {"type": "number", "meta": {"hint": "a number of seconds"}},
    "rrule": _text(),
    "timezone": {"type": "string", "nullable": True},
    "anchor_date": {"type": ["string", "datetime"]},
    "day_or": {"type": "boolean"},
}

_SCHEDULE_ITEM: dict[str, Any] = {
    "schedule": {"required": True, "type": "dict", "schema": SCHEDULE, "check_with": "schedule"},
    "active": {"required": True, "type": "boolean"},
    "parameters": {"type": "dict", "keysrules": {"type": "string"}},
    "slug": _text(),
}

_PULL_STEP: dict[str, Any] = {
    "type": "dict",
    "minlength": 1,
    "maxlength": 1,
    "keysrules": {
        "type": "string",
        "regex": _STEP_NAME,
        "meta": {"hint": "a dotted step function name such as prefect.deployments.steps.git_clone"},
    },
    "valuesrules": {"type": "dict", "keysrules": {"type": "string"}},
    "check_with": "pull_step",
    "meta": {"hint": "one step per item: {step.function.name: {inputs}}"},
}


def deployment_schema(job_variables: dict[str, Any]) -> dict[str, Any]:
    """The rules of a whole deployment body whose ``job_variables`` follow
    ``job_variables`` (see ``job_variables_schema``)."""
    return {
        "name": _text(
            required=True,
            regex=NAME,
            meta={"hint": "a name without any of / % & < >"},
        ),
        "flow_name": _text(
            required=True,
            regex=NAME,
            meta={"hint": "a flow name without any of / % & < >"},
        ),
        "entrypoint": _text(
            required=True,
            regex=ENTRYPOINT,
            meta={"hint": "path/to/file.py:function or package.module:function"},
        ),
        "description": {"required": True, "type": "string", "nullable": True},
        "version": {"required": True, "type": "string", "nullable": True},
        "work_pool_name": _text(required=True),
        "work_queue_name": _text(required=True, nullable=True),
        "tags": {"required": True, "type": "list", "schema": _text()},
        "parameters": {"required": True, "type": "dict", "keysrules": {"type": "string"}},
        "parameter_openapi_schema": {
            "required": True,
            "type": "dict",
            "allow_unknown": True,
            "schema": {
                "type": {"required": True, "type": "string", "allowed": ["object"]},
                "properties": {"required": True, "type": "dict"},
                "required": {"type": "list", "schema": {"type": "string"}},
                "definitions": {"type": "dict"},
            },
        },
        "job_variables": {"required": True, "type": "dict", "schema": job_variables},
        "pull_steps": {"required": True, "type": "list", "schema": _PULL_STEP},
        "schedules": {
            "required": True,
            "type": "list",
            "schema": {"type": "dict", "schema": _SCHEDULE_ITEM},
        },
        "concurrency_limit": {"required": True, "type": "integer", "nullable": True, "min": 1},
        "concurrency_options": {
            "required": False,
            "type": "dict",
            "nullable": True,
            "schema": {
                "collision_strategy": {
                    "required": True,
                    "type": "string",
                    "allowed": list(COLLISION_STRATEGIES),
                }
            },
        },
        "paused": {"required": True, "type": "boolean"},
        "enforce_parameter_schema": {"required": True, "type": "boolean"},
    }


# The keys of every deployment body, in the order Prefect's API documents them.
DEPLOYMENT_KEYS: tuple[str, ...] = tuple(deployment_schema({}))
