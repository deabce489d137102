"""One flow name in two files: report (here, for sales)."""

from prefect import flow


@flow(name="report")
def sales_report(region: str = "north") -> str:
    """Report sales by region."""
    return region
