"""A synchronous flow whose parameters cover the common annotation shapes.

Besides greeting, it serves as the reference for comparing the parameter schema that
deploy_lib derives from source with the one Prefect derives by importing the flow.
"""

from datetime import date, datetime
from typing import Literal, Optional

from prefect import flow, get_run_logger, task


@task
def make_greeting(greeting: str, name: str, nickname: str | None, shout: bool) -> str:
    text = f"{greeting}, {nickname or name}!"
    return text.upper() if shout else text


@flow(name="hello", log_prints=True)
def hello(
    name: str = "world",
    times: int = 1,
    ratio: float = 0.5,
    shout: bool = False,
    nickname: Optional[str] = None,  # noqa: UP045 - both spellings of optional, on purpose
    mood: Literal["happy", "calm", "grumpy"] = "happy",
    tags: list[str] = ["demo"],  # noqa: B006 - Prefect validates parameters into new objects
    scores: dict[str, int] = {"alice": 1},  # noqa: B006 - same; the default shows in the UI
    since: date | None = None,
    until: Optional[datetime] = None,  # noqa: UP045
    *,
    greeting: str = "Hello",
) -> str:
    """Say hello a few times and report the parameters it was given.

    The whole docstring is the deployment's description, as Prefect sends it.
    """
    logger = get_run_logger()
    message = make_greeting(greeting, name, nickname, shout)
    for _ in range(max(times, 0)):
        print(message)
    logger.info(
        "mood=%s ratio=%s tags=%s scores=%s since=%s until=%s",
        mood,
        ratio,
        tags,
        scores,
        since,
        until,
    )
    return message


if __name__ == "__main__":
    hello()
