"""
### Kassatellen → Eitje hourly revenue (airflow DAGs `kassatellen_to_eitje`, `kassatellen_to_eitje_activation`)

**What**: revenue per Kassatellen revenue group per hour, summed per Eitje revenue group (several POS
groups may feed one Eitje group), incl. or excl. VAT per account, upserted per group and hour.

**When**: `kassatellen_to_eitje` ticks every hour at :07 and runs every active account for the hours of
the business day so far plus yesterday (late POS corrections land). `kassatellen_to_eitje_activation`
ticks every 5 minutes and, five minutes after an account is activated, fetches its past month once
(Eitje's forecast uses the past four weeks); if mapping or settings are incomplete then, it tries
again every hour until it succeeds. Re-activation after a pause does it again.

**Hours are instants**: an hour is (business date, hour of the business day) — whole hours since the
business day started at the account's cutoff (05:00 by default) in its timezone. A 25-hour day has
hours 0–24 (the repeated 02:00 is two hours), a 23-hour day 0–22; sales after midnight belong to the
previous business day. Eitje gets each hour as its start instant.

**Mapping gate**: every revenue group the POS lists must be mapped to an Eitje group or marked inactive
— also groups without sales. Until then the account does not sync; its status (`needs_mapping`) names
the unmapped groups, and the next hourly tick tries again.

**Manual sync / backfill**: trigger with Params `accounts`, `date_from`, `date_to`, `overwrite`; or
`airflow backfill create --dag-id kassatellen_to_eitje --from-date … --to-date …`. Idempotent.

**Runbook**
- *auth_failed*: the customer's Kassatellen e-mail/password changed (or Eitje's credentials): fix the
  connection; refused credentials are not retried.
- *needs_mapping*: `python -m tillflow mappings list -i kassatellen_to_eitje <account>` shows the groups;
  `mappings set …` (or `--inactive`), and the next tick syncs.
- *failed rows*: Eitje refused a row (its message is in the activity log); the other rows went.
"""

from pathlib import Path

from tillflow.factory import build_dags

dags = build_dags(Path(__file__).with_suffix(".yaml"), doc_md=__doc__)
globals().update(dags)  # the airflow DAG processor finds each DAG as a module global

if __name__ == "__main__":
    dags["kassatellen_to_eitje"].test()
