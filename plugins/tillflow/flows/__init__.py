"""Flow kinds: one module per kind of data (revenue, clock times, ledger, orders, products, stock).

A kind declares its record model, canonical table and key, how its window is chosen, its mapping kinds
and their gate, its settings and its delivery strategy (:class:`tillflow.flows.base.FlowKind`). A spec
names a kind per flow; the factory and the operators never change for a new kind. Registered here by
name and imported lazily (DAG parsing stays cheap).
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

_REGISTRY = {
    "revenue": "tillflow.flows.revenue:DailyRevenue",
    "revenue_hourly": "tillflow.flows.revenue:HourlyRevenue",
    "clock_times": "tillflow.flows.clock_times:ClockTimes",
    "ledger": "tillflow.flows.ledger:Ledger",
    "orders": "tillflow.flows.orders:Orders",
    "products": "tillflow.flows.products:Products",
    "stock": "tillflow.flows.stock:Stock",
}


def kind_names() -> list[str]:
    return sorted(_REGISTRY)


@cache
def get_kind(name: str):
    """The flow kind registered under ``name`` (an instance; kinds hold no state)."""
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown flow kind {name!r}; known: {', '.join(kind_names())}") from None
    return getattr(import_module(module), cls)()
