"""The Cerberus schemas of a deployment body, as plain data.

One schema per deployment type (``SCHEMAS["python"]``, ``SCHEMAS["docker"]``); they
differ only in ``job_variables``, whose keys are the variables of the work pool's job
template (Prefect's process worker, and prefect-docker's docker worker).  Every schema
is strict: a key it does not name is an error.

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
from typing import Any

__all__ = [
    "DEPLOYMENT_KEYS",
    "ENTRYPOINT",
    "ENV_VAR_NAME",
    "IMAGE_REFERENCE",
    "NAME",
    "SCHEDULE",
    "SCHEDULE_KINDS",
    "SCHEMAS",
    "STEP_REQUIRED_INPUTS",
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

# Variables of Prefect's process worker job template (prefect/workers/process.py).
_PROCESS_JOB_VARIABLES: dict[str, Any] = {
    "env": _ENV_RULE,
    "working_dir": _text(nullable=True),
    "command": _text(nullable=True),
    "labels": _string_map(),
    "name": _text(nullable=True),
    "stream_output": {"type": "boolean"},
}

# Variables of the docker worker's base job template as Prefect ships it.
_DOCKER_JOB_VARIABLES: dict[str, Any] = {
    "env": _ENV_RULE,
    "image": {"required": True, "type": "string", "empty": False, "check_with": "image_reference"},
    "image_pull_policy": {
        "type": "string",
        "nullable": True,
        "allowed": ["Always", "IfNotPresent", "Never"],
    },
    "registry_credentials": {"type": ["dict", "string"], "nullable": True},
    "networks": {"type": "list", "schema": _text()},
    "network_mode": _text(nullable=True),
    "auto_remove": {"type": "boolean"},
    "volumes": {"type": "list", "schema": _text()},
    "stream_output": {"type": "boolean"},
    "mem_limit": _SIZE_RULE,
    "memswap_limit": _SIZE_RULE,
    "privileged": {"type": "boolean"},
    "container_wait_timeout": {"type": "integer", "min": 0, "nullable": True},
    "command": _text(nullable=True),
    "labels": _string_map(),
    "name": _text(nullable=True),
}

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


def _deployment_schema(job_variables: dict[str, Any]) -> dict[str, Any]:
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
        "paused": {"required": True, "type": "boolean"},
        "enforce_parameter_schema": {"required": True, "type": "boolean"},
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "python": _deployment_schema(_PROCESS_JOB_VARIABLES),
    "docker": _deployment_schema(_DOCKER_JOB_VARIABLES),
}

# The keys of every deployment body, in the order Prefect's API documents them.
DEPLOYMENT_KEYS: tuple[str, ...] = tuple(SCHEMAS["python"])
