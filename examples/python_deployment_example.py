"""Scripting deployments with deploy_lib's Python API.

What it shows, on the project around the current directory (or ``--root``):

1. a flow described by hand (``FlowMetadata``) and the same flow found by discovery;
2. its python deployment for development and for production, each validated, and what
   differs between the two environments (and between the hand-made and discovered
   descriptions);
3. validation of a broken deployment dict: every problem, with its key path;
4. the docker deployments of the flows that have a Dockerfile;
5. with ``--deploy``: the flow deployed to ``--env`` (default development) with
   ``deploy_to_prefect``, then every flow with ``deploy_flows``.  An environment without
   ``api_url`` uses the project's local Prefect server, started when needed.

Secret values are masked in everything printed.  Exit 1 with the message on a
``DeployError`` (bad settings, invalid deployment, API refusal).

    python examples/python_deployment_example.py [--root DIR] [--flow env-report] [--deploy]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from deploy_lib import (
    ConfigurationManager,
    DeployError,
    DockerDeploymentCreator,
    FlowMetadata,
    PythonDeploymentCreator,
    deploy_flows,
)
from deploy_lib.templates import mask_body


def differences(old: Any, new: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every value that differs; lists compare whole."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted({*old, *new}, key=str):
            where = f"{path}.{key}" if path else str(key)
            yield from differences(old.get(key, "<missing>"), new.get(key, "<missing>"), where)
    elif old != new:
        yield path, old, new


def shown(value: Any, limit: int = 70) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="project root (default: found from the current directory)")
    parser.add_argument("--flow", default="env-report", help="the flow to show")
    parser.add_argument("--deploy", action="store_true", help="also deploy to --env")
    parser.add_argument("--env", default="development", help="environment to deploy to")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    config = ConfigurationManager(args.root)
    creator = PythonDeploymentCreator(config)
    print(f"environments: {', '.join(config.environments())}")

    # 1. The same flow twice: described by hand, and read from its source.
    discovered = config.find_flow(args.flow)
    by_hand = FlowMetadata(name=discovered.name, function=discovered.function, path=discovered.path)
    print(
        f"by hand:   {by_hand.name} at {by_hand.entrypoint} (module {by_hand.module_entrypoint}), "
        f"{len(by_hand.parameters)} parameter(s)"
    )
    print(
        f"discovered: {discovered.name} at {discovered.entrypoint}, "
        f"{len(discovered.parameters)} parameter(s): "
        + ", ".join(p.name for p in discovered.parameters)
    )

    # 2. Its python deployment per environment, validated; then what differs (a flow
    #    given by name, function and path only is completed from its source).
    bodies: dict[str, dict[str, Any]] = {}
    for env in ("development", "production"):
        body = creator.create_deployment(discovered, env)
        problems = creator.validate_deployment_config(body)
        bodies[env] = mask_body(body, config.settings(env))
        verdict = "valid" if not problems else f"{len(problems)} problem(s)"
        print(
            f"{env}: deployment {body['name']!r} in work pool {body['work_pool_name']!r} "
            f"from {creator.template_source(env)}, {len(body['parameters'])} parameter(s): "
            f"{verdict}"
        )
        for problem in problems:
            print(f"  - {problem}")
    print("development -> production:")
    for key, old, new in differences(bodies["development"], bodies["production"]):
        print(f"  {key}: {shown(old)} -> {shown(new)}")

    hand_body = creator.create_deployment(by_hand, "development")
    hand_body = mask_body(hand_body, config.settings("development"))
    changed = sorted(
        {key.split(".")[0] for key, _, _ in differences(hand_body, bodies["development"])}
    )
    print(f"by hand vs discovered (development): {', '.join(changed) or 'identical'}")
    for warning in creator.warnings:
        print(f"  warning: {warning}")

    # 3. A broken dict: validation names every problem and its key path.
    broken = dict(bodies["production"])
    broken.update(
        concurrency_limit=0,
        schedules=[{"schedule": {"cron": "61 * * * *", "timezone": "UTC"}, "active": True}],
        colour="blue",
    )
    problems = creator.validate_deployment_config(broken)
    print(f"broken production dict: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem.key}: {problem.message}")

    # 4. Docker deployments, for the flows with a Dockerfile.
    docker = DockerDeploymentCreator(config)
    for flow in config.flows("production"):
        if flow.supports_docker_deployment:
            body = docker.create_deployment(flow, "production")
            image = body["job_variables"]["image"]
            valid = "valid" if not docker.validate_deployment_config(body) else "INVALID"
            print(f"docker: {body['name']!r} runs image {image} ({valid})")

    # 5. Deploy: one flow, then all of them.
    if args.deploy:
        deployment_id = creator.deploy_to_prefect(discovered, args.env)
        print(f"deployed {discovered.name} to {args.env}: id {deployment_id}")
        result = deploy_flows(args.env, root=config.root)
        for item in result.results:
            print(f"  {item.deployment}: {item.status} {item.id or ''} {item.error or ''}".rstrip())
        counts = ", ".join(f"{n} {status}" for status, n in result.counts.items() if n)
        print(f"deploy_flows({args.env!r}): {counts}")
        if result.failed:
            return 4
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
