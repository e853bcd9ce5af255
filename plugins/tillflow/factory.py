"""Spec → DAG: the same skeleton for every integration.

``plan`` decides which accounts run (and for which window); a task group mapped over its output runs
``fetch → map → upsert → deliver`` once per account, so a failure points at one customer and retries
only its work, and one account's failure never stops the others; ``report`` summarises the run from
the activity log and fails the run if any account failed, so alerting fires. Every task e-mails the
integration's owners when it fails. No I/O at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task_group
from airflow.timetables.trigger import CronTriggerTimetable

from tillflow.notify import FailureEmail
from tillflow.operators import DeliverOperator, FetchOperator, MapOperator, PlanOperator, ReportOperator, UpsertOperator
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


def build_dag(spec_or_path: IntegrationSpec | str | Path, *, doc_md: str | None = None) -> DAG:
    """Build the DAG of one integration from its spec (a path to the YAML, or a parsed spec)."""
    spec = spec_or_path if isinstance(spec_or_path, IntegrationSpec) else load_spec(spec_or_path)
    tz = pendulum.timezone(spec.timezone)
    default_args = {
        "owner": "tillflow",
        "retries": spec.retries,
        "retry_delay": timedelta(seconds=spec.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=spec.execution_timeout_minutes),
        "on_failure_callback": [FailureEmail(to=list(spec.owners))],
    }
    with DAG(
        dag_id=spec.dag_id,
        description=spec.description,
        doc_md=doc_md,
        schedule=CronTriggerTimetable(spec.schedule, timezone=tz),
        start_date=datetime.combine(spec.start_date, datetime.min.time(), tzinfo=tz),
        catchup=False,
        max_active_runs=1,
        tags=spec.all_tags,
        default_args=default_args,
        params=PARAMS,
        render_template_as_native_obj=True,
    ) as dag:
        plan = PlanOperator(task_id="plan", spec=spec)

        @task_group(group_id="account")
        def account(item):
            fetch = FetchOperator(
                task_id="fetch", spec=spec, item=item, max_active_tis_per_dagrun=spec.max_active_tis_per_dagrun
            )
            mapped = MapOperator(task_id="map", spec=spec, item=item, upstream=fetch.output)
            upserted = UpsertOperator(task_id="upsert", spec=spec, item=item, upstream=mapped.output)
            DeliverOperator(
                task_id="deliver",
                spec=spec,
                item=item,
                upstream=upserted.output,
                max_active_tis_per_dagrun=spec.max_active_tis_per_dagrun,
            )

        accounts = account.expand(item=plan.output)
        accounts >> ReportOperator(task_id="report", spec=spec)
    return dag
