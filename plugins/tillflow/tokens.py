"""Rotating OAuth refresh tokens, kept across task processes (no Airflow import).

Pennylane and Visma eAccounting rotate the refresh token on every refresh: the old one is spent. The
Airflow connection keeps the token the customer authorised with; each rotation after it is stored here,
encrypted with Fernet, and swapped atomically: ``swap(conn_id, old, new)`` writes ``new`` only if the
stored token is still ``old`` (compare-and-swap on its sha256), so two processes refreshing at once
never overwrite a newer token with an older one. A client stores the new token *before* it uses the new
access token.

The key: ``TILLFLOW_TOKEN_KEY``, else Airflow's ``[core] fernet_key`` (``AIRFLOW__CORE__FERNET_KEY``),
else a key generated once in ``$TILLFLOW_HOME/token.key`` (mode 0600). Without a database
(``TILLFLOW_DATABASE_URL`` unset) tokens live in memory only (:class:`MemoryTokenStore`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol


class TokenStore(Protocol):
    def load(self, conn_id: str) -> str | None: ...

    def swap(self, conn_id: str, old: str | None, new: str) -> bool: ...


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class MemoryTokenStore:
    """In one process only (tests; a machine without a tillflow database)."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self, conn_id: str) -> str | None:
        with self._lock:
            return self._tokens.get(conn_id)

    def swap(self, conn_id: str, old: str | None, new: str) -> bool:
        with self._lock:
            if self._tokens.get(conn_id) != old:
                return False
            self._tokens[conn_id] = new
            return True


def _fernet():
    from cryptography.fernet import Fernet

    key = os.environ.get("TILLFLOW_TOKEN_KEY") or os.environ.get("AIRFLOW__CORE__FERNET_KEY")
    if not key:
        from tillflow.store.db import tillflow_home

        path = Path(tillflow_home()) / "token.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        key = path.read_text().strip()
    return Fernet(key.split(",")[0].encode())


class DbTokenStore:
    """``tillflow.oauth_tokens``: encrypted, compare-and-swap. One short connection per call."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.fernet = _fernet()

    def _conn(self):
        from tillflow.store import Store

        return Store.open(self.url)

    def load(self, conn_id: str) -> str | None:
        with self._conn() as store:
            row = store.conn.execute(
                "SELECT token_enc FROM tillflow.oauth_tokens WHERE conn_id = %s", (conn_id,)
            ).fetchone()
            store.conn.commit()
        return self.fernet.decrypt(bytes(row["token_enc"])).decode() if row else None

    def swap(self, conn_id: str, old: str | None, new: str) -> bool:
        enc = self.fernet.encrypt(new.encode())
        with self._conn() as store, store.conn.transaction():
            if old is None:
                cur = store.conn.execute(
                    "INSERT INTO tillflow.oauth_tokens (conn_id, token_enc, token_sha256) VALUES (%s, %s, %s) "
                    "ON CONFLICT (conn_id) DO NOTHING",
                    (conn_id, enc, _sha(new)),
                )
            else:
                cur = store.conn.execute(
                    "UPDATE tillflow.oauth_tokens SET token_enc = %s, token_sha256 = %s, rotations = rotations + 1, "
                    "updated_at = now() WHERE conn_id = %s AND token_sha256 = %s",
                    (enc, _sha(new), conn_id, _sha(old)),
                )
            return cur.rowcount == 1


_default: TokenStore | None = None
_default_lock = threading.Lock()


def default_store() -> TokenStore:
    """The store clients use unless given one: the one :func:`set_default` installed (every shard of every
    run installs the tillflow database's), else the database when ``TILLFLOW_DATABASE_URL`` is set, else
    memory (a unit test, a client built by hand)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DbTokenStore() if os.environ.get("TILLFLOW_DATABASE_URL") else MemoryTokenStore()
        return _default


def set_default(store: TokenStore) -> None:
    """Install the store clients use from now on in this process."""
    global _default
    with _default_lock:
        _default = store
