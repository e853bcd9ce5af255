"""
### Kash.click → Pennylane ledger entries (airflow DAGs `kashclick_to_pennylane`, `kashclick_to_pennylane_history`)

**What**: every order, payment and till closing of a Kash.click shop becomes a balanced Pennylane ledger
entry, posted exactly once. Orders → sales lines per VAT rate (706/707/711… per the account's chart),
VAT lines per rate (44571x) and one customer line (the customer's own 411 account; the customer is found
by external reference and created if missing); payments → debit the payment method's account, credit the
customer; till closings → one entry: the global lines (the expected takings, debit the general sales
account 700000, credit the general revenue account 700100) and the cash differences to 658/758 against
the payment method. VAT per order and rate
is computed on the rate's total (round half up); every entry balances before it is queued.

**When**: `kashclick_to_pennylane` daily at 06:00 (Europe/Paris) for the previous business day;
`kashclick_to_pennylane_history` five minutes after an account is activated imports the history from
the account's `fiscal_year_start` through yesterday — once per activation, resumable after a crash
(posted events are never posted again), paced to Pennylane's 25 requests per 5 s, its progress (events
done / total, rate) in the task log every 10 s and in the activity log.

**Exactly once**: each source event has a deterministic posting key, claimed in the outbox with a payload
hash before the call and written to `piece_number`. A lost answer is looked up before any re-post; a
changed event gets a reversal plus a new entry, a deleted one a reversal — never an edit. A change is
seen only when its day is read again (the daily lookback, a manual day or range, a replay).

**Manual sync / backfill**: Params `accounts`, `date_from`, `date_to`; `airflow backfill create`. Idempotent.

**Runbook**
- *rejects*: an order whose lines do not add up, an unknown VAT rate, a payment method or register
  without an account/journal in the chart — fix the chart (`--flow-setting ledger.chart=…`) and run the
  day again (Params `date_from`/`date_to`); a customer without a name or e-mail — fix it in Kash.click.
- *unknown outcomes*: the run fails so its retry looks them up; nothing is posted twice.
"""

from pathlib import Path

from tillflow.factory import build_dags

dags = build_dags(Path(__file__).with_suffix(".yaml"), doc_md=__doc__)
globals().update(dags)  # the airflow DAG processor finds each DAG as a module global

if __name__ == "__main__":
    dags["kashclick_to_pennylane"].test()
