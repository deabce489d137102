"""pools: the deployment type of each work pool type, and the one resources vocabulary
mapped onto each job template Prefect ships."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_lib.api import bundled_job_templates
from deploy_lib.pools import (
    deployment_type,
    is_container,
    map_resources,
    parse_cpu,
    parse_size,
    pool_type,
)

TEMPLATES = bundled_job_templates()


def test_python_runs_on_process_pools_and_every_other_type_on_its_own() -> None:
    assert pool_type("python") == "process"
    assert deployment_type("process") == "python"
    for kind in ("docker", "kubernetes", "ecs", "cloud-run-v2"):
        assert pool_type(kind) == deployment_type(kind) == kind


def test_container_types_are_those_whose_template_has_an_image() -> None:
    containers = {kind for kind, template in TEMPLATES.items() if is_container(template)}
    assert {"docker", "kubernetes", "ecs", "cloud-run", "cloud-run-v2",
            "azure-container-instance", "vertex-ai"} <= containers
    assert "process" not in containers


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1g", 2**30), ("512m", 512 * 2**20), ("2G", 2 * 2**30), ("1Gi", 2**30),
        ("256Mi", 256 * 2**20), ("1.5g", 3 * 2**29), ("1000", 1000), (4096, 4096),
        ("1M", 2**20),
    ],
)
def test_sizes_read_docker_and_kubernetes_units(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["2 gigs", "", "-1g", "1x", True, None, "g"])
def test_a_size_that_is_not_one_is_refused_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"size|unit"):
        parse_size(bad)


@pytest.mark.parametrize(("value", "cpus"), [(2, 2.0), (0.5, 0.5), ("500m", 0.5), ("1.5", 1.5)])
def test_cpus_read_numbers_and_millicores(value: Any, cpus: float) -> None:
    assert parse_cpu(value) == cpus


@pytest.mark.parametrize("bad", [0, -1, "lots", True, "0m"])
def test_a_cpu_count_that_is_not_one_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="CPUs"):
        parse_cpu(bad)


LIMITS = {"cpu": 0.5, "memory": "1g", "memory_swap": "2g"}


@pytest.mark.parametrize(
    ("kind", "expected", "missing"),
    [
        ("docker", {"mem_limit": "1g", "memswap_limit": "2g"}, ["cpu"]),
        (
            "kubernetes",
            {"cpu_request": "500m", "cpu_limit": "500m",
             "memory_request": "1Gi", "memory_limit": "1Gi"},
            ["memory_swap"],
        ),
        ("ecs", {"cpu": 512, "memory": 1024}, ["memory_swap"]),
        ("cloud-run", {"cpu": "500m", "memory": "1Gi"}, ["memory_swap"]),
        ("cloud-run-v2", {"cpu": "500m", "memory": "1Gi"}, ["memory_swap"]),
        ("azure-container-instance", {"cpu": 0.5, "memory": 1.0}, ["memory_swap"]),
        ("vertex-ai", {}, ["cpu", "memory", "memory_swap"]),
        ("process", {}, ["cpu", "memory", "memory_swap"]),
    ],
)
def test_one_vocabulary_maps_onto_each_pool_types_own_variables(
    kind: str, expected: dict[str, Any], missing: list[str]
) -> None:
    mapped, unexpressed = map_resources(LIMITS, TEMPLATES[kind])
    assert {name: value for name, (_, value) in mapped.items()} == expected
    assert unexpressed == missing


def test_whole_cpus_are_plain_kubernetes_quantities_and_odd_sizes_round_up() -> None:
    mapped, _ = map_resources({"cpu": 2, "memory": "1500m"}, TEMPLATES["kubernetes"])
    assert mapped["cpu_limit"] == ("cpu", "2")
    assert mapped["memory_limit"] == ("memory", "1500Mi")
    ecs, _ = map_resources({"memory": "1.5g"}, TEMPLATES["ecs"])
    assert ecs["memory"] == ("memory", 1536)


def test_a_docker_size_is_kept_as_written() -> None:
    mapped, _ = map_resources({"memory": "512m"}, TEMPLATES["docker"])
    assert mapped["mem_limit"] == ("memory", "512m")
    converted, _ = map_resources({"memory": "1Gi"}, TEMPLATES["docker"])
    assert converted["mem_limit"] == ("memory", "1g")


def test_a_template_of_a_new_pool_type_is_mapped_by_its_variables_types() -> None:
    template = {"variables": {"properties": {"cpu": {"type": "number"}, "memory": {"type": "integer"}}}}
    mapped, missing = map_resources({"cpu": 4, "memory": "2g"}, template)
    assert mapped == {"cpu": ("cpu", 4.0), "memory": ("memory", 2048)}
    assert missing == []


# -- on the real server: every pool type registered, triggers run on a real worker --------

import asyncio  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from helpers import make_project  # noqa: E402

from deploy_lib import pipeline  # noqa: E402
from deploy_lib.api import PrefectApi  # noqa: E402
from deploy_lib.errors import ValidationFailed  # noqa: E402
from deploy_lib.server import background_worker  # noqa: E402
from deploy_lib.settings import load_settings  # noqa: E402

# Put into the repository's settings.toml (its [development] tables exist already).
DEVELOPMENT = '''[development]
deployment_types = ["python", "kubernetes", "ecs", "cloud-run"]
project = "{name}"
'''
RESOURCES = """[development.resources]
concurrency_limit = 2
collision_strategy = "CANCEL_NEW"
cpu = 1
memory = "1Gi"
"""


CHAIN_FLOWS = {
    "flows/chain.py": (
        "from prefect import flow\n\n\n"
        "@flow(name='upstream')\ndef upstream() -> str:\n    return 'up'\n\n\n"
        "@flow(name='downstream')\ndef downstream(note: str = 'none') -> str:\n    return note\n"
    ),
}


def _project(root: Path, server: str, extra: str = "", *, name: str) -> Path:
    """A project of the two chain flows whose development deploys to every pool type
    above, as project ``name`` (each test its own, on the shared server)."""
    project = make_project(root, CHAIN_FLOWS, example_flows=False)
    text = (project / "settings.toml").read_text()
    text = text.replace("[development]\n", DEVELOPMENT.format(name=name), 1)
    text = text.replace("[development.resources]\nconcurrency_limit = 2\n", RESOURCES, 1)
    text = text.replace(
        'python = "default-agent-pool"\ndocker = "default-docker-pool"\nqueue = "default"\n',
        'python = "pools-e2e-process"\nkubernetes = "pools-e2e-k8s"\necs = "pools-e2e-ecs"\n'
        'cloud-run = "pools-e2e-run"\nqueue = "default"\n',
        1,
    )
    text = text.replace('[development.work_pool]\npython = "default-agent-pool"\ndocker = "default-docker-pool"\n', "", 1)
    (project / "settings.toml").write_text(text + extra)
    return project


def _settings(project: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DEPLOY_API_URL", server)
    return load_settings("development", project)


def _read(server: str, flow: str, name: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with PrefectApi(server) as api:
            found = await api.read_deployment_by_name(flow, name)
            assert found is not None, f"{flow}/{name} is not on the server"
            return found

    return asyncio.run(go())


def test_a_flow_deploys_to_kubernetes_ecs_and_cloud_run_pools_with_its_limits(
    tmp_path: Path, deploy_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = (
        '\n[development.flows.upstream]\nimage = "ghcr.io/acme/chain:1.0"\n'
        '\n[development.flows.downstream]\ntypes = ["python"]\ncollision_strategy = "ENQUEUE"\n'
        'schedules = [{cron = "0 6 * * *", slug = "morning", parameters = {note = "early"}, '
        'active = false}]\n'
    )
    project = _project(tmp_path / "p", deploy_server, extra, name="pools-e2e")
    settings = _settings(project, deploy_server, monkeypatch)

    rows = pipeline.pools(settings, create=True)  # from Prefect's bundled templates
    assert {r["deployment_type"]: (r["type"], r["type_ok"]) for r in rows} == {
        "python": ("process", True), "kubernetes": ("kubernetes", True),
        "ecs": ("ecs", True), "cloud-run": ("cloud-run", True),
    }
    outcome = pipeline.deploy(pipeline.prepare(settings))
    outcome.raise_if_failed()

    k8s = _read(deploy_server, "upstream", "upstream-kubernetes")
    assert k8s["work_pool_name"] == "pools-e2e-k8s"
    assert {k: k8s["job_variables"][k] for k in ("image", "cpu_request", "cpu_limit", "memory_limit")} == {
        "image": "ghcr.io/acme/chain:1.0", "cpu_request": "1", "cpu_limit": "1",
        "memory_limit": "1Gi",
    }
    ecs = _read(deploy_server, "upstream", "upstream-ecs")["job_variables"]
    assert (ecs["cpu"], ecs["memory"]) == (1024, 1024)
    run = _read(deploy_server, "upstream", "upstream-cloud-run")["job_variables"]
    assert (run["cpu"], run["memory"]) == ("1000m", "1Gi")
    python = _read(deploy_server, "upstream", "upstream-python")
    assert python["concurrency_limit"] in (2, None)
    assert python["global_concurrency_limit"]["limit"] == 2
    assert python["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    downstream = _read(deploy_server, "downstream", "downstream")
    assert downstream["concurrency_options"]["collision_strategy"] == "ENQUEUE"  # the flow's own
    (schedule,) = downstream["schedules"]
    assert (schedule["slug"], schedule["parameters"], schedule["active"]) == (
        "morning", {"note": "early"}, False,
    )
    # A second deploy finds nothing to change: every type's body, the collision
    # strategies and the schedule's own parameters read back as written.
    again = pipeline.deploy(pipeline.prepare(settings))
    assert again.plan.counts["unchanged"] == 5, again.plan.changes
    # The project's deployments go again, with nothing of another project's touched.
    gone = pipeline.destroy(settings)
    assert gone.plan.counts["delete"] == 5


@pytest.mark.parametrize(
    ("extra", "files", "expected"),
    [
        pytest.param(
            "", {"templates/kubernetes_deployment.yaml": "job_variables:\n  mem_limt: 1g\n"},
            "job variable 'mem_limt' is not defined by the default job template of kubernetes",
            id="a job variable the kubernetes template does not define",
        ),
        pytest.param(
            "\n[development.resources.cloud-run]\ncpu = 0.5\n", {},
            "job_variables.cpu",
            id="half a CPU, which cloud run jobs cannot have",
        ),
    ],
)
def test_a_job_variable_the_pool_type_refuses_stops_the_deploy_before_any_write(
    tmp_path: Path, deploy_server: str, monkeypatch: pytest.MonkeyPatch,
    extra: str, files: dict[str, str], expected: str,
) -> None:
    image = '\n[development.flows.upstream]\nimage = "ghcr.io/acme/chain:1.0"\n'
    project = _project(tmp_path / "p", deploy_server, image + extra, name="pools-e2e-refused")
    for rel, text in files.items():
        (project / rel).write_text(text)
    settings = _settings(project, deploy_server, monkeypatch)

    with pytest.raises(ValidationFailed) as caught:
        pipeline.deploy(pipeline.prepare(settings, flow_names=["upstream"]))

    assert expected in str(caught.value)

    async def names() -> list[str]:
        async with PrefectApi(deploy_server) as api:
            return [d["name"] for d in await api.list_deployments(["project:pools-e2e-refused"])]

    assert asyncio.run(names()) == []  # nothing written, not even the valid ones


TRIGGER = """
[development.flows.downstream]
types = ["python"]

