"""Defaults that are literals as Python sees them, and one that is not."""

from datetime import datetime
from enum import Enum

from prefect import flow

DEFAULT_URL = "https://example.com/api"
TIMEOUT = 60 * 60
BASE = "data"


class Mode(Enum):
    FAST = "fast"
    SAFE = "safe"


class Limits:
    ROWS = 1_000
    NAME = "limits"


@flow(description=BASE + " loader")
def fetch(url: str = DEFAULT_URL, timeout: int = TIMEOUT, path: str = BASE + "/in",
          mode: str = Mode.SAFE.value, rows: int = Limits.ROWS, ratio: float = 1 / 4,
          label: str = f"{BASE}-{TIMEOUT}", since: datetime = datetime.today()) -> None:
    pass
