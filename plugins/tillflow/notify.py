"""Alert e-mails to the integration's owners, sent over the ``smtp_default`` connection: at most one per run.

- ``report`` sends the run's one mail (:func:`compose_run` → :func:`send`): every failed account with its
  flow, window, the error in one masked line and links to the run and to the log of the task instance
  that ran it, plus the accounts that wait for a person (``needs_mapping``, ``auth_failed``), each of
  these once a day per account until fixed. It then fails the run with :class:`RunFailed`, marked as
  already alerted.
- :class:`FailureEmail`, the task-level ``on_failure_callback`` of ``plan`` and ``report``, mails a task
  that failed by itself (the plan, or a report that could not finish); it skips a failure whose mail was
  already sent (:attr:`RunFailed.alerted`) and sends the report's own mail again when that send failed.

Every mail is plain text with an HTML alternative; the subject reads ``[tillflow] <dag> failed: <n>
account(s): <keys>``, cut at a word (never mid-word) with `` ...`` when long. Everything in it goes through the masking
with the connections' secrets. Task-level, not DAG-level (DAG-level notifiers break ``dag.test()``): it
runs in the task's own process, under the real scheduler and in ``dag.test()`` alike.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from tillflow.http import mask
from tillflow.masking import one_line

log = logging.getLogger(__name__)

SUBJECT_LIMIT = 120
DEFAULT_BASE_URL = "http://localhost:8080"


# ---------------------------------------------------------------------------------------- pieces


def cut_at_word(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters at a space, with `` ...``; never in the middle of a word
    (a first word longer than ``limit`` stays whole). ASCII only, so the header reads back as written."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    room = max(1, limit - len(" ..."))
    head = text[:room]
    if text[room] != " ":  # the cut falls inside a word: go back to the space before it
        if " " not in head:
            return text.split(" ", 1)[0]
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:-") + " ..."


def base_url() -> str:
    """``[api] base_url``: the address of the Airflow UI the links point at."""
    from airflow.configuration import conf

    url = conf.get("api", "base_url", fallback=None) or DEFAULT_BASE_URL
    if "://" not in url:  # a bare path (behind a proxy): the UI's default host
        url = DEFAULT_BASE_URL.rstrip("/") + "/" + url.lstrip("/")
    return url.rstrip("/")


def _seg(value: str) -> str:
    return quote(str(value), safe=":+@=,~")


def run_url(dag_id: str, run_id: str, base: str | None = None) -> str:
    """The run's page in the Airflow UI (``/dags/<dag>/runs/<run>``)."""
    return f"{base or base_url()}/dags/{_seg(dag_id)}/runs/{_seg(run_id)}"


def task_url(dag_id: str, run_id: str, task_id: str, map_index: int | None = None, base: str | None = None) -> str:
    """A task instance's page (its log) in the Airflow UI; ``/mapped/<n>`` for a mapped instance."""
    url = f"{run_url(dag_id, run_id, base)}/tasks/{_seg(task_id)}"
    return f"{url}/mapped/{int(map_index)}" if map_index is not None and int(map_index) >= 0 else url


@dataclass
class Entry:
    """One account flow in an alert."""

    account: str  # "Name (key)"
    flow: str
    window: str
    status: str  # failed | auth_failed | needs_mapping | …
    error: str
    log_url: str

    @classmethod
    def from_activity(
        cls, row: dict[str, Any], *, dag_id: str, run_id: str, status: str | None = None, base: str | None = None
    ) -> Entry:
        shard = row.get("shard")
        return cls(
            account=f"{row['name']} ({row['account_key']})",
            flow=str(row.get("flow") or "-"),
            window=f"{row.get('window_start')}..{row.get('window_end')}",
            status=status or str(row.get("status") or "failed"),
            error=str(row.get("error") or "") or "see the task log",
            log_url=task_url(dag_id, run_id, "run", shard if shard is not None else None, base)
            if shard is not None
            else run_url(dag_id, run_id, base),
        )


@dataclass
class Alert:
    """A composed alert: plain text with an HTML alternative."""

    to: list[str]
    subject: str
    text: str
    html: str
    secrets: list[str] = field(default_factory=list, repr=False)

    def message(self) -> EmailMessage:
        msg = EmailMessage()
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = mask(self.subject, self.secrets)
        msg.set_content(mask(self.text, self.secrets))
        msg.add_alternative(mask(self.html, self.secrets), subtype="html")
        return msg


