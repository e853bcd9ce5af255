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
