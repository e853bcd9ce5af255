"""Spec → DAGs: the same skeleton for every integration and flow kind, one DAG per flow schedule.

``plan`` decides which accounts run (and for which window) and spreads them over shards; ``run``,
mapped over the shards, runs each shard's accounts concurrently (``fetch → map → upsert → deliver``
per account, in threads), so thousands of accounts need a handful of task instances; a manual run
that names accounts maps one instance per account, labelled with its name. ``report`` summarises the
run from the activity log and fails the run if any account failed, so alerting fires — one e-mail per
run naming every failed account (``plan`` and ``report`` e-mail the owners; ``run`` leaves it to
``report``). No I/O at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param
from airflow.timetables.trigger import CronTriggerTimetable

from tillflow.notify import FailureEmail
from tillflow.operators import LABEL_TEMPLATE, PlanOperator, ReportOperator, RunAccountsOperator
from tillflow.specs import IntegrationSpec, load_spec

PARAMS = {
    "accounts": Param(
        [],
        type="array",
        items={"type": "string"},
        description="Account keys to run; empty = every active account that is due.",
    ),
    "date_from": Param(
        None,
        type=["null", "string"],
        format="date",
        description="First business date to sync (YYYY-MM-DD); empty = the account's lookback.",
    ),
    "date_to": Param(
        None, type=["null", "string"], format="date", description="Last business date to sync; empty = date_from."
    ),
    "overwrite": Param(
        None,
        type=["null", "boolean"],
        description="true: overwrite existing values and re-send the window; false: keep any "
        "existing value; empty: each account's own write mode.",
    ),
}


def build_dags(spec_or_path: IntegrationSpec | str | Path, *, doc_md: str | None = None) -> dict[str, DAG]:
    """All DAGs of one integration (one per flow schedule), by DAG id, from its spec (YAML path or parsed)."""
    spec = spec_or_path if isinstance(spec_or_path, IntegrationSpec) else load_spec(spec_or_path)
    return {dag_id: _build(spec, dag_id, flows, doc_md) for dag_id, flows in spec.dags().items()}


def build_dag(
    spec_or_path: IntegrationSpec | str | Path, *, dag_id: str | None = None, doc_md: str | None = None
) -> DAG:
    """One DAG of an integration: the only one, or the one named ``dag_id``."""
    dags = build_dags(spec_or_path, doc_md=doc_md)
    if dag_id is None:
        if len(dags) != 1:
            raise ValueError(f"the spec yields {len(dags)} DAGs ({', '.join(dags)}): name one")
        return next(iter(dags.values()))
    return dags[dag_id]


def _build(spec: IntegrationSpec, dag_id: str, flows: list, doc_md: str | None) -> DAG:
    tz = pendulum.timezone(spec.timezone)
    alert = [FailureEmail(to=list(spec.owners))]
    default_args = {
        "owner": "tillflow",
        "retries": spec.retries,
        "retry_delay": timedelta(seconds=spec.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=spec.execution_timeout_minutes),
        "on_failure_callback": alert,
    }
    with DAG(
        dag_id=dag_id,
        description=f"{spec.description} ({', '.join(f'{f.name}: {f.kind}' for f in flows)})",
        doc_md=doc_md,
        schedule=CronTriggerTimetable(flows[0].schedule, timezone=tz),
        start_date=datetime.combine(spec.start_date, datetime.min.time(), tzinfo=tz),
        catchup=False,
        max_active_runs=1,
        tags=spec.tags_for(flows),
        default_args=default_args,
        params=PARAMS,
        render_template_as_native_obj=True,
    ) as dag:
        plan = PlanOperator(task_id="plan", spec=spec, flows=[f.name for f in flows])
        # one e-mail per run: a shard's failure is reported by ``report``, naming every failed account
        run = RunAccountsOperator.partial(
            task_id="run", spec=spec, on_failure_callback=[], map_index_template=LABEL_TEMPLATE
        ).expand(shard=plan.output)
        run >> ReportOperator(task_id="report", spec=spec)
    return dag
