"""Rotating refresh tokens kept across processes (tillflow.tokens): encrypted, compare-and-swap; and the
Pennylane client with a strict stand-in (every refresh token single-use, the seed too) across processes."""

from __future__ import annotations

import pytest
import requests
from cryptography.fernet import Fernet


@pytest.fixture
def token_key(monkeypatch):
    monkeypatch.setenv("TILLFLOW_TOKEN_KEY", Fernet.generate_key().decode())


def test_the_db_store_swaps_atomically_and_keeps_tokens_encrypted(store, pg_url, token_key):
    from tillflow.tokens import DbTokenStore

    tokens = DbTokenStore(pg_url)
    assert tokens.load("pennylane_a:x") is None
    assert tokens.swap("pennylane_a:x", None, "rt-1") is True
    assert tokens.swap("pennylane_a:x", None, "rt-other") is False  # someone stored one first
    assert tokens.swap("pennylane_a:x", "rt-0", "rt-2") is False  # stale: never overwrite a newer token
    assert tokens.swap("pennylane_a:x", "rt-1", "rt-2") is True
    assert tokens.load("pennylane_a:x") == "rt-2"
    row = store.conn.execute(
        "SELECT token_enc, rotations FROM tillflow.oauth_tokens WHERE conn_id = 'pennylane_a:x'"
    ).fetchone()
    store.conn.commit()
    assert b"rt-2" not in bytes(row["token_enc"]) and row["rotations"] == 2


def test_rotated_tokens_survive_a_new_process_with_single_use_tokens(store, pg_url, sandbox, token_key):
    import tillflow.targets.pennylane as pl
    from tillflow.errors import AuthError
    from tillflow.sources.base import ConnectionInfo
    from tillflow.tokens import DbTokenStore, MemoryTokenStore

    requests.post(f"{sandbox.pennylane_url}/_sandbox/seeds", json={"strict": True}, timeout=5).raise_for_status()
    conn = ConnectionInfo(
        conn_id="pennylane_rot",
        host=f"{sandbox.pennylane_url}/api/external/v2",
        login="app",
        password="prt-rotco",
        extra={"client_secret": "cs"},
    )

    def new_process(store_impl):
        pl._tokens.clear()  # what a new task process starts with: no token shared in memory
        client = pl.PennylaneClient.from_connection(conn)
        client._token_store = store_impl
        return client

    db = DbTokenStore(pg_url)
    assert new_process(db).test_connection()  # spends the seed; the rotated token is stored first
    assert new_process(db).test_connection()  # a new process: the stored token, not the spent seed
    assert new_process(db).test_connection()
    with pytest.raises(AuthError, match="refused the refresh token"):
        new_process(MemoryTokenStore()).test_connection()  # without the store: the spent seed → invalid_grant


_WORKER = r"""
import json, os, sys
from tillflow.sources.base import ConnectionInfo
from tillflow.targets.eaccounting import EaccountingClient
from tillflow.tokens import DbTokenStore

job = json.loads(sys.argv[1])
conn = ConnectionInfo(conn_id="ea_crash", host=job["host"], login="tillflow-app", password=job["seed"],
                      extra={"client_secret": "cs-test", "token_url": job["token_url"]})
client = EaccountingClient.from_connection(conn, token_store=DbTokenStore(job["pg_url"]))
print("refreshing", flush=True)
client.access_token()
print("done", flush=True)
"""


