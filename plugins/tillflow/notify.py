"""Failure e-mail for every task of every integration, sent through the ``smtp_default`` connection.

Task-level (DAG-level ``on_failure_callback`` notifiers break ``dag.test()`` upstream); it runs in the
task's own process, so it works under the real scheduler as well as in ``dag.test()``. The message
names DAG, task, account, window and the error in one masked line — never a secret.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from airflow.sdk import BaseNotifier

from tillflow.masking import one_line

log = logging.getLogger(__name__)


class FailureEmail(BaseNotifier):
    """E-mail the integration's owners when a task fails.

    :param to: owners' addresses (the spec's ``owners``)
    :param smtp_conn_id: Airflow connection of the SMTP server
    """

    template_fields = ()

    def __init__(self, *, to: list[str], smtp_conn_id: str = "smtp_default"):
        super().__init__()
        self.to = list(to)
        self.smtp_conn_id = smtp_conn_id

    @staticmethod
    def describe(context: dict[str, Any]) -> dict[str, str]:
        ti = context.get("ti") or context.get("task_instance")
        task = context.get("task")
        dag_id = getattr(ti, "dag_id", "") or getattr(context.get("dag"), "dag_id", "")
        item = getattr(task, "item", None)
        account = window = "-"
        if isinstance(item, dict) and "account_key" in item:
            account = f"{item.get('name')} ({item['account_key']})"
            window = f"{item.get('window_start')}..{item.get('window_end')}"
        secrets = list(getattr(task, "known_secrets", ()) or ())
        exc = context.get("exception")
        if exc is None:
            error = "unknown error (see the task log)"
        elif type(exc).__name__ in ("AirflowFailException", "AirflowException"):
            error = one_line(str(exc), secrets)  # our own wrapper: its text already names the cause
        else:
            error = one_line(exc, secrets)
        return {
            "dag_id": dag_id,
            "task_id": getattr(ti, "task_id", "") or getattr(task, "task_id", ""),
            "run_id": str(context.get("run_id") or getattr(ti, "run_id", "")),
            "try_number": str(getattr(ti, "try_number", "")),
            "map_index": str(getattr(ti, "map_index", -1)),
            "account": account,
            "window": window,
            "error": error,
        }

    def notify(self, context: dict[str, Any]) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        d = self.describe(context)
        subject = f"[tillflow] {d['dag_id']}.{d['task_id']} failed — {d['account']} {d['window']}: {d['error']}"
        subject = subject[:240]
        rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in d.items())
        body = (
            f"<p>A tillflow task failed.</p><table>{rows}</table><p>Runbook: see the DAG's docs in the Airflow UI.</p>"
        )
        try:
            with SmtpHook(smtp_conn_id=self.smtp_conn_id) as smtp:
                smtp.send_email_smtp(
                    to=self.to, subject=subject, html_content=body, from_email=smtp.from_email or "tillflow@localhost"
                )
        except Exception as exc:  # an alert that cannot be sent must not hide the task's own failure
            log.error("could not send the failure e-mail for %s.%s: %s", d["dag_id"], d["task_id"], one_line(exc))
