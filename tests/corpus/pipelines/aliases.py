"""Type aliases and aliased imports in annotations."""

import typing as t
from datetime import datetime as dt
from datetime import timedelta
from typing import Literal, Optional

from prefect import flow

Currency = Literal["USD", "EUR"]
Amounts = dict[str, float]
MaybeCurrency = Optional[Currency]
Window = t.Union[timedelta, int]


@flow
def convert(start: dt, currency: Currency = "USD", amounts: Amounts = {},
            target: MaybeCurrency = None, window: Window = 60, labels: t.List[str] = []) -> None:
    pass
