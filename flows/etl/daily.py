"""Daily ETL: extract, transform, load, with helpers imported relatively.

Runs from either entrypoint form with the project root as the working directory:
``flows/etl/daily.py:daily_etl`` (Prefect loads the file as a package rooted in its
folder, so ``from .helpers`` resolves) and ``flows.etl.daily:daily_etl``.
"""

from datetime import date

from prefect import flow, get_run_logger, task

from .helpers import make_rows, summarize


@task
def extract(day: date, count: int) -> list[dict[str, object]]:
    return make_rows(day, count)


@task
def transform(rows: list[dict[str, object]], multiplier: int) -> list[dict[str, object]]:
    return [{**row, "value": int(str(row["value"])) * multiplier} for row in rows]


@task
def load(rows: list[dict[str, object]]) -> dict[str, object]:
    return summarize(rows)


@flow
def daily_etl(day: str | None = None, rows: int = 5, multiplier: int = 2) -> dict[str, object]:
    """Extract a day's rows, scale their values and report the totals."""
    logger = get_run_logger()
    when = date.fromisoformat(day) if day else date.today()
    summary = load(transform(extract(when, rows), multiplier))
    logger.info("daily ETL for %s: %s", when.isoformat(), summary)
    return {"day": when.isoformat(), **summary}
