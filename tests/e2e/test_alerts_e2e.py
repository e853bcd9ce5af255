"""Alerts and progress end to end: ajour_to_planday runs (``dag.test()``) against the sandbox, real SMTP catcher,
real PostgreSQL.

One e-mail per failed run (plain text + HTML), its subject cut at a word, each failed account with its
window, the error in one line and links to the run and to the task log; needs-mapping and refused
credentials mailed once a day per account until fixed; no configured secret in any mail or log line.
A long sync logs its progress while it runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from test_ajour_to_planday import DAG_ID, add_account, planday

pytestmark = pytest.mark.e2e

BASE_URL = "https://airflow.tillflow.example:8443"
WINDOW = {"date_from": "2026-11-17", "date_to": "2026-11-18"}
BAD_PASSWORD = "Zq9-hunter2-wrong-pw"  # distinctive: grepped for in every mail and log


@pytest.fixture
def build(airflow_db, mail_server, monkeypatch):
    from tillflow.factory import build_dag
    from tillflow.specs import load_spec

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    spec = load_spec(Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.yaml")
    return lambda **kw: build_dag(spec.model_copy(update={"retry_delay_seconds": 1, **kw}))


def configured_secrets() -> list[str]:
    """Every secret of every connection configured in the environment (password and secret-like extras)."""
    from tillflow.sources.base import ConnectionInfo

    found = []
    for name, value in os.environ.items():
        if name.startswith("AIRFLOW_CONN_"):
            data = json.loads(value)
            conn = ConnectionInfo(conn_id=name, password=data.get("password") or "", extra=data.get("extra") or {})
            found += [s for s in conn.secrets() if len(s) >= 4]
    return found


_OUTPUT: list[str] = []  # what the tests' processes wrote to stdout/stderr (the task logs of dag.test())


def output(capfd) -> str:
    """Everything written to stdout/stderr so far in this test (kept for the secret check)."""
    out, err = capfd.readouterr()
    _OUTPUT.extend([out, err])
    return "".join(_OUTPUT)


def assert_no_secret(mail, caplog, capfd, *extra_texts: str) -> None:
    secrets = configured_secrets()
    assert BAD_PASSWORD in secrets and len(secrets) >= 4, secrets
    printed = output(capfd)
    assert "[DAG TEST]" in printed or "tillflow" in printed  # the task logs were captured
    home = Path(os.environ["AIRFLOW_HOME"])
    files = [p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file()]
    texts = [m.as_bytes().decode(errors="replace") for m in mail.messages] + [caplog.text, printed, *files]
    texts += list(extra_texts)
    for secret in secrets:
        assert all(secret not in t for t in texts), f"a configured secret leaked: {secret[:3]}…"


def run(dag, conf):
    return dag.test(run_conf=conf)


def parts(msg):
    """(text, html) of a multipart/alternative mail."""
    assert msg.get_content_type() == "multipart/alternative", msg.get_content_type()
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    return text, html


def test_one_mail_per_failed_run_daily_alerts_until_fixed_and_no_secret(store, sandbox, build, mail, caplog, capfd):
    caplog.set_level(logging.INFO)
    _OUTPUT.clear()
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password=BAD_PASSWORD)
    popup = add_account(store, sandbox, "popup_x", company="500x", client="popup")  # lists L5, unmapped
    dag = build(retries=1)

    dr = run(dag, WINDOW)
    assert dr.state == "failed"
    assert len(mail.messages) == 1, [m["subject"] for m in mail.messages]
    msg = mail.messages[0]
    assert msg["To"] == "data-team@tillflow.example"
    assert msg["Subject"] == f"[tillflow] {DAG_ID} failed: 1 account(s): wrong_pw"
    text, html = parts(msg)
    run_link = f"{BASE_URL}/dags/{DAG_ID}/runs/{dr.run_id}"
    log_link = f"{run_link}/tasks/run/mapped/0"
    failed_part, waiting_part = text.split("Waiting for a fix")
    assert "Wrong Pw (wrong_pw), flow revenue, window 2026-11-17..2026-11-18: credentials refused" in failed_part
    (error_line,) = [line for line in failed_part.splitlines() if line.strip().startswith("error:")]
    assert "AuthError" in error_line
    assert f"Run: {run_link}" in text and f"log:   {log_link}" in failed_part
    assert "Popup X (popup_x), flow revenue, window 2026-11-17..2026-11-18: needs mapping" in waiting_part
    assert "L5" in waiting_part and "cafe_nord" not in text
    assert f'href="{log_link}"' in html and f'href="{run_link}"' in html and "wrong_pw" in html and "L5" in html
    assert_no_secret(mail, caplog, capfd, *(r["error"] for r in store.activity()))

    # the same day again: both still wait for a person and were told today — no mail; the refused
    # credentials do not fail the run a second time, the report's log names them
    mail.messages.clear()
    dr2 = run(dag, WINDOW)
    assert mail.messages == []
    assert dr2.state == "success"
    assert {r["account_key"]: r["status"] for r in store.activity(run_id=dr2.run_id)} == {
        "cafe_nord": "success",
        "wrong_pw": "failed",
        "popup_x": "needs_mapping",
    }
    assert "the owners were told today" in output(capfd)

    # a day later the alerts are due again
    store.conn.execute("UPDATE tillflow.notifications SET last_sent_at = last_sent_at - interval '25 hours'")
    store.conn.commit()
    dr3 = run(dag, WINDOW)
    assert dr3.state == "failed" and len(mail.messages) == 1
    assert "wrong_pw" in mail.messages[0]["Subject"] and "popup_x" in parts(mail.messages[0])[0]

    # fixed: the right password and a mapping for L5 — quiet, and the alerts are cleared
    mail.messages.clear()
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong")
    store.set_mapping(popup.id, "location", "L5", None)
    dr4 = run(dag, WINDOW)
    assert dr4.state == "success" and mail.messages == []
    cleared = store.conn.execute(
        "SELECT problem, cleared_at IS NOT NULL AS cleared FROM tillflow.notifications ORDER BY problem"
    ).fetchall()
    store.conn.commit()
    assert cleared and all(r["cleared"] for r in cleared), cleared

    # it comes back: mailed again at once (not a day later)
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password=BAD_PASSWORD)
    dr5 = run(dag, WINDOW)
    assert dr5.state == "failed"
    assert [m["Subject"] for m in mail.messages] == [f"[tillflow] {DAG_ID} failed: 1 account(s): wrong_pw"]
    assert_no_secret(mail, caplog, capfd)


def test_needs_mapping_alone_mails_once_a_day_and_does_not_fail_the_run(store, sandbox, build, mail):
    add_account(store, sandbox, "popup_x", company="500x", client="popup")
    dag = build()
    dr = run(dag, WINDOW)
    assert dr.state == "success"
    assert [m["Subject"] for m in mail.messages] == [f"[tillflow] {DAG_ID} needs attention: 1 account(s): popup_x"]
    text, html = parts(mail.messages[0])
    assert "needs mapping" in text and "L5" in text and f"{BASE_URL}/dags/{DAG_ID}/runs/{dr.run_id}" in text
    assert "L5" in html
    mail.messages.clear()
    assert run(dag, WINDOW).state == "success"
    assert mail.messages == []  # once a day per account, not once per run


def test_a_failed_plan_sends_one_mail_about_the_plan(store, sandbox, build, mail):
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    dr = run(build(), {"accounts": ["nope"]})
    assert dr.state == "failed"
    assert [m["Subject"] for m in mail.messages] == [f"[tillflow] {DAG_ID} failed: the plan task, no account ran"]
    text, html = parts(mail.messages[0])
    assert "nope" in text and f"{BASE_URL}/dags/{DAG_ID}/runs/{dr.run_id}/tasks/plan" in text
    assert f'href="{BASE_URL}/dags/{DAG_ID}/runs/{dr.run_id}/tasks/plan' in html


def test_many_failed_accounts_one_mail_with_a_subject_cut_at_a_word(store, sandbox, build, mail, caplog, capfd):
    _OUTPUT.clear()
    keys = [f"restaurant_number_{i:02d}_with_a_long_key" for i in range(6)]
    for i, key in enumerate(keys):
        add_account(store, sandbox, key, company=f"{7000 + i}", client=f"c{i}", password=f"{BAD_PASSWORD}-{i}")
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord", password=BAD_PASSWORD)  # also in use
    dr = run(build(), WINDOW)
    assert dr.state == "failed"
    assert len(mail.messages) == 1
    subject = mail.messages[0]["Subject"]
    head = f"[tillflow] {DAG_ID} failed: 7 account(s): "
    assert subject.startswith(head) and subject.endswith(" ...") and len(subject) <= 120, subject
    named = subject[len(head) : -4].split(", ")
    assert named and all(name in keys + ["cafe_nord"] for name in named), subject  # whole keys only
    text, _ = parts(mail.messages[0])
    assert all(f"({key}), flow revenue, window 2026-11-17..2026-11-18" in text for key in keys + ["cafe_nord"])
    assert_no_secret(mail, caplog, capfd)


def test_a_long_sync_logs_its_progress_while_it_runs(store, sandbox, build, mail, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("TILLFLOW_PROGRESS_SECONDS", "0.2")
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord")
    dr = run(build(), {"date_from": "2026-09-01", "date_to": "2026-10-27"})  # 57 days, Planday's pace: ~20 s
    assert dr.state == "success"
    lines = [r.getMessage() for r in caplog.records if "account flow(s) done in" in r.getMessage()]
    assert len(lines) >= 2, lines
    assert all(line.startswith("shard 0: ") and "account flow(s) done in" in line for line in lines), lines
    rows = [line for line in lines if " row(s), " in line]
    assert rows and any("/s, ~" in line for line in rows), lines  # rows done / total, rate, time left
    assert any("cafe_nord revenue" in line for line in lines)
    assert len(planday(sandbox, "nord")) > 150
