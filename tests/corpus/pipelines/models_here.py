"""Pydantic models defined in the flow's own file."""

from datetime import date
from typing import Annotated, Literal

from prefect import flow
from pydantic import BaseModel, Field


class Address(BaseModel):
    street: str
    city: str = "Berlin"
    code: Annotated[str, Field(min_length=2, description="postal code")] = "10115"
    floors: list[Annotated[int, Field(ge=0)]] = []


class Record(BaseModel):
    """One customer record."""

    id: int
    kind: Literal["person", "company"] = "person"
    joined: date | None = None
    address: Address | None = None
    score: float = Field(default=0.5, description="how good the record is", ge=0, le=1)
    tags: list[str] = []


@flow
def load_records(data: list[Record], limit: int = 10) -> int:
    """Load customer records."""
    return len(data[:limit])


@flow
def one_record(record: Record, address: Address = Address(street="Main St")) -> int:
    return record.id
