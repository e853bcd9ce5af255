"""
### tillflow reconciliation (airflow DAG `tillflow_reconcile`)

**What**: per account and business day, the POS total tillflow holds (its canonical copy: revenue per
day; for the ledger, the source events' entries in the outbox) against what the target holds, read back
from the target's API (Planday revenue, Eitje revenue, Shiftbase team days, Pennylane ledger entries). A day
that differs by more than one cent is **drift**: a row in `tillflow.reconciliation`, an activity row (flow
`reconcile`, status `drift`, naming day and amounts) and one plain-text e-mail per integration to its
owners. A difference tillflow recorded on purpose (Planday 409 "no opening day", a value the write mode
kept) is *explained*, not drift. One task per integration with revenue or a ledger (CCV ↔ eAccounting
orders, products and stock have no day total to compare: left out). The POS is not called.

**When**: weekly, Monday 06:00 Europe/Amsterdam, for each account the 7 closed business days before the
last one (the last closed day is left to settle: late run times, lookbacks, retries). **Also on assets**:
each ledger delivery of `kashclick_to_pennylane` (asset `tillflow://kashclick_to_pennylane/ledger`) runs
it for the accounts and days that event names. To schedule on more flows, add their assets to
`ON_ASSETS` below (`tillflow.assets.flow_asset(integration, flow)`; every flow's `run` task emits one
when it landed or delivered rows).

**Idempotency**: read-only towards the targets; a re-run adds a new check (rows keyed by run id).

**Manual run**: Params `integrations`, `accounts`, `date_from`, `date_to`; or
`python -m tillflow reconcile -i <integration> [--account KEY] --from D --to D` (exit 1 on drift).

**Runbook**
- *drift mail*: re-send the days with a manual run of the integration's DAG (Params accounts,
  date_from, date_to, overwrite), or correct the target by hand; confirm with `python -m tillflow
  reconcile`. Ledger: "posted twice" / "unknown to tillflow" entries are reversed by hand in Pennylane;
  "missing" / "not posted yet" ones are posted by the next ledger run.
- *task failed*: a target's read endpoint refused or failed for an account (credentials, 5xx); the log
  names the account. Fix the connection and clear the task; the other accounts were checked.
"""

from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task
from tillflow.assets import flow_asset
from tillflow.notify import FailureEmail
from tillflow.reconcile import reconcilable_flow
from tillflow.specs import load_spec

OWNERS = ["data-team@tillflow.example"]
SPECS = {p.stem: load_spec(p) for p in sorted((Path(__file__).parent).glob("*.yaml"))}
INTEGRATIONS = sorted(name for name, spec in SPECS.items() if reconcilable_flow(spec) is not None)
#: asset events that also start a check of the integration, accounts and days they name
ON_ASSETS = [flow_asset("kashclick_to_pennylane", "ledger")]
TARGETS = sorted({SPECS[i].target_of(reconcilable_flow(SPECS[i])) for i in INTEGRATIONS})
SOURCES = sorted({SPECS[i].source for i in INTEGRATIONS})

with DAG(
    dag_id="tillflow_reconcile",
    description="POS totals per account and business day against what the targets hold (read back)",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * 1", timezone="Europe/Amsterdam"),
        assets=ON_ASSETS[0] if len(ON_ASSETS) == 1 else ON_ASSETS,
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["tillflow", *(f"source:{s}" for s in SOURCES), *(f"target:{t}" for t in TARGETS)],
    default_args={
        "owner": "tillflow",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": [FailureEmail(to=OWNERS)],
    },
    params={
        "integrations": Param(
            None, type=["null", "array"], items={"type": "string", "enum": INTEGRATIONS}, title="Integrations"
        ),
        "accounts": Param(None, type=["null", "array"], items={"type": "string"}, title="Accounts"),
        "date_from": Param(None, type=["null", "string"], format="date", title="Date from"),
        "date_to": Param(None, type=["null", "string"], format="date", title="Date to"),
    },
    render_template_as_native_obj=True,
) as dag:
    for integration in INTEGRATIONS:

        @task(task_id=f"reconcile_{integration}")
        def check(integration: str = integration, params=None, triggering_asset_events=None, **context) -> dict:
            from datetime import UTC, date

            from airflow.sdk.exceptions import AirflowException
            from tillflow.operators import connection_info
            from tillflow.reconcile import reconcile, table
            from tillflow.sources.base import Window
            from tillflow.store import Store, ensure_schema

            params = dict(params or {})
            if params.get("integrations") and integration not in params["integrations"]:
                return {"integration": integration, "checked": 0, "why": "not asked for"}
            accounts, window = params.get("accounts") or None, None
            if params.get("date_from") or params.get("date_to"):
                start = date.fromisoformat(params.get("date_from") or params["date_to"])
                window = Window(start, date.fromisoformat(params.get("date_to") or params["date_from"]))
            events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
            if events:  # started by an asset event: the accounts and days it names, of its integration only
                mine = [e.extra for e in events if (e.extra or {}).get("integration") == integration]
                if not mine:
                    return {"integration": integration, "checked": 0, "why": "no asset event of this integration"}
                accounts = sorted({a for x in mine for a in x.get("accounts") or []}) or None
                days = [(x.get("window_start"), x.get("window_end")) for x in mine if x.get("window_start")]
                if days and window is None:
                    window = Window(
                        date.fromisoformat(min(d[0] for d in days)), date.fromisoformat(max(d[1] for d in days))
                    )
            ensure_schema()
            dag_run = context["dag_run"]
            at = context.get("logical_date") or dag_run.run_after or datetime.now(UTC)
            with Store.open() as store:
                known = {a.key for a in store.list_accounts(integration)}
                if accounts:  # an account deleted since the event is not an error
                    accounts = [a for a in accounts if a in known] or None
                    if accounts is None:
                        return {"integration": integration, "checked": 0, "why": "the event's accounts are gone"}
                checks = reconcile(
                    store,
                    SPECS[integration],
                    connection_info,
                    run_id=context["run_id"],
                    dag_id=dag_run.dag_id,
                    accounts=accounts,
                    window=window,
                    at=at,
                )
            print(table(checks))
            failed = [c for c in checks if c.error]
            summary = {
                "integration": integration,
                "accounts": len(checks),
                "days": sum(len(c.days) for c in checks),
                "drift": sum(len(c.drift) for c in checks),
                "failed": len(failed),
            }
            if failed:  # drift was mailed by reconcile(); a check that could not read its target fails the task
                names = "; ".join(f"{c.account.key}: {c.error}" for c in failed)
                raise AirflowException(f"{len(failed)} account(s) could not be reconciled: {names}"[:1000])
            return summary

        check()

if __name__ == "__main__":
    dag.test()
