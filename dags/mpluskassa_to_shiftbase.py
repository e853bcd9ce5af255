"""
### MplusKASSA → Shiftbase (airflow DAG `mpluskassa_to_shiftbase`)

**What**, every 15 minutes for every active account, two flows:
- *revenue* (when the account has it on, `revenue.enabled`): turnover per MplusKASSA branch (sector) for
  the current and the previous business day (`financialDate`), incl. or excl. VAT as set, on the Shiftbase
  team chosen per branch (mapping `branch` → team; a branch not selected is marked inactive). The team day
  is found and updated, or created; unchanged values are not re-sent.
- *clock_times*: POS shifts of mapped employees become Shiftbase timesheets keyed by the POS shift number —
  a shift seen open, later closed or corrected updates its one timesheet. Employees set to "do not import"
  (inactive) are skipped. Cost centre → department per cost centre (`clock_times.cost_centers`): `skip`,
  `auto` (the planned roster department of that day, else the employee's own) or a department id. Breaks
  are separate clock-out/clock-in shifts; MplusKASSA's pause button is not supported.

**Notifications**: the account's `clock_times.notify_email` and `revenue.notify_email` get a plain-text
e-mail naming the problems of an import (unmapped employees, a failed call, rejected records), once a day
per problem; a problem that clears and comes back is reported again.

**Mapping**: `python -m tillflow mappings list <key>` lists branches, employees (one missing there usually
lacks an authorisation group in MplusKASSA) and cost centres, and what is unmapped.

**Runbook**
- *auth_failed*: the MplusKASSA ident/secret (or the Shiftbase API key) changed: fix the connection.
- *rejected shifts*: see `tillflow.rejects` (an end before the start, over 24 h, an unknown employee).
- *failed rows*: Shiftbase refused a team day or timesheet (its message is in the activity log).
"""

from pathlib import Path

from tillflow.factory import build_dags

dags = build_dags(Path(__file__).with_suffix(".yaml"), doc_md=__doc__)
globals().update(dags)  # the airflow DAG processor finds each DAG as a module global

if __name__ == "__main__":
    dags["mpluskassa_to_shiftbase"].test()
