"""Example Prefect flows; `invoke discover` lists them without importing any of them."""
