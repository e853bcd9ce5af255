"""
### CCV SalesPOS → Visma eAccounting orders (airflow DAG `ccv_salespos_to_eaccounting`)

**What**: every 30 minutes, the orders of each active account in its chosen statuses (paid by default) from
the last few days are created once in eAccounting: an order that already exists is skipped (looked up by its
reference `CCV-<number>`, also after a create whose answer was lost); the customer is found by e-mail and
updated, or created (a company name → a company customer with the person as contact, otherwise a private
person); every product must exist by SKU, else the order fails naming the SKU and is tried again at the next
run. Fields come from the field mapper (default mapping, per-account overrides in `flows.orders.field_map`).

**Runbook**: *a missing product* — create the article in eAccounting (or let the products flow do it); the
next run creates the order. *auth_failed* — the eAccounting refresh token was used already: re-authorise
the connection.
"""

from pathlib import Path

from tillflow.factory import build_dags

dags = build_dags(Path(__file__).with_suffix(".yaml"), doc_md=__doc__)
globals().update(dags)  # the airflow DAG processor finds each DAG as a module global

if __name__ == "__main__":
    dags["ccv_salespos_to_eaccounting"].test()
