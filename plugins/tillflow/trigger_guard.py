"""Refuse a bad trigger of a tillflow DAG before its run exists: a root middleware of the Airflow API server.

Airflow 3.3 checks each Param of the trigger form on its own (its JSON schema), on the server from the
serialized DAG, so a rule that spans two fields — ``date_to`` on or after ``date_from``, a range no longer than
a manual run allows — cannot be a Param. Without this guard
such a run is created and its ``plan`` task fails. With it, ``POST /api/v2/dags/{dag_id}/dagRuns`` for a DAG
of a tillflow spec is answered ``400`` with the reason naming the fields (the trigger form shows it), and no
run is created. Other DAGs and every other request pass through untouched; a body that is not JSON is left to
Airflow's own validation. :meth:`tillflow.sync.RunParams.from_params` is the one rule book: the plan task
applies the same checks to a run created another way (``airflow dags test``, a backfill).

Registered by ``plugins/tillflow_plugin.py`` (``fastapi_root_middlewares``). A plain ASGI middleware: the
body is read once and handed on to Airflow unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

_TRIGGER = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@lru_cache(maxsize=1)
def tillflow_dag_ids() -> frozenset[str]:
    """The DAG ids of every spec under ``dags/`` (the ones built by :mod:`tillflow.factory`)."""
    from tillflow.health import load_specs

    return frozenset(dag_id for spec in load_specs().values() for dag_id in spec.dags())


def refusal(dag_id: str, body: bytes) -> str | None:
    """Why a trigger of ``dag_id`` with this request body must be refused, or None to let it through."""
    if dag_id not in tillflow_dag_ids():
        return None
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None  # Airflow answers a malformed body itself
    conf = payload.get("conf") if isinstance(payload, dict) else None
    if not isinstance(conf, dict):
        return None
    from tillflow.errors import ConfigError
    from tillflow.sync import RunParams

    try:
        RunParams.from_params(conf)
    except ConfigError as exc:
        return f"{dag_id}: {exc}"
    return None


class TriggerGuard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _TRIGGER.search(scope.get("path") or "") if scope.get("type") == "http" else None
        if match is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(None, receive, first=message), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            why = refusal(match["dag_id"], body)
        except Exception:  # the guard never stands between a user and Airflow because of its own fault
            why = None
        if why is None:
            await self.app(scope, _replay(body, receive), send)
            return
        answer = json.dumps({"detail": why}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _replay(body: bytes | None, receive: Receive, *, first: dict[str, Any] | None = None) -> Receive:
    """A ``receive`` that hands the body already read to the app once, then listens to the client as before."""
    pending = [first if first is not None else {"type": "http.request", "body": body or b"", "more_body": False}]

    async def replay() -> dict[str, Any]:
        if pending:
            return pending.pop()
        return await receive()

    return replay
