"""Dataclasses and TypedDicts as parameters."""

import dataclasses
from dataclasses import dataclass, field

from prefect import flow
from typing_extensions import NotRequired, TypedDict


@dataclass
class Window:
    start: int
    end: int = 10
    names: list[str] = field(default_factory=list)


@dataclasses.dataclass
class Point:
    """A point."""

    x: float
    y: float = 0.0


class Options(TypedDict):
    verbose: bool
    level: NotRequired[int]


class Partial(TypedDict, total=False):
    """Anything goes."""

    a: str


@flow
def shapes(window: Window, point: Point | None = None, options: Options | None = None,
           partial: Partial = {}) -> None:
    pass
