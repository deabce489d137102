"""Run a deployment and wait for its final state, optionally with a worker of our own.

``invoke run FLOW --env X`` and the Quickstart use this to prove that what was deployed
actually runs.  Network calls go through ``api.PrefectApi``; the worker is Prefect's own
process worker (``prefect worker start``), started as a child process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema

from deploy_lib.errors import DeployError, InputError, RunFailed, RunTimedOut
from deploy_lib.models import Settings, ownership_tags


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``["rows=10", "name=x", 'tags=["a"]']`` -> ``{"rows": 10, "name": "x", ...}``.

    A value is read as JSON when it parses (numbers, booleans, lists, objects), else
    kept as a string.  Raises ``InputError`` naming an item without ``=``.
    """
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    return params


def parameter_problems(deployment: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[str]:
    """What is wrong with running ``deployment`` with ``parameters`` (over its own), by
    its parameter schema, as the server would judge it, and before any run exists:
    a name the flow does not take, a value of the wrong type, a required one missing."""
    schema = deployment.get("parameter_openapi_schema")
    if not isinstance(schema, Mapping) or not schema.get("properties"):
        return []  # no schema to judge by (made elsewhere): the server decides
    properties = schema["properties"]
    problems = []
    unknown = sorted(set(parameters) - set(properties))
    if unknown and not _takes_any_keyword(properties):
        problems.append(
            f"unknown parameter(s) {', '.join(map(repr, unknown))}; the flow takes "
            + ", ".join(properties)
        )
    merged = {**(deployment.get("parameters") or {}), **parameters}
    try:
        validator = jsonschema.Draft202012Validator(dict(schema))
        errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
    except (jsonschema.SchemaError, jsonschema.exceptions.RefResolutionError):
        return problems  # a schema we cannot read: the server decides
    for error in errors:
        where = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"parameter {where}: {error.message}" if where else error.message)
    return problems


def _takes_any_keyword(properties: Mapping[str, Any]) -> bool:
    """The flow has ``**kwargs`` (Prefect writes it as an object property defaulting to
    ``{}``): then any name may be passed."""
    return any(
        isinstance(p, Mapping) and p.get("type") == "object" and p.get("default") == {}
        for p in properties.values()
    )


def pick_deployment(live: Sequence[Mapping[str, Any]], target: str) -> Mapping[str, Any]:
    """The live deployment ``target`` names: ``flow/deployment``, a deployment name, or a
    flow name (its python deployment when it has both).  ``InputError`` lists the
    choices when none or several match."""
    def full(d: Mapping[str, Any]) -> str:
        return f"{d.get('flow_name')}/{d.get('name')}"

    for matches in (
        [d for d in live if full(d) == target],
        [d for d in live if d.get("name") == target],
        [d for d in live if d.get("flow_name") == target],
    ):
        if len(matches) > 1:
            python = [d for d in matches if "runtime:python" in (d.get("tags") or ())]
            matches = python if len(python) == 1 else matches
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(sorted(full(d) for d in matches))
            raise InputError(f"{target!r} names several deployments: {names}; use flow/deployment")
    names = ", ".join(sorted(full(d) for d in live)) or "none (run `invoke deploy` first)"
    raise InputError(f"no deployment named {target!r} in this environment; deployed: {names}")


async def run_deployment(
    api: Any,
    settings: Settings,
    target: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    timeout: float = 600.0,
    on_state: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Create a flow run of the deployment ``target`` names (among this project's in
    ``settings.env``); with ``wait``, poll until it ends.

    Returns ``{"deployment", "flow_run_id", "flow_run_name", "state"}``.  Raises
    ``RunFailed`` when the run ends in any state but Completed, or outlasts ``timeout``.
    """
    live = await api.list_deployments(ownership_tags(settings.project, settings.env))
    chosen = pick_deployment(live, target)
    problems = parameter_problems(chosen, parameters or {})
    if problems:
        name = f"{chosen.get('flow_name')}/{chosen.get('name')}"
        raise InputError(
            f"no flow run of {name} was created: "
            + "; ".join(problems)
        )
    # The key makes the create safe to retry: a SQLite server answers 503 while flow runs
    # write, and a repeated key returns the run the first attempt may have made.
    run = await api.create_flow_run(
        str(chosen["id"]), dict(parameters or {}), idempotency_key=f"deploy-lib-{uuid.uuid4()}"
    )
    outcome = {
        "deployment": f"{chosen.get('flow_name')}/{chosen.get('name')}",
        "flow_run_id": run.get("id"),
        "flow_run_name": run.get("name"),
        "state": (run.get("state") or {}).get("name"),
    }
    if not wait:
        return outcome
    try:
        state = await api.wait_flow_run(str(run["id"]), timeout, on_state=on_state)
    except RunTimedOut as late:
        # Left alone, a worker would run it minutes later, with nobody waiting.
        try:
            await api.cancel_flow_run(late.flow_run_id, running=late.state == "RUNNING")
        except DeployError as exc:
            raise RunTimedOut(
                f"{late}; it could not be cancelled ({exc}): it is still queued as flow "
                f"run {late.flow_run_id}",
                flow_run_id=late.flow_run_id,
                state=late.state,
            ) from None
        what = "it is being cancelled" if late.state == "RUNNING" else "it was cancelled"
        raise RunTimedOut(f"{late}; {what}", flow_run_id=late.flow_run_id, state=late.state) from None
    outcome["state"] = state.get("name")
    if state.get("type") != "COMPLETED":
        message = state.get("message") or "no message"
        raise RunFailed(
            f"flow run {run.get('name')!r} of {outcome['deployment']} ended "
            f"{state.get('name')}: {message}"
        )
    return outcome


