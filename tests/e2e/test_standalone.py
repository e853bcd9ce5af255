"""Under the real scheduler: `airflow standalone` runs a backfill of ajour_to_planday.

This is the path `dag.test()` can hide problems on: tasks run in worker processes through the
Execution API (no metadata-DB access from tasks), connections come from the secrets backends, and
the failure e-mail is sent from the worker. One backfill tick at 05:00 Copenhagen on Tuesday
2026-11-17 runs the two accounts due at 05:00, for their lookback windows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import requests
from conftest import free_port
from test_ajour_to_planday import DAG_ID, add_account, expected, planday

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _quiet_hours() -> tuple[int, int]:
    """Two run hours (Copenhagen) that the scheduler's own live tick cannot reach while the test runs: once the DAG
    is unpaused, Airflow also runs the latest hourly tick, and accounts due at that hour would run for today too."""
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo("Europe/Copenhagen")).hour
    busy = {now, (now + 1) % 24}
    first = next(h for h in (5, 6, 7, 8) if h not in busy)
    return first, next(h for h in (9, 10, 11, 12) if h not in busy)


RUN_HOUR, LATE_HOUR = _quiet_hours()
# the backfill tick at RUN_HOUR in Copenhagen on Tuesday 2026-11-17 (UTC+1)
RUN_ID = f"backfill__2026-11-17T{RUN_HOUR - 1:02d}:00:00+00:00"


@pytest.fixture
def standalone(tmp_path, pg_url, mail_server):
    """Returns start(): launches `airflow standalone` with the environment as it is then (connections
    given as AIRFLOW_CONN_* variables must be set before), and an `airflow …` CLI runner."""
    home = tmp_path / "airflow"
    home.mkdir()
    log_path = tmp_path / "standalone.log"
    procs: list[subprocess.Popen] = []
    env: dict[str, str] = {}

    def start():
        port = free_port()
        env.update(
            {
                **os.environ,
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__PARALLELISM": "2",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "PYTHONPATH": os.pathsep.join(sys.path),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "airflow", "standalone"],
                env=env,
                stdout=log_path.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=120
        )

    def stop():
        """Stop everything standalone runs (scheduler, workers, API server, DAG processor)."""
        while procs:
            proc = procs.pop()
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    start.stop = stop
    try:
        yield start, airflow, log_path, home
    finally:
        stop()


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(2)
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n--- standalone log tail ---\n{tail}")


def test_backfill_under_the_real_scheduler(store, sandbox, mail, standalone):
    start, airflow, log, home = standalone
    at, late = f"{RUN_HOUR:02d}:00", f"{LATE_HOUR:02d}:00"
    add_account(store, sandbox, "cafe_nord", company="1001", client="nord", run_time=at)
    add_account(store, sandbox, "wrong_pw", company="2002", client="wrong", password="hunter2-secret", run_time=at)
    add_account(store, sandbox, "late", company="3003", client="late", run_time=late)  # not due at RUN_HOUR
    start()  # the scheduler's workers read the connections from the environment (a secrets backend)
    _wait(lambda: DAG_ID in airflow("dags", "list", "-o", "plain").stdout, 180, "the DAG to be parsed", log)
    unpaused = airflow("dags", "unpause", DAG_ID)
    assert unpaused.returncode == 0, unpaused.stderr[-2000:]
    created = airflow(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        f"2026-11-17T{RUN_HOUR - 2:02d}:30:00+00:00",
        "--to-date",
        f"2026-11-17T{RUN_HOUR - 1:02d}:30:00+00:00",
    )
    assert created.returncode == 0, created.stderr[-2000:]

    def finished():
        rows = {r["account_key"]: r for r in store.activity(run_id=RUN_ID)}
        report_mail = [m for m in mail.messages if f"{DAG_ID} failed: " in m["subject"]]
        return rows if len(rows) == 2 and all(r["finished_at"] for r in rows.values()) and report_mail else None

    rows = _wait(finished, 300, "the backfill run to finish and its report to be mailed", log)
    assert rows["cafe_nord"]["status"] == "success"
    assert (rows["cafe_nord"]["window_start"], rows["cafe_nord"]["window_end"]) == (
        date(2026, 11, 14),
        date(2026, 11, 16),
    )
    want = expected(sandbox, "1001", "2026-11-14", "2026-11-16")
    assert {k: v[0] for k, v in planday(sandbox, "nord").items()} == want
    assert rows["wrong_pw"]["status"] == "failed" and "credentials refused" in rows["wrong_pw"]["error"]
    assert planday(sandbox, "late") == {}

    subjects = [m["subject"] for m in mail.messages]
    assert subjects == [f"[tillflow] {DAG_ID} failed: 1 account(s): wrong_pw"], subjects  # one e-mail per run
    body = mail.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "Wrong Pw (wrong_pw), flow revenue, window 2026-11-14..2026-11-16" in body
    assert f"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/run/mapped/" in body
    assert all("hunter2" not in m.as_string() for m in mail.messages)
    task_logs = [p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file()]
    assert any("credentials refused" in text for text in task_logs), "the run task's log tells why"
    assert all("hunter2" not in text for text in [log.read_text(), *task_logs])
    calls = [r for r in requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json() if r["status"] == 401]
    assert len(calls) == 1, "refused credentials are not retried"
    assert json.dumps(rows["wrong_pw"]["error"]).count("hunter2") == 0


MINUTELY = """
integration: ajour_to_planday_minutely
description: ajour_to_planday on a one-minute tick (tests only)
source: ajour
target: planday
timezone: UTC
owners: [data-team@tillflow.example]
retries: 1
retry_delay_seconds: 5
flows:
  - name: revenue
    kind: revenue
    schedule: "* * * * *"
    due: account_run_time
    lookback_days: {default: 1, min: 1, max: 31}
