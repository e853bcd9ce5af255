"""Thin Airflow operators: each wires one step of :mod:`tillflow.sync` to Airflow.

They fetch the connection, open the store, label the mapped task instance with the account, turn
known errors into the right task outcome and keep secrets out of errors:

- bad settings / refused credentials → ``AirflowFailException`` (no retry storm);
- unmapped source keys → ``AirflowSkipException`` (the account shows *needs_mapping*, others run);
- anything else → re-raised, so Airflow retries the task per the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tillflow import sync
from tillflow.errors import AuthError, ConfigError, NeedsMapping
from tillflow.masking import one_line
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import IntegrationSpec

LABEL_TEMPLATE = "{{ tillflow_label }}"


def connection_info(conn_id: str) -> ConnectionInfo:
    """The fields of an Airflow Connection as plain data for a client."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ConfigError(f"connection: {conn_id!r} is not defined; add it with `airflow connections add`") from exc
    return ConnectionInfo.from_airflow(conn_id, conn)


class _StepOperator(BaseOperator):
    """Base of the per-account steps. ``item`` is a :class:`tillflow.sync.WorkItem` as a dict."""

    template_fields: Sequence[str] = ("item", "upstream")
    ui_color = "#e8f4ea"

    def __init__(self, *, spec: IntegrationSpec, item: Any, upstream: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("map_index_template", LABEL_TEMPLATE)
        super().__init__(**kwargs)
        self.spec = spec
        self.item = item
        self.upstream = upstream
        self.known_secrets: list[str] = []

    def execute(self, context: Any) -> Any:
        from tillflow.store import Store

        item = sync.WorkItem.from_xcom(self.item)
        context["tillflow_label"] = item.label
        run_id = context["run_id"]
        with Store.open() as store:
            try:
                return self.step(store, item, run_id=run_id, dag_id=self.dag_id)
            except NeedsMapping as exc:
                raise AirflowSkipException(f"{item.name}: needs mapping — {exc}") from None
            except (AuthError, ConfigError) as exc:
                message = one_line(exc, self.known_secrets)
                sync.mark_failed(store, item, run_id, message)
                raise AirflowFailException(f"{item.name}: {message}") from None
            except Exception as exc:
                message = one_line(exc, self.known_secrets)
                sync.mark_failed(store, item, run_id, message)
                raise

    def conn(self, conn_id: str) -> ConnectionInfo:
        info = connection_info(conn_id)
        self.known_secrets.extend(info.secrets())
        return info

    def step(self, store: Any, item: sync.WorkItem, *, run_id: str, dag_id: str) -> Any:
        raise NotImplementedError


class FetchOperator(_StepOperator):
    """Call the POS for the account's window and land the raw payloads. Returns landing ids."""

    def step(self, store, item, *, run_id, dag_id):
        account = store.account_by_id(item.account_id)
        return sync.fetch(store, self.spec, item, self.conn(account.conn_id), dag_id=dag_id, run_id=run_id)


class MapOperator(_StepOperator):
    """Parse landed pages, send bad records to rejects, map source keys to target keys. Returns a batch id."""

    def step(self, store, item, *, run_id, dag_id):
        return sync.map_rows(store, self.spec, item, list(self.upstream or []), run_id=run_id)


class UpsertOperator(_StepOperator):
    """Merge the mapped batch into the canonical tables with the account's write mode. Returns counts."""

    def step(self, store, item, *, run_id, dag_id):
        return sync.upsert(store, item, int(self.upstream), run_id=run_id)


class DeliverOperator(_StepOperator):
    """Send the rows that changed since their last delivery to the target. Returns counts."""

    def step(self, store, item, *, run_id, dag_id):
        account = store.account_by_id(item.account_id)
        return sync.deliver(store, self.spec, item, self.conn(account.target_conn(self.spec.target)), run_id=run_id)


class PlanOperator(BaseOperator):
    """Decide which accounts run now (their hour, weekdays, active flag, or the manual run's Params)."""

    ui_color = "#f0ead6"

    def __init__(self, *, spec: IntegrationSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from tillflow.store import Store

        dag_run = context["dag_run"]
        run_type = str(getattr(dag_run, "run_type", "")).lower()
        manual = "manual" in run_type
        try:
            params = sync.RunParams.from_params(dict(context.get("params") or {}))
            with Store.open() as store:
                when = context.get("logical_date") or dag_run.run_after
                planned = sync.plan(store, self.spec, logical_date=when, params=params, manual=manual)
        except (ConfigError, ValueError) as exc:
            raise AirflowFailException(one_line(exc)) from None
        for key, why in sorted(planned.not_run.items()):
            self.log.info("not running %s: %s", key, why)
        for item in planned.items:
            self.log.info("running %s (%s, %s)", item.label, item.flow, item.mode)
        context["ti"].xcom_push(key="not_run", value=planned.not_run)
        return [i.to_xcom() for i in planned.items]


class ReportOperator(BaseOperator):
    """Summarise the run per account from the activity log; fail the run if any account failed."""

    ui_color = "#eae6f4"

    def __init__(self, *, spec: IntegrationSpec, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Any) -> dict[str, Any]:
        from tillflow.store import Store

        not_run = context["ti"].xcom_pull(task_ids="plan", key="not_run")
        if not_run is None:
            raise AirflowFailException("plan did not finish: nothing ran (see the plan task's log)")
        with Store.open() as store:
            text, failed = sync.report(store, context["run_id"], not_run)
        self.log.info("run summary\n%s", text)
        if failed:
            names = ", ".join(f"{r['name']} ({r['account_key']}): {r['error']}" for r in failed)
            raise AirflowFailException(f"{len(failed)} account(s) failed: {names}"[:1000])
        return {"failed": 0, "not_run": len(not_run)}
