"""One flow name in two files: report (here, for stock)."""

from prefect import flow


@flow(name="report")
def stock_report(warehouse: str = "main") -> str:
    return warehouse
