"""migrate: a prefect.yaml's deployments -> per-flow settings, what Prefect's own shape
carries (triggers, a collision strategy, a schedule's own parameters) included."""

from __future__ import annotations

import sys

from deploy_lib.migrate import migrate
from deploy_lib.models import FlowMetadata

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HELLO = FlowMetadata(name="hello", function="hello", path="flows/hello.py")


def test_triggers_collision_strategy_and_schedule_parameters_are_carried_over() -> None:
    deployment = {
        "name": "hello-prod",
        "entrypoint": "flows/hello.py:hello",
        "concurrency_limit": {"limit": 3, "collision_strategy": "cancel_new"},
        "schedules": [{"cron": "0 6 * * *", "slug": "morning", "parameters": {"name": "early"}}],
        "triggers": [
            {"expect": ["prefect.flow-run.Completed"],
             "match_related": {"prefect.resource.name": "etl"}},
        ],
    }

    result = migrate([deployment], lambda entrypoint: HELLO)

    table = result.tables["hello"]
    assert table["concurrency_limit"] == 3
    assert table["collision_strategy"] == "CANCEL_NEW"
    assert table["schedules"] == [
        {"cron": "0 6 * * *", "parameters": {"name": "early"}, "slug": "morning"}
    ]
    assert table["triggers"] == deployment["triggers"]
    assert result.notes == ()
    # The TOML written into settings.toml reads back as the same tables.
    written = tomllib.loads(result.toml())
    assert written["default"]["flows"]["hello"]["triggers"] == deployment["triggers"]