"""


def test_a_run_time_missed_while_the_scheduler_was_down_runs_once_after_restart(
    store, sandbox, mail, standalone, tmp_path, monkeypatch
):
    """Stop the scheduler across an account's run time, start it again: the account runs once, late."""
    from datetime import UTC, datetime, timedelta

    from tillflow.specs import parse_settings

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ajour_to_planday_minutely.yaml").write_text(MINUTELY)
    (dags / "ajour_to_planday_minutely.py").write_text(
        "# airflow dag\nfrom pathlib import Path\nfrom tillflow.factory import build_dags\n"
        "globals().update(build_dags(Path(__file__).with_suffix('.yaml'), doc_md='Runbook: tests only'))\n"
    )
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    dag_id = "ajour_to_planday_minutely"
    account = add_account(store, sandbox, "cafe_nord", company="1001", client="nord", run_time="00:00", timezone="UTC")
    store.conn.execute("UPDATE tillflow.accounts SET integration = %s WHERE id = %s", (dag_id, account.id))
    store.conn.commit()
    start, airflow, log, _home = standalone
    start()
    _wait(lambda: dag_id in airflow("dags", "list", "-o", "plain").stdout, 180, "the DAG to be parsed", log)
    assert airflow("dags", "unpause", dag_id).returncode == 0
    _wait(
        lambda: (
            store.activity() == [] and airflow("dags", "list-runs", dag_id, "-o", "json").stdout.count("success") >= 1
        ),
        150,
        "a first tick that runs nobody",
        log,
    )
    start.stop()  # the scheduler is down from here

    due = (datetime.now(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
    store.update_settings(
        account.id, parse_settings({**account.settings.to_json(), "run_time": f"{due:%H:%M}", "timezone": "UTC"})
    )
    while datetime.now(UTC) < due + timedelta(seconds=75):  # the run time passes, and the next tick too
        time.sleep(5)
    assert store.activity() == []
    restarted_at = datetime.now(UTC)
    start()

    def ran():
        rows = [r for r in store.activity() if r["account_id"] == account.id]
        return rows if rows and all(r["finished_at"] for r in rows) else None

    rows = _wait(ran, 240, "the missed run time to be caught up", log)
    runs_after = lambda: airflow("dags", "list-runs", dag_id, "-o", "json").stdout  # noqa: E731
    _wait(lambda: runs_after().count("success") >= 3, 180, "two more ticks after the catch-up", log)
    rows = [r for r in store.activity() if r["account_id"] == account.id]
    assert len(rows) == 1, rows  # once: not again at the ticks after it
    (row,) = rows
    assert row["status"] == "success" and row["due_at"] == due
    # served after the restart — by the first tick the scheduler runs then (its own missed tick, which
    # Airflow may still create from the next run it had stored, or a later one): either way once
    assert row["started_at"] > restarted_at
    state = store.flow_state(account.id, "revenue")
    assert state["last_due_at"] == due and state["status"] == "ok"
    assert planday(sandbox, "nord")
