"""Enum parameters: plain, str-mixed, int and auto values."""

import enum
from enum import Enum, IntEnum, auto

from prefect import flow


class Color(Enum):
    """A colour."""

    RED = "red"
    GREEN = "green"


class Size(str, enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Step(Enum):
    FIRST = auto()
    SECOND = auto()


@flow
def paint(color: Color = Color.RED, size: Size = Size.SMALL, level: Level = Level.HIGH,
          step: Step | None = None) -> str:
    return color.value
