"""Airflow plugin: the tillflow sync-health view in the Airflow UI (Airflow 3 ``fastapi_apps``).

The app (:mod:`tillflow.health`) sits behind Airflow's own login: it authenticates every request with
Airflow's auth manager (the UI's ``_token`` cookie or a Bearer token) and starts manual syncs through
Airflow's REST API with the user's token. Airflow imports this module in the API server and in every
task process, before any connection is read; it also makes Airflow's secrets masker linear in the
number of secrets (:mod:`tillflow.airflow_masker`).
"""

from airflow.plugins_manager import AirflowPlugin
from tillflow import airflow_masker
from tillflow.health import URL_PREFIX, create_app
from tillflow.trigger_guard import TriggerGuard

airflow_masker.install()


class TillflowPlugin(AirflowPlugin):
    name = "tillflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "tillflow sync health"}]
    # refuses a trigger of a tillflow DAG whose Params break a rule spanning two fields (date_to before
    # date_from) with 400, before the run exists (Params are checked one by one)
    fastapi_root_middlewares = [{"middleware": TriggerGuard, "name": "tillflow trigger guard"}]
    external_views = [
        {"name": "Sync health", "href": "tillflow/health", "destination": "nav", "url_route": "tillflow-health"}
    ]
