"""A flow that needs a package only its own requirements.txt provides (tabulate).

The import happens inside the task, at run time, so that the module itself imports
anywhere; the run succeeds only where requirements.txt was installed (the image built
from the Dockerfile beside this file, or a worker with a pip_install_requirements step).
"""

from prefect import flow, get_run_logger, task


@task
def render_table(rows: list[list[object]], headers: list[str]) -> str:
    from tabulate import tabulate

    return str(tabulate(rows, headers=headers, tablefmt="github"))


@flow(name="table-report", description="Render a small table with a third-party package.")
def table_report(rows: int = 3) -> str:
    logger = get_run_logger()
    data: list[list[object]] = [[i, f"item-{i}", i * i] for i in range(rows)]
    table = render_table(data, ["id", "name", "square"])
    logger.info("rendered table:\n%s", table)
    return table