_STATUS_TEXT = {
    "failed": "failed",
    "auth_failed": "credentials refused (auth_failed)",
    "needs_mapping": "needs mapping",
}
_ATTENTION_NOTE = "Reported once a day per account until it is fixed; it does not fail the run by itself afterwards."


def _lines(entries: list[Entry], secrets: list[str]) -> list[str]:
    out = []
    for e in entries:
        out += [
            f"- {e.account}, flow {e.flow}, window {e.window}: {_STATUS_TEXT.get(e.status, e.status)}",
            f"  error: {one_line(e.error, secrets, limit=400)}",
            f"  log:   {e.log_url}",
        ]
    return out


def _table(entries: list[Entry], secrets: list[str]) -> str:
    head = "".join(f"<th align=left>{h}</th>" for h in ("account", "flow", "window", "status", "error", "log"))
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(e.account)}</td><td>{html.escape(e.flow)}</td><td>{html.escape(e.window)}</td>"
        f"<td>{html.escape(_STATUS_TEXT.get(e.status, e.status))}</td>"
        f"<td>{html.escape(one_line(e.error, secrets, limit=400))}</td>"
        f'<td><a href="{html.escape(e.log_url, quote=True)}">task log</a></td>'
        "</tr>"
        for e in entries
    )
    return f"<table border=1 cellpadding=4 cellspacing=0><tr>{head}</tr>{rows}</table>"


def _keys(entries: list[Entry]) -> str:
    keys = list(dict.fromkeys(e.account.rsplit("(", 1)[-1].rstrip(")") for e in entries))
    return ", ".join(keys)


def compose_run(
    *,
    to: Iterable[str],
    dag_id: str,
    run_id: str,
    failed: list[Entry],
    attention: list[Entry] | None = None,
    secrets: Iterable[str] = (),
    base: str | None = None,
) -> Alert:
    """The run's one mail: the failed account flows (they fail the run) and the ones waiting for a person."""
    attention = list(attention or [])
    secrets = [s for s in secrets if s]
    link = run_url(dag_id, run_id, base)
    n_failed = len({e.account for e in failed})
    if failed:
        subject = f"[tillflow] {dag_id} failed: {n_failed} account(s): {_keys(failed)}"
        intro = f"The {dag_id} run {run_id} failed: {n_failed} account(s) failed."
    else:
        n = len({e.account for e in attention})
        subject = f"[tillflow] {dag_id} needs attention: {n} account(s): {_keys(attention)}"
        intro = f"The {dag_id} run {run_id} finished, but {n} account(s) wait for a fix."
    text = [intro, "", f"Run: {link}", ""]
    body = [
        f"<p>{html.escape(intro)}</p>",
        f'<p>Run: <a href="{html.escape(link, quote=True)}">{html.escape(link)}</a></p>',
    ]
    if failed:
        text += ["Failed:", *_lines(failed, secrets), ""]
        body += ["<h3>Failed</h3>", _table(failed, secrets)]
    if attention:
        text += ["Waiting for a fix (mapping or credentials):", *_lines(attention, secrets), _ATTENTION_NOTE, ""]
        body += ["<h3>Waiting for a fix (mapping or credentials)</h3>", _table(attention, secrets)]
        body.append(f"<p>{html.escape(_ATTENTION_NOTE)}</p>")
    runbook = (
        "Runbook: the DAG's docs in the Airflow UI; an account's state: python -m tillflow accounts show <key>; "
        "mappings: python -m tillflow mappings list <key>."
    )
    text += [runbook, "", "-- tillflow"]
    body += [f"<p>{html.escape(runbook)}</p>", "<p>-- tillflow</p>"]
    return Alert(
        to=list(to),
        subject=cut_at_word(one_line(subject, secrets, limit=10_000)),
        text="\n".join(text) + "\n",
        html="<html><body>" + "\n".join(body) + "</body></html>",
        secrets=secrets,
    )


