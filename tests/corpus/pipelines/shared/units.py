from enum import IntEnum, auto


class Unit(IntEnum):
    ROWS = auto()
    BYTES = auto()
