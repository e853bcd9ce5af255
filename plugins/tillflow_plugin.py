"""Airflow plugin: the tillflow sync-health view in the Airflow UI (Airflow 3 ``fastapi_apps``).

Airflow imports this module in the API server and in every task process, before any connection is read;
it also makes Airflow's secrets masker linear in the number of secrets (:mod:`tillflow.airflow_masker`).
"""

from airflow.plugins_manager import AirflowPlugin
from tillflow import airflow_masker
from tillflow.health import create_app

airflow_masker.install()


class TillflowPlugin(AirflowPlugin):
    name = "tillflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/tillflow", "name": "tillflow sync health"}]
    external_views = [{"name": "Sync health", "href": "tillflow/health", "destination": "nav",
                       "url_route": "tillflow-health"}]
