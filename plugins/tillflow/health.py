"""One health view of every account of every integration: status, schedule, last run, what is pending.

A small FastAPI app mounted in the Airflow API server by ``plugins/tillflow_plugin.py``
(``/tillflow/health`` as HTML, ``/tillflow/health.json``). Error texts are the activity log's, which
are masked when written. Note: plugin endpoints are not behind Airflow's login.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def health_rows(store: Any) -> list[dict[str, Any]]:
    """One row per account: its state, its last run and how many rows still wait for delivery."""
    last = store.last_runs()
    flows = store.flow_states()
    rows = []
    for a in store.list_accounts():
        run = last.get(a.id)
        pending = len(store.pending_deliveries(a.id))  # the deliver step's own notion of "pending"
        rejects = len(store.rejects(a.id))
        healthy = a.status == "ok" and (run is None or run["status"] in ("success", "running")) and not pending
        rows.append({
            "integration": a.integration, "account": a.key, "name": a.name, "active": a.settings.active,
            "status": a.status, "detail": a.status_detail, "pending_delivery": pending, "rejects": rejects,
            "flows": {f: st["status"] for (acc, f), st in sorted(flows.items()) if acc == a.id},
            "last_run_at": run["started_at"].isoformat(timespec="seconds") if run else None,
            "last_run_status": run["status"] if run else None,
            "last_window": f"{run['window_start']}..{run['window_end']}" if run else None,
            "last_error": run["error"] if run else "",
            "healthy": healthy or not a.settings.active,
        })
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    cols = ["integration", "account", "name", "active", "status", "last_run_at", "last_run_status", "last_window",
            "pending_delivery", "rejects", "detail", "last_error"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    body = "".join(
        f"<tr class={'ok' if r['healthy'] else 'bad'}>"
        + "".join(f"<td>{html.escape(str(r[c] if r[c] is not None else ''))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    bad = sum(not r["healthy"] for r in rows)
    return (
        "<!doctype html><meta charset=utf-8><title>tillflow sync health</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}"
        "tr.bad{background:#fde8e8}tr.ok{background:#eef8ee}</style>"
        f"<h1>tillflow sync health</h1><p>{len(rows)} account(s), {bad} need attention.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )


def create_app(open_store=None) -> FastAPI:
    """The health app; ``open_store`` returns a Store (tests pass their own)."""
    from tillflow.store import Store

    opener = open_store or Store.open
    app = FastAPI(title="tillflow health")

    @app.get("/health.json")
    def health_json() -> list[dict[str, Any]]:
        with opener() as store:
            return health_rows(store)

    @app.get("/health", response_class=HTMLResponse)
    def health_html() -> str:
        with opener() as store:
            return render(health_rows(store))

    return app
