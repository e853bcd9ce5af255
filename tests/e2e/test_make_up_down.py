"""`make up` then `make down` on an isolated TILLFLOW_HOME: the UI answers, a run task is scheduled in its
vendor's pool and mails reach the catcher on MAIL_PORT; afterwards no process of that home is left and every
port it used is free again (`make down` used to leave Airflow running)."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import sqlite3
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from conftest import free_port
from tillflow.pools import POOLS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _session(sid: int) -> set[int]:
    """Every process in session ``sid`` (make up starts airflow standalone as a session leader)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            pids.add(int(stat.parent.name))
    return pids


def _processes_of(home: Path) -> dict[int, str]:
    """Processes whose environment or command line names ``home`` (all that make up starts inherit it)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(home).encode() in environ or str(home).encode() in cmdline:
            found[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
    return found


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(2)
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n--- airflow.log tail ---\n{tail}")


def test_make_down_stops_everything_make_up_started(tmp_path):
    home = tmp_path / "tillflow"
    ports = {
        "AIRFLOW_PORT": free_port(),
        "MAIL_PORT": free_port(),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": free_port(),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": free_port(),
    }
    # the test session's own Airflow home, database and make flags stay out of it
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "TILLFLOW_")) and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update({"TILLFLOW_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow"), "UP_TIMEOUT": "240"})
    env.update({k: str(v) for k, v in ports.items()})

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)

    def airflow(*args: str) -> subprocess.CompletedProcess:
        cli_env = {
            **env,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "PYTHONPATH": str(ROOT / "plugins"),
        }
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "airflow"), *args], env=cli_env, capture_output=True, text=True, timeout=120
        )

    log = home / "airflow.log"
    sandbox_ports: list[int] = []
    sid = 0
    try:
        up = make("up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        url = f"http://localhost:{ports['AIRFLOW_PORT']}"
        assert f"UI: {url}  login: admin / admin" in up.stdout, up.stdout[-2000:]
        sandbox = json.loads((home / "sandbox.json").read_text())
        sandbox_ports = [int(v.rsplit(":", 1)[1]) for k, v in sandbox.items() if k.endswith("_url")]
        sid = int((home / "airflow.pid").read_text())
        assert len(_session(sid)) >= 4, "standalone runs scheduler, dag-processor, api-server and triggerer"

        # make up returns once the UI answers
        health = requests.get(f"{url}/api/v2/monitor/health", timeout=10)
        assert health.status_code == 200 and health.json()["metadatabase"]["status"] == "healthy"

        # pools created before the scheduler started, smtp_default on MAIL_PORT
        with sqlite3.connect(home / "airflow" / "airflow.db") as db:
            pools = dict(db.execute("SELECT pool, slots FROM slot_pool").fetchall())
            smtp = db.execute("SELECT host, port FROM connection WHERE conn_id = 'smtp_default'").fetchone()
        assert {p.name: p.slots for p in POOLS.values()}.items() <= pools.items()
        assert smtp == ("127.0.0.1", ports["MAIL_PORT"])
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = "make-up-check", "tillflow@localhost", "ops@example.com"
        msg.set_content("hello")
        with smtplib.SMTP("127.0.0.1", ports["MAIL_PORT"], timeout=10) as s:
            s.send_message(msg)
        _wait(lambda: "make-up-check" in (home / "mail.log").read_text(), 20, "the mail in mail.log", log)

        # a run task in its vendor's pool is scheduled (a missing pool would leave it queued forever)
        _wait(lambda: "ajour_to_planday" in airflow("dags", "list", "-o", "plain").stdout, 120, "the DAGs", log)
        assert airflow("dags", "unpause", "ajour_to_planday").returncode == 0
        trigger = airflow("dags", "trigger", "ajour_to_planday", "-r", "make_up_check")
        assert trigger.returncode == 0, trigger.stderr[-2000:]

        def run_tasks():
            with sqlite3.connect(home / "airflow" / "airflow.db") as db:
                rows = db.execute(
                    "SELECT pool, state FROM task_instance WHERE run_id = 'make_up_check' AND task_id = 'run'"
                ).fetchall()
            return rows if rows and all(state in ("success", "failed") for _pool, state in rows) else None

        rows = _wait(run_tasks, 150, "the run task of the manual run to finish", log)
        assert {pool for pool, _state in rows} == {"tillflow_planday"}
        assert {state for _pool, state in rows} == {"success"}, rows
    finally:
        down = make("down")
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert "airflow stopped" in down.stdout, down.stdout
    assert not (home / "airflow.pid").exists() and not (home / "mail.pid").exists()

    assert _session(sid) == set(), "airflow standalone's session is empty"
    assert _processes_of(home) == {}, "every process make up started is gone"
    busy = [p for p in [*ports.values(), *sandbox_ports] if _listening(p)]
    assert not busy, f"ports still in use after make down: {busy}"
