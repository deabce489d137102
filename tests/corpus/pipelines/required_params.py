"""Parameters without a default: every run passes them."""

from prefect import flow


@flow
def load_table(source: str, rows: int, dry_run: bool = False) -> int:
    """Load rows from a source.

    Args:
        source: where the rows come from
        rows: how many to load
    """
    return rows
