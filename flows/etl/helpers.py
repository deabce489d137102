"""Plain helper functions for the daily ETL (no Prefect objects here)."""

from datetime import date


def make_rows(day: date, count: int) -> list[dict[str, object]]:
    """Fake source rows for ``day``: one per id, with a value derived from it."""
    return [{"id": i, "day": day.isoformat(), "value": (i * 7) % 10} for i in range(count)]


def summarize(rows: list[dict[str, object]]) -> dict[str, object]:
    """Row count and the sum of the values."""
    total = sum(int(str(row["value"])) for row in rows)
    return {"rows": len(rows), "total": total}
