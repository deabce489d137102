"""Models imported from a module of the project (absolute import)."""

from prefect import flow

from pipelines.shared.models import PipelineConfig, Priority, Target


@flow
def run_pipeline(config: PipelineConfig | None = None, priority: Priority = Priority.HIGH,
                 extra_targets: list[Target] = []) -> str:
    return "ok"
