"""tillflow: POS → workforce and accounting integrations on Apache Airflow.

Business logic here is plain Python (no Airflow import) except in ``operators``, ``factory`` and
``notify``; keep module import cheap, the plugin manager imports everything under ``plugins/``.
"""

__version__ = "0.1.0"
