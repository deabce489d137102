"""Names that are literals as Python sees them."""

from prefect import flow

PREFIX = "bond"
SUFFIX = "daily"


@flow(name=f"Bond Reporting Data Scripts")  # an f-string without placeholders
def bond_reporting() -> None:
    pass


@flow(name=PREFIX + "-" + SUFFIX, description=f"{PREFIX} figures, every {24 * 60} minutes")
def bond_daily() -> None:
    pass
