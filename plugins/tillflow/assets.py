"""Airflow Assets of tillflow: one per integration and flow, ``tillflow://<integration>/<flow>``.

The ``run`` task of every generated DAG declares the assets of its flows as outlets. Airflow records an
event for each outlet of a task that succeeds; tillflow attaches what moved to it — ``extra``: integration,
flow, the accounts that landed or delivered rows, the counts and the business days they span
(``window_start``/``window_end``) — and emits an event only for a flow that
landed (upserted into the canonical tables) or delivered something in that task instance. Airflow has no
switch to leave out one outlet's event of a successful task, so a flow that moved nothing is dropped from
the outlets of that task instance's own copy of the operator (the DAG's declared outlets do not change).
A failed ``run`` task emits nothing (Airflow emits on success only); its accounts' next run does.

Scheduling on them (another DAG, e.g. ``tillflow_reconcile``)::

    from tillflow.assets import flow_asset
    schedule = flow_asset("kashclick_to_pennylane", "ledger")            # on each ledger delivery
    schedule = AssetOrTimeSchedule(timetable=CronTriggerTimetable(...), assets=flow_asset(...) | flow_asset(...))

A run triggered by assets gets them in ``context["triggering_asset_events"]``; each event's ``extra`` names
the accounts, so the consumer can limit itself to those.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow.sdk import Asset

SCHEME = "tillflow"
#: activity counters that mean data landed (canonical tables changed) or was delivered to the target
MOVED = ("upserted", "delivered", "reconciled")


def flow_asset(integration: str, flow: str) -> Asset:
    """The asset of one integration's flow: what lands in tillflow's canonical tables and at the target."""
    return Asset(uri=f"{SCHEME}://{integration}/{flow}", name=f"tillflow.{integration}.{flow}", group="tillflow")


def flow_assets(spec: Any, flows: Iterable[Any] | None = None) -> list[Asset]:
    """The assets of an integration's flows (all, or the ones given: the flows of one DAG)."""
    return [flow_asset(spec.integration, f.name) for f in (spec.flows if flows is None else flows)]


def outlet_extras(spec: Any, outcomes: Iterable[Any], *, run_id: str = "") -> dict[str, dict[str, Any]]:
    """Per asset URI, the ``extra`` of its event — only for flows whose accounts landed or delivered rows.

    ``outcomes``: :class:`tillflow.sync.Outcome` of one shard (each with its item's account and flow, and the
    counts of its steps).
    """
    per_flow: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        if outcome.status != "success":
            continue
        counts = outcome.counts or {}
        moved = sum(int(counts.get(k) or 0) for k in MOVED)
        if moved <= 0:
            continue
        flow = outcome.item.flow
        extra = per_flow.setdefault(
            flow,
            {"integration": spec.integration, "flow": flow, "run_id": run_id, "accounts": [], "rows": 0}
            | {k: 0 for k in MOVED},
        )
        extra["accounts"].append(outcome.item.account_key)
        extra["rows"] += moved
        start, end = outcome.item.window_start.isoformat(), outcome.item.window_end.isoformat()
        extra["window_start"] = min(extra.get("window_start") or start, start)
        extra["window_end"] = max(extra.get("window_end") or end, end)
        for k in MOVED:
            extra[k] += int(counts.get(k) or 0)
    return {flow_asset(spec.integration, flow).uri: extra for flow, extra in per_flow.items()}
