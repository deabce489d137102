"""A flow whose parameters are pydantic models.

Its parameter schema holds the models' definitions, read from this source, so the
server checks each value before a run starts: a run with an order whose quantity is
not a whole number is refused, not failed later on the worker.
"""

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field


class Item(BaseModel):
    """One line of an order."""

    sku: str = Field(description="stock keeping unit", min_length=1)
    quantity: int = Field(1, ge=1)
    price: float = 0.0


class Order(BaseModel):
    """One customer order."""

    id: int
    channel: Literal["web", "store"] = "web"
    items: list[Item] = []


@flow(name="order-totals", log_prints=True)
def order_totals(orders: list[Order] = [], currency: Literal["EUR", "USD"] = "EUR") -> float:  # noqa: B006
    """Add up the orders.

    Args:
        orders: the orders to total
        currency: what the prices are in
    """
    total = sum(item.quantity * item.price for order in orders for item in order.items)
    print(f"{len(orders)} order(s): {total:.2f} {currency}")
    return total
