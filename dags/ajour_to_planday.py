"""
### Ajour → Planday revenue (airflow DAG `ajour_to_planday`)

**What**: daily revenue per Ajour POS location, summed per Planday revenue unit (several locations
may feed one unit), incl. or excl. VAT per account, written with `POST /revenue/v1.0/revenue`.

**When**: an hourly tick from 05:00 (Europe/Copenhagen). Each active account runs at its own hour
(05:00 at the earliest) on its own weekdays — the *fetch* day, not the sales day: Friday 07:00 fetches
Thursday — for its previous N business days (1–31), never before its start date.

**Idempotency key**: (account, revenue unit, business date). Planday stores one value per unit per
day; tillflow only sends values that changed since their last delivery, so re-runs and backfills
change nothing that is already right. Write mode per account: `overwrite`, `insert_only`, `keep_manual`.

**Manual sync / backfill**: trigger with Params `accounts`, `date_from`, `date_to`, `overwrite`; or
`airflow backfill create --dag-id ajour_to_planday --from-date … --to-date …`.

**Runbook**
- *fetch failed, AuthError*: the customer's Ajour credentials changed — fix the connection
  (`airflow connections …`), then clear the task. No retries are spent on refused credentials.
- *map skipped, needs mapping*: a POS location has no revenue unit — `python -m tillflow mappings set …`
  (or mark it inactive), then re-run the account.
- *deliver failed*: Planday was down or rate-limited beyond the retry policy; the values stay pending
  in `tillflow.delivery_state` and the next run (or a task clear) sends them — the POS is not called again.
- *409 skipped*: Planday has no opening day for that unit/date; logged in the activity log, not an error.
- Read `tillflow.activity` (or `python -m tillflow accounts list`) for what each account did.
"""

from pathlib import Path

from tillflow.factory import build_dags

dags = build_dags(Path(__file__).with_suffix(".yaml"), doc_md=__doc__)
globals().update(dags)  # the airflow DAG processor finds each DAG as a module global

if __name__ == "__main__":
    dags["ajour_to_planday"].test()
