"""An asynchronous flow: gathers a few async tasks concurrently and sums them up."""

import asyncio

from prefect import flow, get_run_logger, task


@task
async def measure(source: str, delay: float) -> dict[str, object]:
    await asyncio.sleep(delay)
    return {"source": source, "size": len(source) * 10}


@flow(description="Measure several sources concurrently and report the total size.")
async def async_report(sources: list[str] | None = None, delay: float = 0.01) -> dict[str, object]:
    logger = get_run_logger()
    names = sources or ["alpha", "beta", "gamma"]
    results = await asyncio.gather(*(measure(name, delay) for name in names))
    total = sum(int(str(r["size"])) for r in results)
    logger.info("measured %d sources, total size %d", len(results), total)
    return {"sources": names, "total": total}


if __name__ == "__main__":
    asyncio.run(async_report())
