"""One run of a spec's flows in the test process — the DAG's ``plan`` and ``run`` tasks without Airflow:
plan the run (its work list in the store), then run each shard's accounts on threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from tillflow.sources.base import ConnectionInfo
from tillflow.specs import FlowSpec, IntegrationSpec
from tillflow.sync import RunParams, RunPlan, plan_run, run_shard, set_run_mode


def run_flows(
    store: Any,
    spec: IntegrationSpec,
    conns: dict[str, ConnectionInfo] | Callable[[str], ConnectionInfo],
    *,
    run_id: str,
    flows: Iterable[str | FlowSpec] | None = None,
    params: RunParams | None = None,
    at: datetime | None = None,
    manual: bool = True,
    backfill: bool = False,
    dag_id: str | None = None,
    threads: int | None = 2,
) -> tuple[RunPlan, list[Any]]:
    """Plan a run of ``flows`` (names or specs; default every flow of ``spec``) at ``at`` (default now) and run
    every shard; returns the plan and the outcomes of all shards, in shard order."""
    chosen = [spec.flow(f) if isinstance(f, str) else f for f in (spec.flows if flows is None else flows)]
    params = params or RunParams()
    dag_id = dag_id or spec.integration
    planned = plan_run(
        store,
        spec,
        chosen,
        dag_id=dag_id,
        run_id=run_id,
        logical_date=at or datetime.now(UTC),
        params=params,
        manual=manual,
        backfill=backfill,
    )
    set_run_mode(run_id, params)
    lookup = conns.__getitem__ if isinstance(conns, dict) else conns
    outcomes: list[Any] = []
    for shard in planned.shards:
        outcomes += run_shard(
            spec, dag_id=dag_id, run_id=run_id, shard=shard["shard"], conns=lookup, threads=threads
        ).outcomes
    return planned, outcomes
