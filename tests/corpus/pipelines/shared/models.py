"""Models the flows of this project share."""

from __future__ import annotations

from enum import Enum
from typing import Literal, Optional

from pydantic import BaseModel, Field

from .units import Unit


class Priority(str, Enum):
    """How urgent a job is."""

    LOW = "low"
    HIGH = "high"


class Target(BaseModel):
    """Where the output goes."""

    bucket: str
    prefix: str = Field(default="out/", description="key prefix in the bucket")
    unit: Unit = Unit.ROWS


class PipelineConfig(BaseModel):
    """The whole configuration of one pipeline run."""

    name: str = Field(..., title="Pipeline name", min_length=1)
    mode: Literal["full", "incremental"] = "incremental"
    priority: Priority = Priority.LOW
    targets: list[Target] = Field(default_factory=list)
    backup: Optional[Target] = None
    retries: int = Field(3, ge=0, le=10)
