"""Thin Airflow operators: each wires one step of :mod:`tillflow.sync` to Airflow.

``plan`` decides which accounts run and writes the run's work list; ``run`` (mapped over shards, or
over accounts on a manual run that names them) runs its accounts concurrently; ``report`` summarises
the run and fails it — with one e-mail naming every failed account — if any account failed.

Outcomes of ``run``: a failure a retry may cure (5xx/timeouts that outlived the HTTP policy, a killed
worker) fails the task so Airflow retries it, and the retry runs only the accounts that did not finish;
permanent failures (refused credentials, bad settings, a 4xx the vendor will answer again, rows the
target refused) → ``AirflowFailException``, no retry storm; unmapped source keys are not failures (the
account's flow shows *needs_mapping* and is tried again at its next run).
"""

from __future__ import annotations

import threading
from typing import Any

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from tillflow import sync
from tillflow.errors import ConfigError
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


def _run_kind(context: Any) -> str:
    run_type = str(getattr(context["dag_run"], "run_type", "")).lower()
    return "manual" if "manual" in run_type else "backfill" if "backfill" in run_type else "scheduled"


class PlanOperator(BaseOperator):
    """Decide which accounts run now (due times, active flag, or the manual run's Params) and shard them.

    Also the step that brings the tillflow schema up to date (once per run, under an advisory lock).
    """

    ui_color = "#f0ead6"

    def __init__(self, *, spec: IntegrationSpec, flows: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.flows = list(flows)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from tillflow.store import Store, ensure_schema

        kind = _run_kind(context)
        dag_run = context["dag_run"]
        try:
            params = sync.RunParams.from_params(dict(context.get("params") or {}))
            applied = ensure_schema()
            if applied:
                self.log.info("tillflow schema: applied migration(s) %s", applied)
            with Store.open() as store:
                when = context.get("logical_date") or dag_run.run_after
                planned = sync.plan_run(
                    store,
                    self.spec,
                    [self.spec.flow(f) for f in self.flows],
                    dag_id=self.dag_id,
                    run_id=context["run_id"],
                    logical_date=when,
                    params=params,
                    manual=kind == "manual",
                    backfill=kind == "backfill",
                )
        except (ConfigError, ValueError) as exc:
            raise AirflowFailException(one_line(exc)) from None
        for key, why in sorted(planned.not_run.items()):
            self.log.info("not running %s: %s", key, why)
        for item in planned.items:
            self.log.info("running %s %s (%s) in shard %d", item.label, item.flow, item.mode, item.shard)
        self.log.info(
            "%s run: %d account flow(s) in %d shard(s), %d not run",
            kind,
            len(planned.items),
            len(planned.shards),
            len(planned.not_run),
        )
        context["ti"].xcom_push(key="not_run", value=planned.not_run)
        return planned.shards


class RunAccountsOperator(BaseOperator):
    """Run one shard's accounts concurrently: fetch → map → upsert → deliver per account, in threads.

    Mapped over the plan's shards; each instance is labelled with its shard or, on a manual run that
    names accounts, with the account. A retry runs only the accounts of the shard that did not finish.
    """

    template_fields = ("shard",)
    ui_color = "#e8f4ea"

    def __init__(self, *, spec: IntegrationSpec, shard: Any, **kwargs: Any) -> None:
        kwargs.setdefault("map_index_template", LABEL_TEMPLATE)
        super().__init__(**kwargs)
        self.spec = spec
        self.shard = shard
        self.known_secrets: list[str] = []

    def execute(self, context: Any) -> dict[str, Any]:
        shard = dict(self.shard)
        context["tillflow_label"] = shard["label"]
        cache: dict[str, ConnectionInfo | Exception] = {}
        lookup = threading.Lock()

        def conns(conn_id: str) -> ConnectionInfo:
            # One lookup at a time (the task's channel to Airflow's secrets is one socket), while the other
            # threads go on with their HTTP and database work: lookups overlap with the accounts' work.
            with lookup:
                found = cache.get(conn_id)
                if found is None:
                    try:
                        found = connection_info(conn_id)
                        self.known_secrets.extend(found.secrets())
                    except ConfigError as exc:
                        found = exc
                    cache[conn_id] = found
            if isinstance(found, Exception):
                raise found
            return found

        result = sync.run_shard(
            self.spec,
            dag_id=self.dag_id,
            run_id=context["run_id"],
            shard=int(shard["shard"]),
            conns=conns,
            secrets=self.known_secrets,
        )
        summary = {
            "accounts": len(result.outcomes),
            "ok": sum(o.status == "success" for o in result.outcomes),
            "needs_mapping": sum(o.status == "needs_mapping" for o in result.outcomes),
            "failed": len(result.failed),
            "seconds": round(result.seconds, 1),
        }
        names = "; ".join(f"{o.item.account_key} {o.item.flow}: {o.error}" for o in result.failed)
        if result.retryable:
            raise AirflowException(f"{len(result.failed)} account flow(s) failed, a retry runs them: {names}"[:1000])
        if result.failed:
            raise AirflowFailException(f"{len(result.failed)} account flow(s) failed for good: {names}"[:1000])
        return summary


class ReportOperator(BaseOperator):
    """Summarise the run per account from the activity log; fail the run (one e-mail) if any account failed."""

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
            names = ", ".join(
                f"{r['name']} ({r['account_key']}) {r['flow']} {r['window_start']}..{r['window_end']}: {r['error']}"
                for r in failed
            )
            raise AirflowFailException(f"{len(failed)} account(s) failed: {names}"[:1000])
        return {"failed": 0, "not_run": len(not_run)}
