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

from tillflow.assets import flow_assets
from tillflow.notify import FailureEmail
from tillflow.operators import LABEL_TEMPLATE, PlanOperator, ReportOperator, RunAccountsOperator
from tillflow.pools import pool_for
from tillflow.specs import IntegrationSpec, load_spec

#: the trigger form's choices for ``overwrite`` (RunParams.from_params also takes the old true/false/null)
OVERWRITE_DISPLAY = {
    "account_default": "account default (each account's write mode)",
    "overwrite": "overwrite (replace existing values, re-send the window)",
    "keep_existing": "keep existing (add missing values only)",
}

# The trigger form (Airflow 3.3): a field whose JSON-schema type does not include "null" is marked required,
# so every optional field allows null. Each Param is checked against its schema when the run is created (a
# bad date is refused before the run exists); that date_to is not before date_from spans two fields, which a
# per-Param schema cannot express: RunParams.from_params refuses it in the plan task, before any account runs.
PARAMS = {
    "accounts": Param(
        None,
        type=["null", "array"],
        items={"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        title="Accounts",
        description="Account keys to run; empty = every active account (scheduled: every account that is due).",
    ),
    "date_from": Param(
        None,
        type=["null", "string"],
        format="date",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        title="Date from",
        description="First business date to sync (YYYY-MM-DD); empty = each account's own window.",
    ),
    "date_to": Param(
        None,
        type=["null", "string"],
        format="date",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        title="Date to",
        description="Last business date to sync, on or after date_from (YYYY-MM-DD); empty = date_from.",
    ),
    "overwrite": Param(
        "account_default",
        type="string",
        enum=list(OVERWRITE_DISPLAY),
        values_display=OVERWRITE_DISPLAY,
        title="Existing values",
        description="account default: each account's write mode; overwrite: replace existing values and re-send "
        "the window; keep existing: keep any value the store or the target already holds.",
    ),
    "replay": Param(
        False,
        type="boolean",
        title="Replay from raw landing",
        description="Map the pages already landed for the dates again (after a mapping change) and deliver; "
        "the POS is not called. Not for snapshot flows (products, stock).",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Dry run (preview the replay)",
        description="Show per account, key and day what the target holds now and what a replay would send "
        "(in the run task's log and XCom); nothing is written or sent.",
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
            task_id="run",
            spec=spec,
            on_failure_callback=[],
            map_index_template=LABEL_TEMPLATE,
            pool=pool_for(spec, flows),  # one pool per vendor: its rate limit holds across workers
            outlets=flow_assets(spec, flows),  # one Asset per flow; an event only when it landed or delivered rows
        ).expand(shard=plan.output)
        run >> ReportOperator(task_id="report", spec=spec)
    return dag
