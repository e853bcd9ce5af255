"""Rotating OAuth refresh tokens, kept across task processes (no Airflow import).

Pennylane and Visma eAccounting rotate the refresh token on every refresh: the old one is spent. The
Airflow connection keeps the token the customer authorised with; each rotation after it is stored here,
encrypted with Fernet, and swapped atomically: ``swap(conn_id, old, new)`` writes ``new`` only if the
stored token is still ``old`` (compare-and-swap on its sha256), so two processes refreshing at once
never overwrite a newer token with an older one. A client stores the new token *before* it uses the new
access token.

A refresh spends the old token the moment the vendor answers, so the answer and the save must not be split by
a crash. :func:`refresh_and_store` makes them one unit that outlives the task: with the database store, the
refresh call and the swap run in a small detached child process (its own session), and the task only reads
the child's result. A task process killed between the vendor's answer and the save (an execution timeout,
the OOM killer, a worker shut down) then loses nothing: the child saves the rotated token and exits. What
remains is the child itself dying in the milliseconds between the answer and one UPDATE (the machine going
down); Visma documents no grace period, so that is shown as one clear ``auth_failed`` to re-authorise.

The key: ``TILLFLOW_TOKEN_KEY``, else Airflow's ``[core] fernet_key`` (``AIRFLOW__CORE__FERNET_KEY``),
else a key generated once in ``$TILLFLOW_HOME/token.key`` (mode 0600). Without a database
(``TILLFLOW_DATABASE_URL`` unset) tokens live in memory only (:class:`MemoryTokenStore`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol


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
        with self._conn() as store:
            return self.swap_on(store, conn_id, old, new)

    def swap_on(self, store: Any, conn_id: str, old: str | None, new: str) -> bool:
        """:meth:`swap` on an open store (the refresh unit connects before it calls the vendor)."""
        enc = self.fernet.encrypt(new.encode())
        with store.conn.transaction():
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


#: test hook of the crash test: seconds the refresh child waits between the vendor's answer and the save
PAUSE_ENV = "TILLFLOW_TEST_REFRESH_PAUSE"


class RefreshAnswer:
    """The token endpoint's answer as the clients read it (``status_code``, ``content``)."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code, self.content = status_code, content


def refresh_and_store(
    store: TokenStore,
    conn_id: str,
    stored: str | None,
    *,
    url: str,
    form: dict[str, str],
    headers: dict[str, str],
    timeout: float = 30.0,
) -> tuple[RefreshAnswer, bool | None]:
    """POST a refresh-token grant and, on a rotated token, ``swap(conn_id, stored, rotated)`` — as one unit.

    With a :class:`DbTokenStore` both run in a detached child process (see the module docstring), so killing
    this process after the vendor answered cannot lose the rotated token. Returns the answer and whether the
    swap succeeded (``None``: nothing to store — an error answer, or no rotated token). With another store
    (memory: tests, no database) the caller does the call itself: this raises ``TypeError``.

    :raises ConnectionError: the child got no answer (the refresh token may be spent: outcome unknown).
    """
    if not isinstance(store, DbTokenStore):
        raise TypeError("refresh_and_store needs the database token store")
    from tillflow.store.db import database_url

    job = {
        "url": url,
        "form": form,
        "headers": headers,
        "timeout": timeout,
        "db_url": store.url or database_url(),
        "conn_id": conn_id,
        "stored": stored,
    }
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tillflow.tokens"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # not in the task's process group: a kill of the task does not reach it
    )
    out, err = child.communicate(json.dumps(job).encode(), timeout=timeout + 60)
    try:
        result = json.loads(out or b"{}")
    except ValueError:
        result = {}
    if "status" not in result:
        reason = result.get("error") or (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise ConnectionError(f"the token refresh got no answer (outcome unknown): {reason[:300]}")
    return RefreshAnswer(int(result["status"]), result["body"].encode()), result.get("swapped")


def _child() -> int:
    """``python -m tillflow.tokens``: one refresh and its save (the job on stdin, the result on stdout)."""
    import requests

    job = json.loads(sys.stdin.read())
    tokens = DbTokenStore(job["db_url"])
    with tokens._conn() as store:  # connected before the call: after the answer the save is one UPDATE
        try:
            response = requests.post(job["url"], data=job["form"], headers=job["headers"], timeout=job["timeout"])
        except requests.RequestException as exc:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            return 0
        result = _answered(tokens, store, job, response)
    try:
        print(json.dumps(result), flush=True)
    except BrokenPipeError:  # the task that asked is gone; the token is saved
        pass
    return 0


def _answered(tokens: DbTokenStore, store: Any, job: dict[str, Any], response: Any) -> dict[str, Any]:
    swapped = None
    rotated = None
    if response.status_code == 200:
        try:
            body = response.json()
            rotated = body.get("refresh_token") if isinstance(body, dict) else None
        except ValueError:
            rotated = None
    if isinstance(rotated, str) and rotated and rotated != job["form"].get("refresh_token"):
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        if pause:
            time.sleep(pause)  # the crash test kills the task process here
        swapped = tokens.swap_on(store, job["conn_id"], job["stored"], rotated)
    return {"status": response.status_code, "body": response.text, "swapped": swapped}


if __name__ == "__main__":
    sys.exit(_child())