def test_killing_the_task_between_the_refresh_and_the_save_never_locks_the_account_out(
    store, pg_url, sandbox, token_key, monkeypatch
):
    """The task process is killed (SIGKILL to its whole process group, as a worker shutdown or the OOM killer
    would) after Visma answered the refresh and before the rotated token was saved: the detached refresh unit
    still saves it, and the next process works with it. The seed token is spent — without the save the account
    would be locked out."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tillflow.errors import AuthError
    from tillflow.sources.base import ConnectionInfo
    from tillflow.targets.eaccounting import EaccountingClient
    from tillflow.tokens import PAUSE_ENV, DbTokenStore, MemoryTokenStore

    company = "crashco"
    seed = f"ert-{company}"
    host, token_url = f"{sandbox.eaccounting_url}/v2", f"{sandbox.eaccounting_url}/connect/token"
    root = Path(__file__).resolve().parents[2]

    def refreshes() -> int:
        state = requests.get(f"{sandbox.eaccounting_url}/_sandbox/state", timeout=5).json()
        return state.get("refreshes", {}).get(company, 0)

    env = {**os.environ, "PYTHONPATH": f"{root / 'plugins'}{os.pathsep}{root / 'include'}", PAUSE_ENV: "3"}
    job = {"host": host, "seed": seed, "token_url": token_url, "pg_url": pg_url}
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(job)], stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    assert worker.stdout.readline().strip() == b"refreshing"
    deadline = time.monotonic() + 20
    while refreshes() == 0:  # Visma has answered: the seed is spent from here on
        assert time.monotonic() < deadline, "the worker never refreshed"
        time.sleep(0.02)
    os.killpg(worker.pid, signal.SIGKILL)  # the task dies between the answer and the save
    assert worker.wait(timeout=10) == -signal.SIGKILL
    assert worker.stdout.read() == b""  # it never got its token

    conn = ConnectionInfo(
        conn_id="ea_crash",
        host=host,
        login="tillflow-app",
        password=seed,
        extra={"client_secret": "cs-test", "token_url": token_url},
    )
    with pytest.raises(AuthError, match="already used"):  # the seed is spent: only the saved token can help now
        EaccountingClient.from_connection(conn, token_store=MemoryTokenStore()).access_token()
    tokens = DbTokenStore(pg_url)
    key = EaccountingClient.from_connection(conn, token_store=tokens).conn_id
    deadline = time.monotonic() + 20
    while tokens.load(key) is None:  # the refresh unit saves it after its pause, though the task is gone
        assert time.monotonic() < deadline, "the rotated token was lost: the account is locked out"
        time.sleep(0.1)
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    client = EaccountingClient.from_connection(conn, token_store=tokens)  # the next task process
    assert client.vat_codes()  # not locked out
    assert refreshes() == 2  # the killed worker's and this one (the refused seed is no grant)


_PENNYLANE_WORKER = r"""
import json, sys
from tillflow.sources.base import ConnectionInfo
from tillflow.targets.pennylane import PennylaneClient
from tillflow.tokens import DbTokenStore

job = json.loads(sys.argv[1])
conn = ConnectionInfo(conn_id="pl_crash", host=job["host"], login="app", password=job["seed"],
                      extra={"client_secret": "cs"})
client = PennylaneClient.from_connection(conn)
client._token_store = DbTokenStore(job["pg_url"])
print("refreshing", flush=True)
client.access_token()
print("done", flush=True)
"""


def test_pennylane_killed_between_the_refresh_and_the_save_is_not_locked_out(
    store, pg_url, sandbox, token_key, monkeypatch
):
    """The same crash for Pennylane (the ledger's target): its refresh tokens work once too, so its refresh and
    save run in the same detached unit. The stand-in is strict (the seed token works once)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import tillflow.targets.pennylane as pl
    from tillflow.errors import AuthError
    from tillflow.sources.base import ConnectionInfo
    from tillflow.tokens import PAUSE_ENV, DbTokenStore, MemoryTokenStore

    company = "plcrash"
    seed = f"prt-{company}"
    host = f"{sandbox.pennylane_url}/api/external/v2"
    root = Path(__file__).resolve().parents[2]
    requests.post(f"{sandbox.pennylane_url}/_sandbox/seeds", json={"strict": True}, timeout=5).raise_for_status()

    def refreshes() -> int:
        state = requests.get(f"{sandbox.pennylane_url}/_sandbox/state", timeout=5).json()
        return state.get("refreshes", {}).get(company, 0)

    env = {**os.environ, "PYTHONPATH": f"{root / 'plugins'}{os.pathsep}{root / 'include'}", PAUSE_ENV: "3"}
    job = {"host": host, "seed": seed, "pg_url": pg_url}
    worker = subprocess.Popen(
        [sys.executable, "-c", _PENNYLANE_WORKER, json.dumps(job)],
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    assert worker.stdout.readline().strip() == b"refreshing"
    deadline = time.monotonic() + 20
    while refreshes() == 0:  # Pennylane has answered: the seed is spent from here on
        assert time.monotonic() < deadline, "the worker never refreshed"
        time.sleep(0.02)
    os.killpg(worker.pid, signal.SIGKILL)  # the task dies between the answer and the save
    assert worker.wait(timeout=10) == -signal.SIGKILL
    assert worker.stdout.read() == b""

    conn = ConnectionInfo(conn_id="pl_crash", host=host, login="app", password=seed, extra={"client_secret": "cs"})

    def new_process(tokens):
        pl._tokens.clear()  # a new task process shares no token in memory
        client = pl.PennylaneClient.from_connection(conn)
        client._token_store = tokens
        return client

    with pytest.raises(AuthError, match="refused the refresh token"):  # the seed is spent
        new_process(MemoryTokenStore()).access_token()
    tokens = DbTokenStore(pg_url)
    key = new_process(tokens)._conn_id
    deadline = time.monotonic() + 20
    while tokens.load(key) is None:  # the refresh unit saves it after its pause, though the task is gone
        assert time.monotonic() < deadline, "the rotated token was lost: the account is locked out"
        time.sleep(0.1)
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    assert new_process(tokens).test_connection()  # the next task process is not locked out
    assert refreshes() == 2
