r"""deploy_lib: a repository of Prefect flows -> Prefect deployments, per environment.

The house.  ``pipeline`` is the only module that puts the program together; every
other module is a leaf that imports only ``models`` and ``errors`` (and the one outside
library it owns), so a change to one stage touches one file::

    tasks.py (Invoke)   creators.py (Python API)          entry points: one pipeline
           \                 /                              call each, output via report
            v               v
        pipeline ............................................ the wiring, the event loop,
         |                                                    the lock, the one API client
         |  prepare:  settings -> discovery -> build -> templates -> validate
         |  deploy:   lock -> [docker] -> validate (pools) -> plan -> apply -> report
         v
    settings    settings.toml, .secrets.toml, DEPLOY_* and .env files -> Settings (Dynaconf)
    discovery   flow files read with ast, never imported -> Discovery of FlowMetadata;
                a flow with a problem is named and left out; a cache per file content
      pysource  its helper: literals folded as Python computes them, names followed
                through the project's imports to the models, enums, dataclasses and
                TypedDicts a parameter's annotation names
    parameters  a flow's signature -> its parameter JSON schema, as Prefect writes it
    build       flows + settings -> one BuildContext (the whole body) per flow and type
      pools     its helper (and validate's): each work pool type's job template, the
                one resources vocabulary mapped onto it
    templates   templates/*.yaml overlaid on the built bodies -> DeploymentSpec; files
    validate    the strict Cerberus schema (schema.py, derived from each job template),
                cross checks, triggers by Prefect's models, pool checks
    plan        desired specs vs live deployments -> Plan of create/update/delete, with
                triggers' automations and Secret blocks
    apply       a Plan -> writes through the API, adaptive concurrency -> ApplyResult
    api         the Prefect REST API over httpx: the only module on the network
    server      the embedded local Prefect server (SQLite, or its own PostgreSQL
                cluster) and worker processes
    runs        run a deployment and wait for its final state
    docker      docker build / tag / push through the docker CLI
    lock        one flock per environment
    migrate     an existing prefect.yaml -> the per-flow settings that reproduce it
    gitinfo     commit, branch, dirty
    report      everything shown: tables, JSON, progress, Output (stdout, log, masking)
    models      the values the stages hand each other, and the Masker of secrets
    errors      every deliberate error and the exit code it means

A new setting goes into ``settings`` (its rule) and ``build`` (where it lands in the
body); a new body field into ``build`` and ``validate``'s schema; a new command into
``pipeline`` (the use case), ``report`` (how it looks) and ``tasks.py`` (the flags).

The names below are imported on first use (PEP 562), so ``import deploy_lib`` stays
cheap; the tasks import ``pipeline`` and ``report`` when they run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy_lib.creators import (
        ConfigurationManager,
        DockerDeploymentCreator,
        PythonDeploymentCreator,
        deploy_flows,
    )
    from deploy_lib.discovery import Discovery, discover_flows
    from deploy_lib.errors import DeployError, InputError, PartialFailure, ValidationFailed
    from deploy_lib.models import (
        ApplyResult,
        DeploymentSpec,
        FlowMetadata,
        Parameter,
        Problem,
        Result,
        Settings,
    )
    from deploy_lib.pipeline import DeployOutcome, Prepared, build_specs, deploy, prepare, run_flow
    from deploy_lib.settings import load_settings
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
    "build_specs": "deploy_lib.pipeline",
    "validate_specs": "deploy_lib.validate",
    "prepare": "deploy_lib.pipeline",
    "Prepared": "deploy_lib.pipeline",
    "deploy": "deploy_lib.pipeline",
    "DeployOutcome": "deploy_lib.pipeline",
    "run_flow": "deploy_lib.pipeline",
    "ApplyResult": "deploy_lib.models",
    "Result": "deploy_lib.models",
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
