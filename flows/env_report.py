"""Report what a flow run received: its environment parameters and variables.

Deployments pass ``cleanup``, ``use_distributed`` and ``debug`` per environment and set
environment variables on the job; this flow returns them (and logs them) so tests and
people can see what actually arrived inside the run. When ``DEPLOY_REPORT_DIR`` is set,
the same report is written there as ``<flow_run_id>.json``.
"""

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import deployment, flow_run

REPORTED_VARS = (
    "PYTHONPATH",
    "PREFECT_LOGGING_LEVEL",
    "PREFECT_FLOWS_DEFAULT_RETRIES",
    "PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
    "DEPLOY_ENV_NAME",
)


@flow(name="env-report")
def env_report(
    cleanup: bool = False,
    use_distributed: bool = False,
    debug: bool = False,
    extra_vars: list[str] | None = None,
) -> dict[str, Any]:
    """Log and return the environment parameters and variables this run received."""
    logger = get_run_logger()
    names = list(dict.fromkeys([*REPORTED_VARS, *(extra_vars or [])]))
    run_id = flow_run.id
    report: dict[str, Any] = {
        "flow_run_id": run_id,
        "flow_run_name": flow_run.name,
        "deployment_id": deployment.id,
        "deployment_name": deployment.name,
        "parameters": {
            "cleanup": cleanup,
            "use_distributed": use_distributed,
            "debug": debug,
            "extra_vars": list(extra_vars or []),
        },
        "env": {name: os.environ.get(name) for name in names},
        "cwd": os.getcwd(),
    }
    logger.info("environment report: %s", json.dumps(report, sort_keys=True))
    out_dir = os.environ.get("DEPLOY_REPORT_DIR")
    if out_dir:
        target = Path(out_dir) / f"{run_id or 'env-report'}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
        partial.replace(target)
        logger.info("wrote %s", target)
    return report
