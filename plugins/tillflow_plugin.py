"""Airflow plugin: the tillflow sync-health view in the Airflow UI (Airflow 3 ``fastapi_apps``)."""

from airflow.plugins_manager import AirflowPlugin
from tillflow.health import create_app


class TillflowPlugin(AirflowPlugin):
    name = "tillflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/tillflow", "name": "tillflow sync health"}]
    external_views = [{"name": "Sync health", "href": "tillflow/health", "destination": "nav",
                       "url_route": "tillflow-health"}]
