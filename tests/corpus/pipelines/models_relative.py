"""Models imported from a module of the project (relative import)."""

from prefect import flow

from .shared import models
from .shared.models import Target as Destination


@flow
def export(config: models.PipelineConfig, to: Destination | None = None) -> str:
    return "ok"