def compose_task(
    *,
    to: Iterable[str],
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None,
    try_number: Any,
    error: str,
    secrets: Iterable[str] = (),
    base: str | None = None,
) -> Alert:
    """A task that failed by itself (the plan; a report that could not finish)."""
    secrets = [s for s in secrets if s]
    link, log_link = run_url(dag_id, run_id, base), task_url(dag_id, run_id, task_id, map_index, base)
    error = one_line(error, secrets, limit=400)
    what = "no account ran" if task_id == "plan" else "see the task log"
    subject = f"[tillflow] {dag_id} failed: the {task_id} task, {what}"
    lines = [
        f"The {dag_id} run {run_id} failed in its {task_id} task (try {try_number}).",
        f"error: {error}",
        "",
        f"Run:      {link}",
        f"Task log: {log_link}",
        "",
        "Runbook: the DAG's docs in the Airflow UI.",
        "",
        "-- tillflow",
    ]
    body = (
        f"<p>The {html.escape(dag_id)} run {html.escape(run_id)} failed in its <b>{html.escape(task_id)}</b> task "
        f"(try {html.escape(str(try_number))}).</p><p>error: <code>{html.escape(error)}</code></p>"
        f'<p>Run: <a href="{html.escape(link, quote=True)}">{html.escape(link)}</a><br>'
        f'Task log: <a href="{html.escape(log_link, quote=True)}">{html.escape(log_link)}</a></p>'
        "<p>Runbook: the DAG's docs in the Airflow UI.</p><p>-- tillflow</p>"
    )
    return Alert(
        to=list(to),
        subject=cut_at_word(subject),
        text="\n".join(lines) + "\n",
        html=f"<html><body>{body}</body></html>",
        secrets=secrets,
    )


def smtp_connection(smtp_conn_id: str = "smtp_default") -> Any:
    """The SMTP connection as plain data (ConnectionInfo)."""
    from airflow.sdk import BaseHook

    from tillflow.sources.base import ConnectionInfo

    return ConnectionInfo.from_airflow(smtp_conn_id, BaseHook.get_connection(smtp_conn_id))


def send(alert: Alert, smtp_conn_id: str = "smtp_default") -> bool:
    """Send ``alert``; False (logged, masked) when it could not be sent — an alert never hides the failure."""
    from tillflow.problem_mail import send_message

    try:
        conn = smtp_connection(smtp_conn_id)
        send_message(conn, alert.message())
    except Exception as exc:
        log.error("could not send the alert %r: %s", alert.subject, one_line(exc, alert.secrets))
        return False
    log.info("alert sent to %s: %s", ", ".join(alert.to), mask(alert.subject, alert.secrets))
    return True


# ---------------------------------------------------------------------------------------- Airflow


class RunFailed(AirflowFailException):
    """``report``'s failure: account flows failed. ``alerted``: its mail is sent; else the callback sends it."""

    def __init__(self, message: str, *, alert: Alert | None = None, alerted: bool = False) -> None:
        super().__init__(message)
        self.alert = alert
        self.alerted = alerted


