"""
### tillflow maintenance (airflow DAG `tillflow_maintenance`)

**What**: retention of the tillflow store — deletes raw landing, map batches, activity log and rejects
older than their retention (days per table, Params; defaults in the README: raw landing 400, batches
14, activity 400, rejects 180), in small batches. Canonical data, delivery state, the ledger outbox
and account state are never purged.

**When**: daily at 03:30 UTC, outside the integrations' busy hours.

**Idempotency**: deleting what is older than a cut-off twice deletes nothing the second time.

**Runbook**
- *purge failed*: the database was unreachable or a lock timed out; clear the task — it resumes where
  it stopped (each batch commits on its own).
- *a bad retention Param*: the task fails naming the table; fix the value in the trigger form.
"""

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task
from airflow.timetables.trigger import CronTriggerTimetable
from tillflow.maintenance import DEFAULT_RETENTION_DAYS
from tillflow.notify import FailureEmail

OWNERS = ["data-team@tillflow.example"]

with DAG(
    dag_id="tillflow_maintenance",
    description="Retention of the tillflow store (raw landing, batches, activity, rejects)",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("30 3 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tillflow"],
    default_args={
        "owner": "tillflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": [FailureEmail(to=OWNERS)],
    },
    params={
        table: Param(days, type="integer", minimum=1, description=f"days of {table} to keep")
        for table, days in DEFAULT_RETENTION_DAYS.items()
    },
) as dag:

    @task(task_id="purge")
    def purge(params=None) -> dict:
        from tillflow.maintenance import purge as run_purge
        from tillflow.store import ensure_schema
        from tillflow.store.db import connect

        ensure_schema()
        days = {table: params[table] for table in DEFAULT_RETENTION_DAYS}
        with connect() as conn:
            return run_purge(conn, days)

    purge()

if __name__ == "__main__":
    dag.test()
