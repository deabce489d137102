"""Work pool types, what their job templates can say, and one resources vocabulary for
all of them (pure: templates are handed in as the JSON the server or Prefect ships).

A deployment type is the work pool type it runs on, except ``python``, which runs on
``process`` pools.  Every type whose base job template is known (Prefect's bundled
worker metadata offline, the live pool's template before a write) is a deployment
type: ``docker``, ``kubernetes``, ``ecs``, ``cloud-run``, ``cloud-run-v2``,
``azure-container-instance``, ``vertex-ai``, ...  A type whose template defines an
``image`` variable is a *container* type: its deployments run the flow's image (built
from its Dockerfile, or named in settings), like docker ones.

Resources are said once, in one vocabulary (``cpu`` in CPUs, ``memory`` and
``memory_swap`` as sizes such as ``512m``, ``2g`` or ``1Gi``), and mapped onto the job
variables each template defines, in that variable's own unit and type:

    cpu          cpu_request, cpu_limit (Kubernetes quantities: "500m", "2");
                 cpu: an integer means CPU units (ECS: 1024 a CPU), a number CPUs
                 (Azure), a string millicores ("1000m", Cloud Run)
    memory       mem_limit (docker: "1g"); memory_request, memory_limit ("512Mi");
                 memory: an integer means MiB (ECS), a number GiB (Azure), a string
                 "512Mi" (Cloud Run)
    memory_swap  memswap_limit (docker)

A resource the template has no variable for is returned as not expressible, so the
caller can warn naming it.  ``mem_limit`` and ``memswap_limit`` are accepted as the
older names of ``memory`` and ``memory_swap``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from deploy_lib.models import PROCESS, deployment_type, pool_type

__all__ = [
    "PROCESS",
    "RESOURCE_ALIASES",
    "RESOURCE_KEYS",
    "deployment_type",
    "is_container",
    "map_resources",
    "parse_cpu",
    "parse_size",
    "pool_type",
    "variables",
]

# Resource keys that map onto job variables; concurrency_limit and collision_strategy
# are deployment fields and handled by build.
RESOURCE_KEYS = ("cpu", "memory", "memory_swap")
RESOURCE_ALIASES = {"mem_limit": "memory", "memswap_limit": "memory_swap"}
# Which job variables can carry each resource, in the order they are filled.
_TARGETS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu_request", "cpu_limit", "cpu"),
    "memory": ("mem_limit", "memory_request", "memory_limit", "memory"),
    "memory_swap": ("memswap_limit",),
}

_KI = 1024
_UNITS = {
    "": 1, "b": 1,
    "k": _KI, "m": _KI**2, "g": _KI**3, "t": _KI**4,  # docker's letters are binary
    "ki": _KI, "mi": _KI**2, "gi": _KI**3, "ti": _KI**4,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{0,2})\s*\Z")
_DOCKER_SIZE = re.compile(r"[0-9]+[bkmg]?\Z")


def variables(template: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The job variables a base job template defines, name -> JSON schema ({} for no
    template)."""
    props = ((template or {}).get("variables") or {}).get("properties") or {}
    return {str(k): v for k, v in props.items() if isinstance(v, Mapping)}


def is_container(template: Mapping[str, Any] | None) -> bool:
    """Whether deployments on pools of this template run an image."""
    return "image" in variables(template)


def parse_size(value: Any) -> int:
    """A size in bytes: an integer is bytes; text is a number with an optional unit,
    docker's ``b k m g`` or ``Ki Mi Gi Ti``, all binary and in either case (``1G`` is
    docker's GiB, not Kubernetes' 10**9).  ``ValueError`` names what was given."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a size such as 512m, 2g or 1Gi")
    number, unit = float(match.group(1)), match.group(2)
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{value!r} has an unknown unit {unit!r} (use b, k, m, g, Ki, Mi or Gi)")
    return math.ceil(number * factor)


def parse_cpu(value: Any) -> float:
    """CPUs: a positive number, or text such as ``"2"``, ``"0.5"`` or ``"500m"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            cpus = 0.0
        if cpus > 0:
            return cpus
    raise ValueError(f"{value!r} is not a number of CPUs such as 0.5, 2 or \"500m\"")


def map_resources(
    resources: Mapping[str, Any], template: Mapping[str, Any] | None
) -> tuple[dict[str, tuple[str, Any]], list[str]]:
    """``resources`` (``cpu``, ``memory``, ``memory_swap``; unset ones are None) as the
    job variables ``template`` defines.

    Returns ``{variable: (resource, value)}`` and the resources that were set but that
    the template has no variable for.  Raises ``ValueError`` for a value that is not
    a size or a number of CPUs."""
    props = variables(template)
    out: dict[str, tuple[str, Any]] = {}
    missing: list[str] = []
    for resource in RESOURCE_KEYS:
        raw = resources.get(resource)
        if raw is None:
            continue
        targets = [name for name in _TARGETS[resource] if name in props]
        if not targets:
            missing.append(resource)
            continue
        for name in targets:
            out[name] = (resource, _format(resource, raw, name, props[name]))
    return out, missing


def _format(resource: str, raw: Any, name: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if resource == "cpu":
        cpus = parse_cpu(raw)
        millis = round(cpus * 1000)
        if name in ("cpu_request", "cpu_limit"):
            return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
        if kind == "integer":
            return round(cpus * 1024)  # ECS CPU units
        if kind == "number":
            return cpus
        return f"{millis}m"
    size = parse_size(raw)
    if name in ("mem_limit", "memswap_limit"):
        if isinstance(raw, str) and _DOCKER_SIZE.match(raw.strip()):
            return raw.strip()
        return _docker_size(size)
    if name in ("memory_request", "memory_limit"):
        return _binary_quantity(size)
    if kind == "integer":
        return math.ceil(size / _KI**2)  # MiB
    if kind == "number":
        return round(size / _KI**3, 2)  # GiB
    return _binary_quantity(size, smallest="Mi")


def _docker_size(size: int) -> str:
    for unit, factor in (("g", _KI**3), ("m", _KI**2), ("k", _KI)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _binary_quantity(size: int, smallest: str = "") -> str:
    for unit, factor in (("Gi", _KI**3), ("Mi", _KI**2), ("Ki", _KI)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
        if unit == smallest:
            return f"{math.ceil(size / factor)}{unit}"
    return str(size)
