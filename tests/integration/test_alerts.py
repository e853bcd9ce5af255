"""The run's alert (tillflow.notify) on real PostgreSQL and a real SMTP catcher: the subject cut at a word,
plain text + HTML, links, masking, the owners' daily alerts and the failure callback's choices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tillflow import notify
from tillflow.problem_mail import alert_key, due_problems, record

DAG = "ajour_to_planday"
RUN = "manual__2026-11-25T13:00:00+00:00"
BASE = "https://airflow.example"
SECRET = "pw-Xy7-very-secret"
NOW = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "limit", "want"),
    [
        ("short subject", 120, "short subject"),
        ("alpha beta gamma delta", 16, "alpha beta ..."),  # "gamma" would be cut: dropped whole
        ("alpha beta gamma delta", 20, "alpha beta gamma ..."),  # cut falls on the space after "gamma"
        ("a, bb, ccc, dddd", 12, "a, bb ..."),  # no dangling comma
        ("averyveryverylongword and more", 10, "averyveryverylongword"),  # one word is never cut
    ],
)
def test_cut_at_word_never_cuts_a_word(text, limit, want):
    got = notify.cut_at_word(text, limit)
    assert got == want
    assert len(got) <= limit or " " not in got
    assert all(word in text.split() + ["..."] or word.rstrip(",") in text.split(", ") for word in got.split())


def row(account_id, key, status, error="", shard=0, flow="revenue"):
    return {
        "account_id": account_id,
        "account_key": key,
        "name": key.replace("_", " ").title(),
        "flow": flow,
        "status": status,
        "error": error,
        "shard": shard,
        "window_start": "2026-11-17",
        "window_end": "2026-11-18",
    }


def test_compose_run_text_and_html_with_links_and_no_secret():
    failed = [
        notify.Entry.from_activity(
            row(1, f"account_{i:02d}_with_a_long_key", "failed", f"HTTPError: 500 on /x?password={SECRET}\nline 2"),
            dag_id=DAG,
            run_id=RUN,
            base=BASE,
        )
        for i in range(8)
    ]
    alert = notify.compose_run(to=["ops@x.example"], dag_id=DAG, run_id=RUN, failed=failed, secrets=[SECRET], base=BASE)
    assert alert.subject.startswith(f"[tillflow] {DAG} failed: 1 account(s): ") or alert.subject.startswith(
        f"[tillflow] {DAG} failed: 8 account(s): "
    )
    assert len(alert.subject) <= notify.SUBJECT_LIMIT and alert.subject.endswith(" ...")
    msg = alert.message()
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert f"Run: {BASE}/dags/{DAG}/runs/{RUN}" in text
    assert f"log:   {BASE}/dags/{DAG}/runs/{RUN}/tasks/run/mapped/0" in text
    assert "line 2" not in text  # the error in one line
    assert f'<a href="{BASE}/dags/{DAG}/runs/{RUN}/tasks/run/mapped/0">' in html
    assert SECRET not in msg.as_string() and "***" in text


def test_task_url_and_run_url_and_base_url(monkeypatch):
    assert notify.task_url(DAG, RUN, "plan", -1, BASE) == f"{BASE}/dags/{DAG}/runs/{RUN}/tasks/plan"
    assert notify.task_url(DAG, "a b#c", "run", 3, BASE) == f"{BASE}/dags/{DAG}/runs/a%20b%23c/tasks/run/mapped/3"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://ui.example/airflow/")
    assert notify.run_url(DAG, RUN) == f"https://ui.example/airflow/dags/{DAG}/runs/{RUN}"
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    assert notify.base_url() == notify.DEFAULT_BASE_URL


def _account(store, key):
    from tillflow.specs import parse_settings

    return store.upsert_account(
        DAG, key, name=key.title(), conn_id=f"ajour_{key}", settings=parse_settings({"timezone": "Europe/Copenhagen"})
    )


def test_owners_alert_once_a_day_until_fixed_and_import_notifications_stay_apart(store):
    a, b, c = _account(store, "wrong"), _account(store, "popup"), _account(store, "broken")
    store.set_status(a.id, "auth_failed", "AuthError", flow="revenue")
    store.set_status(c.id, "failing", "HTTPError: 500", flow="revenue")
    rows = [
        row(a.id, "wrong", "failed", "AuthError: refused"),
        row(b.id, "popup", "needs_mapping", "unmapped location(s): L5"),
        row(c.id, "broken", "failed", "HTTPError: 500"),
    ]
    owners = ["ops@x.example", "cto@x.example"]
    # an import notification to the same address must survive the owners' alerts' bookkeeping (and vice versa)
    record(store, b.id, "ops@x.example", ["unmapped location L5"], {"unmapped location L5"}, now=NOW)

    chosen = notify.select_run_alert(store, owners=owners, dag_id=DAG, run_id=RUN, rows=rows, now=NOW, base=BASE)
    assert [r["account_key"] for r in chosen.failing] == ["wrong", "broken"]
    assert chosen.due == {(a.id, "revenue"): "auth_failed", (b.id, "revenue"): "needs_mapping"}
    assert chosen.alert.subject == f"[tillflow] {DAG} failed: 2 account(s): wrong, broken"
    text = chosen.alert.text
    assert "credentials refused (auth_failed)" in text and "popup" in text.split("Waiting for a fix")[1]
    notify.record_run_alert(store, owners=owners, rows=rows, chosen=chosen, sent=True, now=NOW)

    # an hour later: told today — the refused credentials are quiet and no longer fail the run; the other failure does
    later = notify.select_run_alert(
        store, owners=owners, dag_id=DAG, run_id=RUN, rows=rows, now=NOW + timedelta(hours=1), base=BASE
    )
    assert [r["account_key"] for r in later.quiet] == ["wrong"] and later.due == {}
    assert [r["account_key"] for r in later.failing] == ["broken"]
    assert "popup" not in later.alert.text and "wrong" not in later.alert.subject

    # a day later: due again
    tomorrow = notify.select_run_alert(
        store, owners=owners, dag_id=DAG, run_id=RUN, rows=rows, now=NOW + timedelta(days=1), base=BASE
    )
    assert set(tomorrow.due) == {(a.id, "revenue"), (b.id, "revenue")}

    # fixed: the flows succeed → cleared; the import notification's key is untouched
    store.set_status(a.id, "ok", "", flow="revenue")
    fixed = [row(a.id, "wrong", "success"), row(b.id, "popup", "success")]
    none = notify.select_run_alert(store, owners=owners, dag_id=DAG, run_id=RUN, rows=fixed, now=NOW, base=BASE)
    assert none.alert is None and none.failing == []
    notify.record_run_alert(store, owners=owners, rows=fixed, chosen=none, sent=False, now=NOW + timedelta(hours=2))
    key = alert_key("revenue", "needs_mapping")
    assert due_problems(store, b.id, "ops@x.example", {key: key}, now=NOW + timedelta(hours=3)) == [key]  # new again
    assert due_problems(store, b.id, "ops@x.example", {"unmapped location L5": ""}, now=NOW + timedelta(hours=3)) == []


def test_send_is_one_multipart_mail_over_smtp_default(mail):
    alert = notify.compose_task(
        to=["ops@x.example"],
        dag_id=DAG,
        run_id=RUN,
        task_id="plan",
        map_index=-1,
        try_number=2,
        error=f"ConfigError: token={SECRET} refused",
        secrets=[SECRET],
        base=BASE,
    )
    assert notify.send(alert) is True
    (msg,) = mail.messages
    assert msg["Subject"] == f"[tillflow] {DAG} failed: the plan task, no account ran"
    assert msg["From"] == "tillflow@localhost" and msg["To"] == "ops@x.example"
    assert f"Task log: {BASE}/dags/{DAG}/runs/{RUN}/tasks/plan" in msg.get_body(("plain",)).get_content()
    assert SECRET not in msg.as_string()


class _Ti:
    dag_id, task_id, run_id, try_number, map_index = DAG, "report", RUN, 1, -1


class _Task:
    task_id = "report"
    known_secrets = [SECRET]


def test_the_failure_callback_skips_a_mailed_failure_and_resends_an_unsent_one(mail):
    email = notify.FailureEmail(to=["ops@x.example"])
    context = {"ti": _Ti(), "task": _Task(), "run_id": RUN}
    email.notify({**context, "exception": notify.RunFailed("1 account(s) failed", alerted=True)})
    assert mail.messages == []  # the report already sent the run's mail

    alert = notify.compose_run(
        to=["ops@x.example"],
        dag_id=DAG,
        run_id=RUN,
        failed=[notify.Entry.from_activity(row(1, "wrong", "failed", "AuthError"), dag_id=DAG, run_id=RUN)],
    )
    email.notify({**context, "exception": notify.RunFailed("1 account(s) failed", alert=alert, alerted=False)})
    assert [m["Subject"] for m in mail.messages] == [f"[tillflow] {DAG} failed: 1 account(s): wrong"]

    mail.messages.clear()
    email.notify({**context, "exception": RuntimeError(f"database down, password={SECRET}")})
    (msg,) = mail.messages
    assert msg["Subject"] == f"[tillflow] {DAG} failed: the report task, see the task log"
    assert "RuntimeError: database down" in msg.get_body(("plain",)).get_content()
    assert SECRET not in msg.as_string()
