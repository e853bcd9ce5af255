"""Create-if-absent: an object (an order, a product by SKU) is created at the target unless it exists.

The target is asked first (``client.find(key)``); an object that exists is recorded with the target's
id and never created again; a new one is created and its id remembered (``tillflow.object_delivery``).
An object whose payload changed after creation is not re-created (updates are the kind's business, e.g.
products with the "update" setting). A refused object is recorded failed with the vendor's message
and the others still go.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from tillflow.errors import DeliveryRefused, RemoteError

log = logging.getLogger(__name__)


class CreateTarget(Protocol):
    name: str

    def find(self, key: str) -> str | None: ...

    def create(self, key: str, payload: dict[str, Any]) -> str: ...


def payload_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def deliver_create_if_absent(
    store: Any,
    account_id: int,
    flow: str,
    objects: Iterable[tuple[str, dict[str, Any]]],
    client: CreateTarget,
    *,
    run_id: str | None,
    label: str = "",
) -> dict[str, int]:
    """Create each ``(key, payload)`` at the target unless it exists there or was created before."""
    done = {
        r["object_key"]: r
        for r in store.conn.execute(
            "SELECT object_key, status, target_id FROM tillflow.object_delivery WHERE account_id = %s AND flow = %s",
            (account_id, flow),
        ).fetchall()
    }
    store.conn.commit()
    created = existed = 0
    refused: list[str] = []
    total = 0
    for key, payload in objects:
        total += 1
        if key in done and done[key]["status"] in ("created", "exists"):
            continue
        digest = payload_hash(payload)
        try:
            found = client.find(key)
            if found is not None:
                _record(store, account_id, flow, key, digest, found, "exists", "", run_id)
                existed += 1
                continue
            target_id = client.create(key, payload)
        except RemoteError as exc:
            if not exc.permanent:
                raise
            _record(store, account_id, flow, key, digest, None, "failed", str(exc), run_id)
            refused.append(f"{key}: {exc}")
            log.warning("%s: %s refused %s: %s", label, client.name, key, exc)
            continue
        _record(store, account_id, flow, key, digest, target_id, "created", "", run_id)
        created += 1
    if refused:
        raise DeliveryRefused(
            f"{client.name} refused {len(refused)} of {total} object(s); first: {refused[0]}", refused=refused
        )
    return {"created": created, "exists": existed, "failed": 0}


def _record(store, account_id, flow, key, digest, target_id, status, detail, run_id) -> None:
    with store.conn.transaction():
        store.conn.execute(
            """
            INSERT INTO tillflow.object_delivery (account_id, flow, object_key, payload_hash, target_id, status,
                                                  detail, run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (account_id, flow, object_key) DO UPDATE
               SET payload_hash = EXCLUDED.payload_hash, target_id = coalesce(EXCLUDED.target_id,
                   tillflow.object_delivery.target_id), status = EXCLUDED.status, detail = EXCLUDED.detail,
                   run_id = EXCLUDED.run_id, attempts = tillflow.object_delivery.attempts + 1, updated_at = now()
            """,
            (account_id, flow, key, digest, target_id, status, detail[:500], run_id),
        )
