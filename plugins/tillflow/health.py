"""Sync health in the Airflow UI: every account of every integration, per flow, behind Airflow's login.

A small FastAPI app mounted in the Airflow API server by ``plugins/tillflow_plugin.py`` at ``/tillflow``:

===========================  ==========================================================================
``GET  /health``             HTML: one row per account and flow, filter by integration and status
``GET  /health.json``        the same rows as JSON (``?integration=…&status=…``)
``GET  /rejects``            HTML: an account's rejects (``?integration=…&account=…[&flow=…][&all=1]``)
``GET  /rejects.json``       the same as JSON
``POST /rejects/ack``        acknowledge an account's open rejects (form; ``/rejects/ack.json``: JSON)
``POST /sync``               start a manual sync of one account for a date range (form; ``/sync.json``: JSON)
===========================  ==========================================================================

Auth: every endpoint resolves the caller with Airflow's own ``get_user`` (the JWT of the ``_token`` cookie
the Airflow UI sets at login, or an ``Authorization: Bearer`` header) and asks Airflow's auth manager:
rows are shown for the DAGs the user may read (``GET`` on the DAG's runs), rejects are acknowledged only
by a user who may edit them (``PUT``). An anonymous request gets 401 (the HTML pages redirect to Airflow's
login page). A manual sync is not started here: it is a ``POST /api/v2/dags/{dag_id}/dagRuns`` to
Airflow's public REST API with the user's own token, so Airflow checks the user's rights and records the
run as theirs. POSTs from another origin are refused (the cookie is ambient).

Error texts are the activity log's, which are masked when written.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

#: the statuses a row can have (filter values); ``paused``: the account is paused or the flow is off for it
STATUSES = ("ok", "needs_mapping", "failing", "auth_failed", "paused")
#: where ``tillflow_plugin.py`` mounts the app in the API server
URL_PREFIX = "/tillflow"
DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
#: how far ahead the next due run is looked for (an account's weekdays can leave out six days)
_DUE_HORIZON = timedelta(days=8)


# ------------------------------------------------------------------------------------------- rows


def load_specs(dags_dir: Path = DAGS_DIR) -> dict[str, Any]:
    """Integration id → spec, from ``dags/*.yaml``."""
    from tillflow.specs import load_spec

    specs = (load_spec(p) for p in sorted(Path(dags_dir).glob("*.yaml")))
    return {s.integration: s for s in specs}


def ui_base_url() -> str:
    """The Airflow UI's base (``[api] base_url``, without a trailing slash; empty: links from ``/``)."""
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # pragma: no cover - outside an Airflow environment
        base = ""
    return base.rstrip("/")


def run_links(base: str, dag_id: str, run_id: str, map_index: int | None) -> dict[str, str]:
    """Links into the Airflow UI: the run and the log of its ``run`` task (the account's shard)."""
    run = f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    task = f"{run}/tasks/run" + (f"/mapped/{map_index}" if map_index is not None else "")
    return {"last_run_url": run, "task_log_url": task}


def next_due(spec: Any, flow: Any, account: Any, state: dict[str, Any] | None, now: datetime) -> datetime | None:
    """When the scheduler will next run this account's flow: the first tick of the flow's DAG (its cron
    in the spec's timezone) at which :func:`tillflow.sync.plan` would pick it — every tick, the account's
    own run time and weekdays (or a missed one caught up), or its activation backfill. ``None``: paused,
    nothing due within eight days, or the activation backfill is done."""
    from croniter import croniter

    from tillflow.windows import due_on_tick

    settings = account.settings
    if not settings.active:
        return None
    state = state or {}
    start = now
    if flow.due == "activation":
        activated = settings.activated_at
        done = state.get("backfill_done_at")
        if activated is None or (done is not None and done >= activated):
            return None
        due = activated + timedelta(minutes=flow.activation.delay_minutes)
        retry_at = state.get("backfill_due_at")
        if retry_at is not None and retry_at > due:
            due = retry_at
        start = max(now, due)
    ticks = croniter(flow.schedule, (start - timedelta(seconds=1)).astimezone(ZoneInfo(spec.timezone)))
    for _ in range(10_000):
        tick = ticks.get_next(datetime)
        if tick - now > _DUE_HORIZON:
            return None
        if flow.due == "activation":
            return tick.astimezone(UTC)
        due = due_on_tick(
            settings,
            flow.due,
            tick,
            last_due_at=state.get("last_due_at"),
            known_since=account.created_at,
            catch_up=timedelta(hours=flow.catch_up_hours),
        )
        if due.due_at is not None:
            return tick.astimezone(UTC)
    return None


def _mapping_kinds(spec: Any, flow: Any) -> tuple[str, ...]:
    try:
        from tillflow.flows import get_kind
        from tillflow.sources import get_source

        return tuple(get_kind(flow.kind).mapping_kinds(get_source(spec.source_of(flow))))
    except Exception:  # a kind without mappings, a source without a mapping kind
        return ()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return value.isoformat() if isinstance(value, date) else str(value)


def _window(start: Any, end: Any) -> str | None:
    return f"{start}..{end}" if start and end else None


def health_rows(
    store: Any,
    specs: dict[str, Any] | None = None,
    *,
    integration: str | None = None,
    status: str | None = None,
    can_read: Callable[[str], bool] = lambda dag_id: True,
    now: datetime | None = None,
    base_url: str = "",
) -> list[dict[str, Any]]:
    """One row per account and flow (an account of an integration without a spec: one row per flow it
    has state for), filtered by integration, status and what the user may read."""
    specs = load_specs() if specs is None else specs
    now = now or datetime.now(UTC)
    accounts = [a for a in store.list_accounts(integration or None)]
    states = store.flow_states()
    last = store.last_activity_by_flow()
    open_rejects = store.open_reject_counts()
    unmapped = store.unmapped_keys()
    rows: list[dict[str, Any]] = []
    for a in accounts:
        spec = specs.get(a.integration)
        if spec is not None:
            dag_of = {f.name: dag_id for dag_id, flows in spec.dags().items() for f in flows}
            flows = list(spec.flows)
        else:
            dag_of = {}
            names = sorted({f for (acc, f) in list(states) + list(last) if acc == a.id}) or [""]
            flows = [None] * len(names)
        pending = None
        for i, flow in enumerate(flows):
            name = flow.name if flow is not None else names[i]
            dag_id = dag_of.get(name) or (last.get((a.id, name)) or {}).get("dag_id") or a.integration
            if not can_read(dag_id):
                continue
            state = states.get((a.id, name))
            run = last.get((a.id, name))
            off = flow is not None and (a.settings.flows.get(flow.settings_key) or {}).get("enabled") is False
            if not a.settings.active or off:
                row_status, detail = "paused", ("flow is off for this account" if off else "account is paused")
            elif state is not None:
                row_status, detail = state["status"], state["status_detail"]
            else:
                row_status, detail = a.status, a.status_detail
            if status and row_status != status:
                continue
            if pending is None:  # the deliver step's own notion of "pending", once per account
                pending = len(store.pending_deliveries(a.id))
            kinds = _mapping_kinds(spec, flow) if flow is not None else ()
            keys = [dict(k, kind=kind) for kind in kinds for k in unmapped.get((a.id, kind), [])]
            due = next_due(spec, flow, a, state, now) if flow is not None and row_status != "paused" else None
            n_rejects = open_rejects.get((a.id, name), 0)
            last_ok = run is None or run["status"] in ("success", "running", "pending", "skipped")
            row = {
                "integration": a.integration,
                "account": a.key,
                "name": a.name,
                "flow": name,
                "dag_id": dag_id,
                "active": a.settings.active,
                "status": row_status,
                "detail": detail,
                "last_success_at": _iso(state and state["last_success_at"]),
                "next_due_at": _iso(due),
                "last_window": (_window(state["last_window_start"], state["last_window_end"]) if state else None)
                or (_window(run["window_start"], run["window_end"]) if run else None),
                "last_run_id": run["run_id"] if run else None,
                "last_run_at": _iso(run["started_at"]) if run else None,
                "last_run_status": run["status"] if run else None,
                "last_error": run["error"] if run else "",
                "rows_fetched": run["fetched"] if run else 0,
                "rows_landed": run["upserted"] if run else 0,
                "rows_delivered": run["delivered"] if run else 0,
                "rows_rejected": run["rejected"] if run else 0,
                "open_rejects": n_rejects,
                "unmapped_keys": keys,
                "pending_delivery": pending,
                "last_run_url": None,
                "task_log_url": None,
            }
            if run:
                row.update(run_links(base_url, run["dag_id"], run["run_id"], run.get("shard")))
            row["healthy"] = row_status == "paused" or (
                row_status == "ok" and last_ok and not pending and not n_rejects and not keys
            )
            rows.append(row)
    rows.sort(key=lambda r: (r["integration"], r["account"], r["flow"]))
    return rows


# ------------------------------------------------------------------------------------------- auth


class LoginRequired(Exception):
    """An HTML page was asked for without a valid login: send the browser to Airflow's login page."""


@dataclass(frozen=True)
class Caller:
    """The logged-in Airflow user and the token they came with (forwarded to Airflow's REST API)."""

    user: Any
    token: str

    @property
    def name(self) -> str:
        return str(self.user.get_name())

    def may(self, dag_id: str, method: str = "GET") -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        return get_auth_manager().is_authorized_dag(
            method=method, access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=self.user
        )


async def current_user(request: Request) -> Caller:
    """Airflow's own authentication (``airflow.api_fastapi.core_api.security.get_user``): a Bearer token,
    else the UI's ``_token`` cookie; 401 without one, 401/403 for an expired or invalid one."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    creds = await bearer_scheme(request)
    user = await get_user(request, None, creds)
    bearer = creds is not None and creds.scheme.lower() == "bearer"
    token = creds.credentials if bearer else (request.cookies.get(COOKIE_NAME_JWT_TOKEN) or "")
    return Caller(user=user, token=token)


async def page_user(request: Request) -> Caller:
    """:func:`current_user` for HTML pages: no valid login → Airflow's login page, then back here."""
    try:
        return await current_user(request)
    except HTTPException as exc:
        if exc.status_code in (401, 403):
            raise LoginRequired() from None
        raise


def same_origin(request: Request) -> None:
    """Refuse a state-changing request another site's page made with the user's ambient cookie."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(403, "cross-origin request refused")


# ------------------------------------------------------------------------------------------- rendering

_CSS = (
    "body{font-family:sans-serif;margin:16px}td,th{padding:4px 6px;border-bottom:1px solid #ddd;text-align:left;"
    "vertical-align:top;font-size:13px}tr.bad{background:#fde8e8}tr.ok{background:#eef8ee}"
    "tr.paused{background:#f2f2f2;color:#666}.st{font-weight:bold}form.inline{display:inline}"
    "input[type=date]{width:9em}.msg{padding:8px;background:#eef;border:1px solid #99c}"
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> str:
    return f"<!doctype html><meta charset=utf-8><title>{_e(title)}</title><style>{_CSS}</style>{body}"


def _options(values: Iterable[str], chosen: str | None, empty: str) -> str:
    out = [f'<option value=""{" selected" if not chosen else ""}>{_e(empty)}</option>']
    for v in values:
        out.append(f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(v)}</option>')
    return "".join(out)


def render(
    rows: list[dict[str, Any]],
    *,
    root: str = "",
    integrations: Iterable[str] = (),
    integration: str | None = None,
    status: str | None = None,
    user: str = "",
    message: str = "",
) -> str:
    bad = sum(not r["healthy"] for r in rows)
    filters = (
        f'<form id="filters" method="get" action="{_e(root)}/health">'
        f'<label>Integration <select name="integration" id="f-integration">'
        f"{_options(integrations, integration, 'all')}</select></label> "
        f'<label>Status <select name="status" id="f-status">{_options(STATUSES, status, "all")}</select></label> '
        '<button type="submit" id="apply">Filter</button></form>'
    )
    head = (
        "<tr><th>integration</th><th>account</th><th>flow</th><th>status</th><th>last success</th>"
        "<th>next due</th><th>last window</th><th>rows landed</th><th>rejects</th><th>unmapped</th>"
        "<th>last run</th><th>manual sync</th></tr>"
    )
    body = []
    for r in rows:
        cls = "paused" if r["status"] == "paused" else ("ok" if r["healthy"] else "bad")
        q = urlencode({"integration": r["integration"], "account": r["account"], "flow": r["flow"]})
        rejects = (
            f'<a class="rejects" href="{_e(root)}/rejects?{_e(q)}">{r["open_rejects"]} open</a>'
            if r["open_rejects"]
            else f'<a class="rejects" href="{_e(root)}/rejects?{_e(q)}&amp;all=1">0</a>'
        )
        unmapped = ", ".join(
            f"{k['kind']} {k['key']}" + (f" ({k['name']})" if k["name"] else "") for k in r["unmapped_keys"]
        )
        links = ""
        if r["last_run_url"]:
            links = (
                f'<a class="run-link" target="_top" href="{_e(r["last_run_url"])}">{_e(r["last_run_status"])} '
                f'{_e(r["last_run_at"])}</a><br><a class="log-link" target="_top" '
                f'href="{_e(r["task_log_url"])}">task log</a>'
            )
            if r["last_error"]:
                links += f"<br><small>{_e(r['last_error'])}</small>"
        sync = (
            f'<form class="inline sync" method="post" action="{_e(root)}/sync">'
            f'<input type="hidden" name="integration" value="{_e(r["integration"])}">'
            f'<input type="hidden" name="account" value="{_e(r["account"])}">'
            f'<input type="hidden" name="flow" value="{_e(r["flow"])}">'
            '<input type="date" name="date_from" required> <input type="date" name="date_to"> '
            '<button type="submit">Sync</button></form>'
            if r["status"] != "paused"
            else ""
        )
        body.append(
            f'<tr class="{cls}" data-integration="{_e(r["integration"])}" data-account="{_e(r["account"])}" '
            f'data-flow="{_e(r["flow"])}" data-status="{_e(r["status"])}">'
            f"<td>{_e(r['integration'])}</td><td><b>{_e(r['name'])}</b><br>{_e(r['account'])}</td>"
            f"<td>{_e(r['flow'])}<br><small>{_e(r['dag_id'])}</small></td>"
            f'<td><span class="st">{_e(r["status"])}</span><br><small>{_e(r["detail"])}</small></td>'
            f"<td>{_e(r['last_success_at'])}</td><td>{_e(r['next_due_at'])}</td><td>{_e(r['last_window'])}</td>"
            f"<td>{r['rows_landed']} <small>(fetched {r['rows_fetched']}, delivered {r['rows_delivered']}, "
            f"pending {r['pending_delivery']})</small></td>"
            f"<td>{rejects}</td><td>{_e(unmapped)}</td><td>{links}</td><td>{sync}</td></tr>"
        )
    note = f'<p class="msg" id="message">{_e(message)}</p>' if message else ""
    return _page(
        "tillflow sync health",
        f"<h1>tillflow sync health</h1><p>Signed in as {_e(user)}. {note}</p>{filters}"
        f'<p id="summary">{len(rows)} row(s), {bad} need attention.</p>'
        f'<table id="health"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>',
    )


def render_rejects(account: Any, rejects: list[dict[str, Any]], *, root: str, flow: str | None, may_ack: bool) -> str:
    rows = "".join(
        f'<tr data-id="{r["id"]}"><td>{r["id"]}</td><td>{_e(r["flow"])}</td><td>{_e(r["ref"])}</td>'
        f"<td>{_e(r['reason'])}</td><td>{_e(_iso(r['created_at']))}</td><td>{_e(r['run_id'])}</td>"
        f"<td>{_e(_iso(r['acknowledged_at']))} {_e(r['acknowledged_by'])}</td></tr>"
        for r in rejects
    )
    open_n = sum(r["acknowledged_at"] is None for r in rejects)
    ack = ""
    if may_ack and open_n:
        ack = (
            f'<form method="post" action="{_e(root)}/rejects/ack" id="ack">'
            f'<input type="hidden" name="integration" value="{_e(account.integration)}">'
            f'<input type="hidden" name="account" value="{_e(account.key)}">'
            + (f'<input type="hidden" name="flow" value="{_e(flow)}">' if flow else "")
            + f'<button type="submit">Acknowledge {open_n} open reject(s)</button></form>'
        )
    return _page(
        f"rejects of {account.key}",
        f'<p><a href="{_e(root)}/health">← sync health</a></p><h1>Rejects of {_e(account.name)} '
        f"({_e(account.key)}, {_e(account.integration)}{', ' + _e(flow) if flow else ''})</h1>"
        f'<p id="summary">{open_n} open of {len(rejects)} shown.</p>{ack}'
        '<table id="rejects"><thead><tr><th>id</th><th>flow</th><th>ref</th><th>reason</th><th>at</th>'
        f"<th>run</th><th>acknowledged</th></tr></thead><tbody>{rows}</tbody></table>",
    )


# ------------------------------------------------------------------------------------------- the app


def _api_root(request: Request) -> str:
    """Where Airflow's REST API is: ``TILLFLOW_AIRFLOW_API_URL``, else the server this request came to."""
    configured = os.environ.get("TILLFLOW_AIRFLOW_API_URL")
    if configured:
        return configured.rstrip("/")
    parent = request.scope.get("root_path", "").removesuffix(URL_PREFIX)  # the API server's own root path
    return f"{request.url.scheme}://{request.url.netloc}{parent}"


def _default_api_client(base_url: str):
    import httpx

    return httpx.Client(base_url=base_url, timeout=30)


def create_app(
    open_store: Callable[[], Any] | None = None,
    *,
    specs: Callable[[], dict[str, Any]] | None = None,
    api_client: Callable[[str], Any] | None = None,
) -> FastAPI:
    """The health app. ``open_store`` returns a Store, ``specs`` the integration specs by id and
    ``api_client(base_url)`` an httpx-style client of Airflow's REST API (tests pass their own)."""
    from tillflow.store import Store

    opener = open_store or Store.open
    get_specs = specs or load_specs
    client_for = api_client or _default_api_client
    app = FastAPI(title="tillflow health")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> RedirectResponse:
        from airflow.api_fastapi.app import get_auth_manager

        back = str(request.url) if request.method == "GET" else str(request.url_for("health_html"))
        return RedirectResponse(get_auth_manager().get_url_login(next_url=back), status_code=303)

    def rows_for(caller: Caller, integration: str | None, status: str | None) -> list[dict[str, Any]]:
        if status and status not in STATUSES:
            raise HTTPException(422, f"status: one of {', '.join(STATUSES)}")
        allowed: dict[str, bool] = {}

        def can_read(dag_id: str) -> bool:
            if dag_id not in allowed:
                allowed[dag_id] = caller.may(dag_id, "GET")
            return allowed[dag_id]

        with opener() as store:
            return health_rows(
                store,
                get_specs(),
                integration=integration,
                status=status,
                can_read=can_read,
                base_url=ui_base_url(),
            )

    def account_for(store: Any, caller: Caller, integration: str, key: str, method: str) -> Any:
        account = store.find_account(integration, key)
        if account is None:
            raise HTTPException(404, f"no account {key!r} in {integration!r}")
        spec = get_specs().get(integration)
        dag_ids = list(spec.dags()) if spec else [integration]
        if not any(caller.may(d, method) for d in dag_ids):
            raise HTTPException(403, "Forbidden")
        return account

    @app.get("/health.json")
    def health_json(
        integration: str | None = None, status: str | None = None, caller: Caller = Depends(current_user)
    ) -> list[dict[str, Any]]:
        return rows_for(caller, integration or None, status or None)

    @app.get("/health", response_class=HTMLResponse)
    def health_html(
        request: Request,
        integration: str | None = None,
        status: str | None = None,
        message: str = "",
        caller: Caller = Depends(page_user),
    ) -> str:
        rows = rows_for(caller, integration or None, status or None)
        names = sorted(get_specs())
        return render(
            rows,
            root=request.scope.get("root_path", ""),
            integrations=names,
            integration=integration or None,
            status=status or None,
            user=caller.name,
            message=message,
        )

    def rejects_of(caller: Caller, integration: str, account: str, flow: str | None, all_: bool):
        with opener() as store:
            acc = account_for(store, caller, integration, account, "GET")
            return acc, store.list_rejects(acc.id, flow=flow or None, include_acknowledged=all_)

    @app.get("/rejects.json")
    def rejects_json(
        integration: str,
        account: str,
        flow: str | None = None,
        all: bool = False,  # noqa: A002 - query name
        caller: Caller = Depends(current_user),
    ) -> list[dict[str, Any]]:
        return rejects_of(caller, integration, account, flow, all)[1]

    @app.get("/rejects", response_class=HTMLResponse)
    def rejects_html(
        request: Request,
        integration: str,
        account: str,
        flow: str | None = None,
        all: bool = False,  # noqa: A002
        caller: Caller = Depends(page_user),
    ) -> str:
        acc, rejects = rejects_of(caller, integration, account, flow, all)
        spec = get_specs().get(integration)
        may_ack = any(caller.may(d, "PUT") for d in (list(spec.dags()) if spec else [integration]))
        return render_rejects(acc, rejects, root=request.scope.get("root_path", ""), flow=flow, may_ack=may_ack)

    def acknowledge(caller: Caller, data: dict[str, Any]) -> int:
        integration, key = str(data.get("integration") or ""), str(data.get("account") or "")
        if not integration or not key:
            raise HTTPException(422, "integration and account are required")
        ids = data.get("ids")
        with opener() as store:
            acc = account_for(store, caller, integration, key, "PUT")
            return store.acknowledge_rejects(
                acc.id, by=caller.name, flow=data.get("flow") or None, ids=[int(i) for i in ids] if ids else None
            )

    @app.post("/rejects/ack.json", dependencies=[Depends(same_origin)])
    async def ack_json(request: Request, caller: Caller = Depends(current_user)) -> dict[str, int]:
        return {"acknowledged": await run_in_threadpool(acknowledge, caller, await request.json())}

    @app.post("/rejects/ack", dependencies=[Depends(same_origin)])
    async def ack_form(request: Request, caller: Caller = Depends(page_user)) -> RedirectResponse:
        form = await request.form()
        data = {k: form.get(k) for k in ("integration", "account", "flow")} | {"ids": form.getlist("ids")}
        n = await run_in_threadpool(acknowledge, caller, data)
        q = urlencode({"integration": data["integration"], "account": data["account"], "all": 1, "acked": n})
        return RedirectResponse(f"{request.scope.get('root_path', '')}/rejects?{q}", status_code=303)

    def trigger(request: Request, caller: Caller, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Check the request, then POST the DAG run to Airflow's REST API with the caller's own token (in a
        worker thread: the API may be this very server, whose event loop must stay free to answer)."""
        integration, key, flow = (str(data.get(k) or "") for k in ("integration", "account", "flow"))
        try:
            date_from = date.fromisoformat(str(data.get("date_from") or ""))
            date_to = date.fromisoformat(str(data["date_to"])) if data.get("date_to") else date_from
        except ValueError:
            raise HTTPException(422, "date_from (and date_to): YYYY-MM-DD") from None
        if date_to < date_from:
            raise HTTPException(422, "date_to: on or after date_from")
        spec = get_specs().get(integration)
        if spec is None:
            raise HTTPException(404, f"no integration {integration!r}")
        dag_of = {f.name: dag_id for dag_id, flows in spec.dags().items() for f in flows}
        if flow and flow not in dag_of:
            raise HTTPException(404, f"{integration} has no flow {flow!r}")
        dag_id = dag_of[flow] if flow else next(iter(spec.dags()))
        with opener() as store:
            if store.find_account(integration, key) is None:
                raise HTTPException(404, f"no account {key!r} in {integration!r}")
        body = {
            "logical_date": None,
            "conf": {"accounts": [key], "date_from": date_from.isoformat(), "date_to": date_to.isoformat()},
            "note": f"manual sync of {key} from the tillflow health page by {caller.name}",
        }
        with client_for(_api_root(request)) as client:
            resp = client.post(
                f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                json=body,
                headers={"Authorization": f"Bearer {caller.token}"},
            )
        try:
            payload = resp.json()
        except ValueError:
            payload = {"detail": resp.text[:500]}
        result = {"dag_id": dag_id, "status_code": resp.status_code, "conf": body["conf"]}
        if resp.status_code < 300:
            run_id = payload.get("dag_run_id")
            result |= {"dag_run_id": run_id, **run_links(ui_base_url(), dag_id, run_id, None)}
        else:
            result["detail"] = payload.get("detail", payload)
        return resp.status_code, result

    @app.post("/sync.json", dependencies=[Depends(same_origin)])
    async def sync_json(request: Request, caller: Caller = Depends(current_user)):
        from fastapi.responses import JSONResponse

        code, result = await run_in_threadpool(trigger, request, caller, await request.json())
        return JSONResponse(result, status_code=201 if code < 300 else code)

    @app.post("/sync", response_class=HTMLResponse, dependencies=[Depends(same_origin)])
    async def sync_form(request: Request, caller: Caller = Depends(page_user)):
        form = await request.form()
        code, result = await run_in_threadpool(trigger, request, caller, {k: form.get(k) for k in form})
        root = request.scope.get("root_path", "")
        if code < 300:
            text = f"Started {result['dag_id']} run {result['dag_run_id']} for {form.get('account')}"
            link = f'<a id="run-link" target="_top" href="{_e(result["last_run_url"])}">open the run</a>'
        else:
            text = f"Airflow refused the run ({code}): {result.get('detail')}"
            link = ""
        return HTMLResponse(
            _page(
                "manual sync",
                f'<p class="msg" id="message">{_e(text)}</p><p>{link}</p>'
                f'<p><a href="{_e(root)}/health">← sync health</a></p>',
            ),
            status_code=200 if code < 300 else code,
        )

    return app
