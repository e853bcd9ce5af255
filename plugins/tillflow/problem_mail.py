"""Import notifications to the customer's own addresses (MplusKASSA → Shiftbase's "e-mail address for import
notifications" and "for revenue notifications"). No Airflow import.

After each account's flow, the problems of that run — unmapped employees, a failed call, rejected
records — are compared with what was reported before (``tillflow.notifications``): a problem is mailed
when it is new, when it was last mailed more than a day ago, or when it had cleared and came back; one
plain-text mail per address lists them. A problem that is gone is marked cleared. Sent over SMTP with
the ``smtp_default`` connection's host, port and from-address (the same one the failure e-mails use).

The same table keeps the owners' alerts for accounts that wait for a person (``needs_mapping``,
``auth_failed``): keyed ``owner alert: <flow>: <status>`` per account and owner address, mailed once a
day until the flow succeeds (then cleared; it is new again if it comes back). The two kinds of keys
never clear each other.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from tillflow.masking import one_line

log = logging.getLogger(__name__)

REPEAT_AFTER = timedelta(days=1)


def due_problems(store: Any, account_id: int, address: str, problems: dict[str, str], *, now: datetime) -> list[str]:
    """The keys of ``problems`` to mail now: new, last mailed a day ago or more, or back after clearing."""
    rows = _rows(store, account_id, address)
    return [
        key
        for key in problems
        if key not in rows or rows[key]["cleared_at"] is not None or now - rows[key]["last_sent_at"] >= REPEAT_AFTER
    ]


def _rows(store: Any, account_id: int, address: str) -> dict[str, dict]:
    rows = store.conn.execute(
        "SELECT problem, last_sent_at, cleared_at FROM tillflow.notifications WHERE account_id = %s AND address = %s",
        (account_id, address),
    ).fetchall()
    store.conn.commit()
    return {r["problem"]: r for r in rows}


ALERT_PREFIX = "owner alert: "


def alert_key(flow: str, status: str) -> str:
    """The notifications key of an owners' alert for one flow of an account in ``status``."""
    return f"{ALERT_PREFIX}{flow}: {status}"


def _in_scope(key: str, scope: str | None) -> bool:
    return key.startswith(scope) if scope is not None else not key.startswith(ALERT_PREFIX)


def record(
    store: Any,
    account_id: int,
    address: str,
    sent: list[str],
    current: set[str],
    *,
    now: datetime,
    scope: str | None = None,
) -> None:
    """Remember what was mailed now; a problem no longer present is cleared (it is new if it comes back).

    Only keys in ``scope`` (a key prefix) are cleared; by default the import notifications' keys (every
    key but the owners' alerts)."""
    rows = _rows(store, account_id, address)
    with store.conn.transaction():
        for key in sent:
            store.conn.execute(
                """
                INSERT INTO tillflow.notifications (account_id, address, problem, first_seen_at, last_sent_at)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (account_id, address, problem) DO UPDATE
                   SET last_sent_at = EXCLUDED.last_sent_at, cleared_at = NULL
                """,
                (account_id, address, key, now, now),
            )
        gone = [
            key for key, r in rows.items() if key not in current and r["cleared_at"] is None and _in_scope(key, scope)
        ]
        if gone:
            store.conn.execute(
                "UPDATE tillflow.notifications SET cleared_at = %s WHERE account_id = %s AND address = %s "
                "AND problem = ANY(%s)",
                (now, account_id, address, gone),
            )


def compose(account_name: str, account_key: str, flow: str, window: str, lines: list[str]) -> tuple[str, str]:
    subject = f"tillflow: {account_name} — {flow} import had {len(lines)} problem(s)"
    body = "\n".join(
        [
            "Hello,",
            "",
            f"The {flow} import for {account_name} ({account_key}), business days {window}, had these problems:",
            "",
            *[f"- {line}" for line in lines],
            "",
            "Everything else was imported. Each problem is reported once a day until it is fixed.",
            "Employees missing from the POS list usually lack an authorisation group in MplusKASSA.",
            "",
            "-- tillflow",
        ]
    )
    return subject, body


def send_message(conn: Any, msg: EmailMessage) -> None:
    """Send ``msg`` over the SMTP server of an Airflow connection (ConnectionInfo); From defaults to the
    connection's ``from_email``."""
    if "From" not in msg:
        msg["From"] = conn.extra.get("from_email") or "tillflow@localhost"
    use_ssl = not conn.extra.get("disable_ssl", True)
    cls = smtplib.SMTP_SSL if use_ssl else smtplib.SMTP
    with cls(conn.host or "localhost", conn.port or 25, timeout=float(conn.extra.get("timeout", 30))) as smtp:
        if not use_ssl and not conn.extra.get("disable_tls", False):
            smtp.starttls()
        if conn.login:
            smtp.login(conn.login, conn.password)
        smtp.send_message(msg)


def smtp_sender(conn: Any) -> Callable[[str, str, str], None]:
    """A ``send(to, subject, body)`` over the SMTP server of an Airflow connection (ConnectionInfo)."""

    def send(to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        send_message(conn, msg)

    return send


def notify(
    store: Any,
    account: Any,
    flow: str,
    window: str,
    address: str | None,
    problems: dict[str, str],
    send: Callable[[str, str, str], None],
    *,
    now: datetime,
    secrets: list[str] | None = None,
) -> int:
    """Mail the due problems of one account's flow to ``address``; returns how many were mailed."""
    if not address:
        return 0
    due = due_problems(store, account.id, address, problems, now=now)
    if due:
        lines = [one_line(problems[key], secrets or [], limit=400) for key in due]
        subject, body = compose(account.name, account.key, flow, window, lines)
        try:
            send(address, subject, body)
        except Exception as exc:  # a notification that cannot be sent must not fail the import; tried next run
            log.error("%s: could not send the import notification to %s: %s", account.key, address, one_line(exc))
            due = []
    record(store, account.id, address, due, set(problems), now=now)
    return len(due)
