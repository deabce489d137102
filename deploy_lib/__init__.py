"""deploy_lib: a repository of Prefect flows -> Prefect deployments, per environment.

The pipeline, one function per stage (each output feeds the next)::

    load_settings(env, root) -> Settings           settings.toml, .secrets.toml, DEPLOY_*
    discover_flows(root, roots) -> Discovery       flows read from source, never imported
    build_specs(flows, settings, git=, now=)       deployment dicts, rendered through templates/
    validate_specs(specs, flows) -> [Problem]      the strict schema and cross checks
    prepare(settings) -> Prepared                  the four above, raising on bad input
    deploy(prepared) -> DeployOutcome              check pools, plan, write what changed

and the Python API over it (``deploy_lib.creators``): ``ConfigurationManager``,
``PythonDeploymentCreator``, ``DockerDeploymentCreator`` and ``deploy_flows``.

Every name here is imported on first use (PEP 562), so ``import deploy_lib`` stays
cheap for the tasks, which import the submodules they need directly.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy_lib.apply import ApplyResult, Result
    from deploy_lib.creators import (
        ConfigurationManager,
        DockerDeploymentCreator,
        PythonDeploymentCreator,
        deploy_flows,
    )
    from deploy_lib.discovery import Discovery, discover_flows
    from deploy_lib.errors import DeployError, InputError, PartialFailure, ValidationFailed
    from deploy_lib.models import DeploymentSpec, FlowMetadata, Parameter, Problem, Settings
    from deploy_lib.pipeline import DeployOutcome, Prepared, deploy, prepare, run_flow
    from deploy_lib.settings import load_settings
    from deploy_lib.templates import build_specs
    from deploy_lib.validate import validate_specs

# Public name -> the module that defines it.
_EXPORTS = {
    # shared values
    "FlowMetadata": "deploy_lib.models",
    "Parameter": "deploy_lib.models",
    "Settings": "deploy_lib.models",
    "Problem": "deploy_lib.models",
    "DeploymentSpec": "deploy_lib.models",
    # errors
    "DeployError": "deploy_lib.errors",
    "InputError": "deploy_lib.errors",
    "ValidationFailed": "deploy_lib.errors",
    "PartialFailure": "deploy_lib.errors",
    # the pipeline, stage by stage
    "load_settings": "deploy_lib.settings",
    "discover_flows": "deploy_lib.discovery",
    "Discovery": "deploy_lib.discovery",
    "build_specs": "deploy_lib.templates",
    "validate_specs": "deploy_lib.validate",
    "prepare": "deploy_lib.pipeline",
    "Prepared": "deploy_lib.pipeline",
    "deploy": "deploy_lib.pipeline",
    "DeployOutcome": "deploy_lib.pipeline",
    "run_flow": "deploy_lib.pipeline",
    "ApplyResult": "deploy_lib.apply",
    "Result": "deploy_lib.apply",
    # the Python API
    "ConfigurationManager": "deploy_lib.creators",
    "PythonDeploymentCreator": "deploy_lib.creators",
    "DockerDeploymentCreator": "deploy_lib.creators",
    "deploy_flows": "deploy_lib.creators",
}

__all__ = [
    "ApplyResult",
    "ConfigurationManager",
    "DeployError",
    "DeployOutcome",
    "DeploymentSpec",
    "Discovery",
    "DockerDeploymentCreator",
    "FlowMetadata",
    "InputError",
    "Parameter",
    "PartialFailure",
    "Prepared",
    "Problem",
    "PythonDeploymentCreator",
    "Result",
    "Settings",
    "ValidationFailed",
    "build_specs",
    "deploy",
    "deploy_flows",
    "discover_flows",
    "load_settings",
    "prepare",
    "run_flow",
    "validate_specs",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
