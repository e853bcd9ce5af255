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
        if kind == "manual" and params.replay:
            self.log.info(
                "%s: the landed pages are mapped again, the POS is not called%s",
                "dry run (replay preview)" if params.dry_run else "replay",
                "; nothing is written or sent" if params.dry_run else "",
            )
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

        if _run_kind(context) == "manual":  # the run's Params: replay from raw landing, or only preview it
            try:
                sync.set_run_mode(context["run_id"], sync.RunParams.from_params(dict(context.get("params") or {})))
            except ConfigError as exc:
                raise AirflowFailException(one_line(exc)) from None
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
        previews = [o.preview for o in result.outcomes if o.preview]
        if previews:  # a replay or dry run: what it found per account and flow (small: no rows)
            summary["replay"] = previews[:100]
        self._outlet_events(context, result)
        names = "; ".join(f"{o.item.account_key} {o.item.flow}: {o.error}" for o in result.failed)
        if result.retryable:
            raise AirflowException(f"{len(result.failed)} account flow(s) failed, a retry runs them: {names}"[:1000])
        if result.failed:
            raise AirflowFailException(f"{len(result.failed)} account flow(s) failed for good: {names}"[:1000])
        return summary

    def _outlet_events(self, context: Any, result: Any) -> None:
        """Attach what each flow landed or delivered to its asset's event (:mod:`tillflow.assets`); a flow that
        moved nothing in this task instance is dropped from its outlets, so Airflow emits no event for it."""
        if not self.outlets:
            return
        from tillflow.assets import outlet_extras

        extras = outlet_extras(self.spec, result.outcomes, run_id=context["run_id"])
        keep = []
        for asset in self.outlets:
            extra = extras.get(getattr(asset, "uri", None))
            if extra:
                context["outlet_events"][asset].extra.update(extra)
                keep.append(asset)
        self.outlets = keep


class ReportOperator(BaseOperator):
    """Summarise the run per account from the activity log and send the run's one e-mail.

    Failed account flows fail the run (:class:`tillflow.notify.RunFailed`, marked as mailed, so the task's
    failure callback does not mail again). Account flows that wait for a person — ``needs_mapping``
    (never fails the run) and refused credentials (``auth_failed``) — are mailed to the owners once a day
    per account until fixed; the rest of that day an ``auth_failed`` account is only logged.
    """

    ui_color = "#eae6f4"

    def __init__(self, *, spec: IntegrationSpec, smtp_conn_id: str = "smtp_default", **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.spec = spec
        self.smtp_conn_id = smtp_conn_id
        self.known_secrets: list[str] = []

    def _secrets(self, store: Any, rows: list[dict[str, Any]]) -> list[str]:
        """The secrets of the connections of ``rows``' accounts and of the SMTP server (to mask the mail)."""
        found: list[str] = []
        conn_ids = {self.smtp_conn_id}
        for r in rows:
            try:
                account = store.account_by_id(r["account_id"])
                conn_ids.update(sync.conn_ids(self.spec, self.spec.flow(r["flow"]), account))
            except Exception:  # an account or flow gone since: nothing to mask for it
                continue
        for conn_id in sorted(conn_ids):
            try:
                found.extend(connection_info(conn_id).secrets())
            except Exception:
                continue
        return found

    def execute(self, context: Any) -> dict[str, Any]:
        from datetime import UTC, datetime

        from tillflow import notify
        from tillflow.store import Store

        not_run = context["ti"].xcom_pull(task_ids="plan", key="not_run")
        if not_run is None:  # the plan failed and its own failure callback mailed the owners
            raise notify.RunFailed("plan did not finish: nothing ran (see the plan task's log)", alerted=True)
        run_id = context["run_id"]
        owners = list(self.spec.owners)
        now = datetime.now(UTC)
        with Store.open() as store:
            text, failed = sync.report(store, run_id, not_run)
            rows = store.activity(run_id=run_id)
            secrets = self._secrets(store, [r for r in rows if r["status"] in ("failed", "needs_mapping")])
            self.known_secrets[:] = secrets
            chosen = notify.select_run_alert(
                store, owners=owners, dag_id=self.dag_id, run_id=run_id, rows=rows, now=now, secrets=secrets
            )
            sent = notify.send(chosen.alert, self.smtp_conn_id) if chosen.alert is not None else False
            notify.record_run_alert(store, owners=owners, rows=rows, chosen=chosen, sent=sent, now=now)
        self.log.info("run summary\n%s", text)
        for r in chosen.quiet:
            self.log.warning(
                "%s (%s) %s: credentials refused; the owners were told today (again tomorrow until fixed), "
                "so it does not fail this run again: %s",
                r["name"],
                r["account_key"],
                r["flow"],
                one_line(r["error"] or "", secrets),
            )
        if chosen.failing:
            names = ", ".join(
                f"{r['name']} ({r['account_key']}) {r['flow']} {r['window_start']}..{r['window_end']}: "
                f"{one_line(r['error'] or '', secrets, limit=200)}"
                for r in chosen.failing
            )
            n = len({r["account_id"] for r in chosen.failing})
            raise notify.RunFailed(f"{n} account(s) failed: {names}"[:1000], alert=chosen.alert, alerted=sent)
        return {"failed": 0, "not_run": len(not_run), "alerted": bool(sent), "quiet": len(chosen.quiet)}
