"""A flow with another decorator, which may change its signature."""

import functools

from prefect import flow


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@flow
@logged
def audited(rows: int = 5) -> int:
    return rows
