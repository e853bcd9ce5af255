"""Delivery strategies shared by the flow kinds: keyed upsert (``keyed``), create-if-absent
(``create_if_absent``) and the ledger outbox (``outbox``). No Airflow import."""
