"""The Cerberus schemas as data: well-formed, strict, and their patterns."""

from __future__ import annotations

import re

import pytest
from cerberus import Validator

from deploy_lib.api import bundled_job_templates
from deploy_lib.models import DeploymentSpec
from deploy_lib.schema import (
    DEPLOYMENT_KEYS,
    ENTRYPOINT,
    IMAGE_REFERENCE,
    NAME,
    SCHEDULE,
    SCHEDULE_KINDS,
    deployment_schema,
    job_variables_schema,
)

TEMPLATES = bundled_job_templates()
SCHEMAS = {
    kind: deployment_schema(job_variables_schema(t, container="image" in t["variables"]["properties"]))
    for kind, t in TEMPLATES.items()
}


def _documented_body_keys() -> list[str]:
    """The body keys DeploymentSpec's docstring promises, in its order."""
    doc = DeploymentSpec.__doc__ or ""
    listed = doc.split("with exactly these keys", 1)[1].split("``schedules`` use", 1)[0]
    return re.findall(r"``(\w+)``", listed)


def test_every_schema_names_exactly_the_documented_body_keys() -> None:
    documented = _documented_body_keys()
    assert len(documented) == 17
    assert list(DEPLOYMENT_KEYS) == documented
    for kind, schema in SCHEMAS.items():
        assert list(schema) == documented, kind
        optional = [key for key, rules in schema.items() if not rules.get("required")]
        assert optional == ["concurrency_options"], kind


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schemas_are_valid_cerberus_schemas(kind: str) -> None:
    # Cerberus checks a schema when a validator is built; check_with rules need the
    # methods of our validator, so they are left out for this plain one.
    def without_check_with(node: object) -> object:
        if isinstance(node, dict):
            return {k: without_check_with(v) for k, v in node.items() if k != "check_with"}
        if isinstance(node, list):
            return [without_check_with(v) for v in node]
        return node

    Validator(without_check_with(SCHEMAS[kind]))


def test_every_pool_type_prefect_ships_has_a_schema() -> None:
    assert {"process", "docker", "kubernetes", "ecs", "cloud-run", "cloud-run-v2",
            "azure-container-instance", "vertex-ai"} <= set(SCHEMAS)


def test_container_types_require_an_image_and_process_has_none() -> None:
    process = SCHEMAS["process"]["job_variables"]["schema"]
    for kind in ("docker", "kubernetes", "ecs", "cloud-run"):
        rules = SCHEMAS[kind]["job_variables"]["schema"]
        assert rules["image"]["required"] is True, kind
        assert rules["image"]["check_with"] == "image_reference", kind
    assert "image" not in process
    assert "working_dir" in process and "working_dir" not in SCHEMAS["docker"]["job_variables"]["schema"]


def test_job_variable_rules_follow_the_templates_json_schema() -> None:
    k8s = SCHEMAS["kubernetes"]["job_variables"]["schema"]
    assert k8s["image_pull_policy"]["allowed"] == ["IfNotPresent", "Always", "Never"]
    assert k8s["cpu_request"]["type"] == "string"
    # An object given by reference may also be a block placeholder.
    assert k8s["cluster_config"]["type"] == ["dict", "string"]
    ecs = SCHEMAS["ecs"]["job_variables"]["schema"]
    assert ecs["cpu"]["type"] == "integer" and ecs["memory"]["type"] == "integer"
    run = SCHEMAS["cloud-run"]["job_variables"]["schema"]
    assert run["memory"]["regex"] == r"\d+(?:G|Gi|M|Mi)"
    assert SCHEMAS["docker"]["job_variables"]["schema"]["mem_limit"]["meta"]["hint"].startswith("a size")


def test_a_template_of_a_type_unknown_today_gets_a_schema_too() -> None:
    template = {"variables": {"properties": {
        "image": {"type": "string"},
        "gpus": {"type": "integer", "minimum": 0},
        "zones": {"type": "array", "items": {"type": "string"}},
        "size": {"enum": ["s", "m"], "type": "string"},
    }}}
    rules = job_variables_schema(template, container=True)
    assert rules["gpus"] == {"nullable": True, "type": "integer", "min": 0}
    assert rules["zones"]["schema"]["type"] == "string"
    assert rules["size"]["allowed"] == ["s", "m"]
    assert rules["image"]["required"] is True


def test_schedule_keys_are_the_union_of_prefects_schedule_fields() -> None:
    assert set(SCHEDULE_KINDS) <= set(SCHEDULE)
    assert set(SCHEDULE) == {"cron", "interval", "rrule", "timezone", "anchor_date", "day_or"}


@pytest.mark.parametrize(
    "entrypoint",
    ["flows/etl/daily.py:daily_etl", "hello.py:hello", "flows.etl.daily:daily_etl", "hello:main"],
)
def test_entrypoint_pattern_accepts_both_forms(entrypoint: str) -> None:
    assert re.fullmatch(ENTRYPOINT, entrypoint)


@pytest.mark.parametrize(
    "entrypoint",
    [
        "flows/etl/daily.py",
        "flows/etl/daily.py:",
        "flows/etl/daily.py:1st",
        "flows/etl/daily:daily_etl",
        "flows etl.py:x",
        "flows..etl:x",
    ],
)
def test_entrypoint_pattern_rejects_malformed(entrypoint: str) -> None:
    assert not re.fullmatch(ENTRYPOINT, entrypoint)


@pytest.mark.parametrize("name", ["etl-python", "Daily ETL (v2)", "a.b_c"])
def test_name_pattern_accepts(name: str) -> None:
    assert re.fullmatch(NAME, name)


@pytest.mark.parametrize("name", ["a/b", "50%", "x&y", "<x>"])
def test_name_pattern_rejects_prefects_banned_characters(name: str) -> None:
    assert not re.fullmatch(NAME, name)


@pytest.mark.parametrize(
    "reference",
    [
        "ubuntu",
        "python:3.11-slim",
        "localhost:5000/deploy-lib/etl:abc1234",
        "registry.staging.internal/deploy-lib/etl:abc1234-dirty",
        "Registry.Example.com/team/flow:1.0",
        "[::1]:5000/team/flow",
        "ghcr.io/org/img@sha256:" + "a" * 64,
        "img:tag@sha256:" + "b" * 64,
        "a__b/c--d/e.f",
    ],
)
def test_image_reference_pattern_accepts(reference: str) -> None:
    assert IMAGE_REFERENCE.fullmatch(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "team/Flow",
        "reg/x:",
        "reg/x:-tag",
        "reg//x",
        "reg/x y",
        "reg/x:" + "t" * 129,
        "x@sha256:tooshort",
        "-x",
        "x-",
        "a___b",
        "reg:port/x",
    ],
)
def test_image_reference_pattern_rejects(reference: str) -> None:
    assert not IMAGE_REFERENCE.fullmatch(reference)