[[development.flows.downstream.triggers]]
name = "downstream-after-upstream"
expect = ["prefect.flow-run.Completed"]
match_related = {"prefect.resource.name" = "upstream", "prefect.resource.role" = "flow"}
parameters = {note = "triggered"}
"""


def test_a_trigger_runs_a_deployment_by_itself_after_its_upstream_completes(
    tmp_path: Path, deploy_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(
        tmp_path / "p", deploy_server,
        TRIGGER + '\n[development.flows.upstream]\ntypes = ["python"]\n',
        name="pools-e2e-triggers",
    )
    settings = _settings(project, deploy_server, monkeypatch)
    pipeline.pools(settings, create=True)
    outcome = pipeline.deploy(pipeline.prepare(settings))
    outcome.raise_if_failed()
    downstream = _read(deploy_server, "downstream", "downstream")

    async def owned() -> list[dict[str, Any]]:
        async with PrefectApi(deploy_server) as api:
            return await api.automations_owned_by(str(downstream["id"]))

    automations = asyncio.run(owned())
    assert [a["name"] for a in automations] == ["downstream-after-upstream"]
    assert automations[0]["actions"][0]["parameters"] == {"note": "triggered"}
    # Unchanged triggers plan nothing; a changed one is an update naming them.
    assert pipeline.deploy(pipeline.prepare(settings)).plan.counts["unchanged"] == 2

    scratch = tmp_path / "worker"
    env = {"PREFECT_HOME": str(scratch / "home")}
    url = pipeline.api_url(settings, start=False)

    upstream = _read(deploy_server, "upstream", "upstream")

    async def run_upstream_then_wait_for_downstream() -> dict[str, Any]:
        async with PrefectApi(deploy_server) as api:
            run = await api.create_flow_run(str(upstream["id"]))
            await api.wait_flow_run(str(run["id"]), 120)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = await api._post_json(
                    "flow_runs/filter",
                    {"flow_runs": {"deployment_id": {"any_": [str(downstream["id"])]}}},
                )
                done = [r for r in runs if (r.get("state") or {}).get("type") == "COMPLETED"]
                if done:
                    return dict(done[0])
                await asyncio.sleep(1)
            raise AssertionError("downstream never ran to Completed after upstream")

    with background_worker(settings, url, poll_seconds=1, env=env, log_path=scratch / "w.log"):
        finished = asyncio.run(run_upstream_then_wait_for_downstream())
    assert finished["parameters"] == {"note": "triggered"}

    # An automation edited on the server is drift, and the next deploy puts it back.
    async def edit() -> None:
        async with PrefectApi(deploy_server) as api:
            await api._request("PATCH", f"automations/{automations[0]['id']}", body={"enabled": False})

    asyncio.run(edit())
    drifted = pipeline.deploy(pipeline.prepare(settings))
    change = next(c for c in drifted.plan.changes if c.deployment == "downstream/downstream")
    assert change.action == "update" and "triggers" in change.drift
    assert asyncio.run(owned())[0]["enabled"] is True

    # Pruning the deployment removes its automations with it.
    text = (project / "settings.toml").read_text().replace(
        '[development.flows.downstream]\ntypes = ["python"]',
        '[development.flows.downstream]\nenabled = false\ntypes = ["python"]',
    )
    (project / "settings.toml").write_text(text)
    pruned = pipeline.deploy(pipeline.prepare(load_settings("development", project)), prune=True)
    pruned.raise_if_failed()
    assert asyncio.run(owned()) == []