class FailureEmail(BaseNotifier):
    """E-mail the integration's owners when a task fails by itself (``plan``, ``report``).

    :param to: owners' addresses (the spec's ``owners``)
    :param smtp_conn_id: Airflow connection of the SMTP server
    """

    template_fields = ()

    def __init__(self, *, to: list[str], smtp_conn_id: str = "smtp_default"):
        super().__init__()
        self.to = list(to)
        self.smtp_conn_id = smtp_conn_id

    @staticmethod
    def describe(context: dict[str, Any]) -> dict[str, Any]:
        ti = context.get("ti") or context.get("task_instance")
        task = context.get("task")
        secrets = list(getattr(task, "known_secrets", ()) or ())
        exc = context.get("exception")
        if exc is None:
            error = "unknown error (see the task log)"
        elif type(exc).__name__ in ("AirflowFailException", "AirflowException", "RunFailed"):
            error = one_line(str(exc), secrets)  # our own wrapper: its text already names the cause
        else:
            error = one_line(exc, secrets)
        map_index = getattr(ti, "map_index", -1)
        return {
            "dag_id": getattr(ti, "dag_id", "") or getattr(context.get("dag"), "dag_id", ""),
            "task_id": getattr(ti, "task_id", "") or getattr(task, "task_id", ""),
            "run_id": str(context.get("run_id") or getattr(ti, "run_id", "")),
            "try_number": getattr(ti, "try_number", ""),
            "map_index": map_index if isinstance(map_index, int) else -1,
            "error": error,
            "secrets": secrets,
        }

    def notify(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if getattr(exc, "alerted", False):
            log.info("the run's alert was already sent by the task itself")
            return
        if isinstance(getattr(exc, "alert", None), Alert):  # report composed its mail but could not send it
            send(exc.alert, self.smtp_conn_id)
            return
        d = self.describe(context)
        try:
            alert = compose_task(
                to=self.to,
                dag_id=d["dag_id"],
                run_id=d["run_id"],
                task_id=d["task_id"],
                map_index=d["map_index"],
                try_number=d["try_number"],
                error=d["error"],
                secrets=d["secrets"],
            )
        except Exception as err:
            log.error("could not compose the failure e-mail for %s.%s: %s", d["dag_id"], d["task_id"], one_line(err))
            return
        send(alert, self.smtp_conn_id)


# ---------------------------------------------------------------------------------------- the run's alert


@dataclass
class RunAlert:
    """What ``report`` mails and fails for, from the run's activity rows."""

    alert: Alert | None
    failing: list[dict[str, Any]]  # rows that fail the run
    quiet: list[dict[str, Any]]  # auth_failed rows already alerted today: logged, they do not fail the run again
    due: dict[tuple[int, str], str]  # (account id, flow) → status whose daily owners' alert this mail carries


def waiting_status(row: dict[str, Any], states: dict[tuple[int, str], dict[str, Any]]) -> str | None:
    """``needs_mapping`` or ``auth_failed`` when the row's account flow waits for a person, else None."""
    if row["status"] == "needs_mapping":
        return "needs_mapping"
    state = states.get((row["account_id"], row["flow"])) or {}
    if row["status"] == "failed" and state.get("status") == "auth_failed":
        return "auth_failed"
    return None


def select_run_alert(
    store: Any,
    *,
    owners: list[str],
    dag_id: str,
    run_id: str,
    rows: list[dict[str, Any]],
    now: Any,
    secrets: Iterable[str] = (),
    base: str | None = None,
) -> RunAlert:
    """Decide the run's one mail. Failed account flows fail the run and are listed; one whose credentials
    were refused (``auth_failed``) is listed once a day per account until fixed and, the rest of that day,
    only logged; ``needs_mapping`` never fails the run and is listed once a day per account until fixed."""
    from tillflow.problem_mail import alert_key, due_problems

    states = store.flow_states({r["account_id"] for r in rows}) if rows else {}
    failing, quiet, attention = [], [], []
    due: dict[tuple[int, str], str] = {}
    for r in rows:
        status = waiting_status(r, states)
        if status:
            key = alert_key(r["flow"], status)
            if any(due_problems(store, r["account_id"], owner, {key: key}, now=now) for owner in owners):
                due[(r["account_id"], r["flow"])] = status
            else:  # already told today: the report's log names it, the mail does not
                if status == "auth_failed":
                    quiet.append(r)
                continue
        if r["status"] == "failed":
            failing.append(r)
        elif status:
            attention.append(r)
    alert = None
    if failing or attention:
        entry = lambda r: Entry.from_activity(  # noqa: E731
            r, dag_id=dag_id, run_id=run_id, status=due.get((r["account_id"], r["flow"])), base=base
        )
        alert = compose_run(
            to=owners,
            dag_id=dag_id,
            run_id=run_id,
            failed=[entry(r) for r in failing],
            attention=[entry(r) for r in attention],
            secrets=secrets,
            base=base,
        )
    return RunAlert(alert, failing, quiet, due)


def record_run_alert(
    store: Any, *, owners: list[str], rows: list[dict[str, Any]], chosen: RunAlert, sent: bool, now: Any
) -> None:
    """Remember the owners' alerts just sent; clear those of account flows that no longer wait for a person."""
    from tillflow.problem_mail import ALERT_PREFIX, alert_key, record

    states = store.flow_states({r["account_id"] for r in rows}) if rows else {}
    for r in rows:
        flow_scope = f"{ALERT_PREFIX}{r['flow']}: "
        status = waiting_status(r, states)
        current = {alert_key(r["flow"], status)} if status else set()
        status_due = chosen.due.get((r["account_id"], r["flow"]))
        for owner in owners:
            sent_now = [alert_key(r["flow"], status_due)] if sent and status_due else []
            record(store, r["account_id"], owner, sent_now, current, now=now, scope=flow_scope)
