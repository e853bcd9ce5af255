"""Replay from raw landing against the stand-ins and real PostgreSQL: after a mapping change a dry run shows,
per key and day, what the target holds now and what would be sent, and changes nothing; the replay sends it —
in a run (the ``replay`` Param) and from the CLI — and the POS is never called. Snapshot kinds are refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from runs import run_flows
from tillflow.errors import ConfigError
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams, WorkItem, plan

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "dags" / "ajour_to_planday.yaml")
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5}
D1, D2 = date(2026, 11, 17), date(2026, 11, 18)
AT = datetime(2026, 11, 20, 9, tzinfo=UTC)


def _run(store, conns, run_id, params):
    return run_flows(store, SPEC, conns, run_id=run_id, params=params, at=AT)[1]


def _planday(sandbox, client="nord"):
    state = requests.get(f"{sandbox.planday_url}/_sandbox/state", timeout=10).json()["portals"].get(client, {})
    return {
        (str(r["revenueUnitId"]), r["date"]): (Decimal(r["turnover"]), r["writes"]) for r in state.get("revenue", [])
    }


def _calls(url):
    return len(requests.get(f"{url}/_sandbox/requests", timeout=5).json())


def _first_run(store, ajour_account):
    account, conns = ajour_account(http=FAST)
    outcomes = _run(store, conns, "first", RunParams(date_from=D1, date_to=D2))
    assert [o.status for o in outcomes] == ["success"]
    return account, conns


def test_dry_run_shows_the_changes_and_sends_nothing_then_the_replay_sends_them(store, sandbox, ajour_account):
    account, conns = _first_run(store, ajour_account)
    held = _planday(sandbox)
    assert len(held) == 6  # three units, two days
    ajour_calls = _calls(sandbox.ajour_url)
    snapshot = store.snapshot(account.id)

    # the terrace (L3) belongs to the bar (1002) from now on
    store.set_mapping(account.id, "location", "L3", "1002")
    before_mapping_change = {k: v[0] for k, v in held.items()}
    params = RunParams(date_from=D1, date_to=D2, dry_run=True)
    assert params.replay and params.dry_run
    outcomes = _run(store, conns, "preview", params)
    (outcome,) = outcomes
    assert outcome.status == "success", outcome.error
    assert outcome.preview["would_send"] == 4 and outcome.preview["unchanged"] == 2
    assert _planday(sandbox) == held  # nothing sent
    assert _calls(sandbox.ajour_url) == ajour_calls  # the POS was not called
    after = store.snapshot(account.id)
    assert {k: after[k] for k in ("revenue", "delivery", "rejects", "landing")} == {
        k: snapshot[k] for k in ("revenue", "delivery", "rejects", "landing")
    }
    (act,) = store.activity(run_id="preview")
    assert act["status"] == "success" and "would be sent" in act["detail"] and act["delivered"] == 0

    # the same preview straight from the replay module: row by row
    from tillflow.replay import replay_item

    item = WorkItem(account.id, account.key, account.name, "revenue", D1, D2, "keep_manual")
    result = replay_item(store, SPEC, item, run_id="p2", target_conn=conns["planday_cafe_nord"], dry_run=True)
    rows = {(r.key, r.day.isoformat()): r for r in result.rows}
    assert set(rows) == set(held)
    for key, row in rows.items():
        assert row.target_now == f"{before_mapping_change[key]:.2f}", row
    for unit in ("1001", "1002"):  # the terrace's sales move from the restaurant to the bar
        for day in (D1, D2):
            row = rows[(unit, day.isoformat())]
            assert row.would_send and row.note == "changed", row
    moved = {
        day: before_mapping_change[("1001", day.isoformat())] - Decimal(rows[("1001", day.isoformat())].would_send)
        for day in (D1, D2)
    }
    for day in (D1, D2):
        assert moved[day] > 0
        assert (
            Decimal(rows[("1002", day.isoformat())].would_send)
            == before_mapping_change[("1002", day.isoformat())] + moved[day]
        )
        assert rows[("1003", day.isoformat())].would_send == "" and rows[("1003", day.isoformat())].note == "unchanged"
    assert store.snapshot(account.id)["revenue"] == snapshot["revenue"]

    # the replay sends exactly that
    outcomes = _run(store, conns, "replay", RunParams(date_from=D1, date_to=D2, replay=True))
    assert [o.status for o in outcomes] == ["success"], outcomes
    assert outcomes[0].preview["sent"] == 4
    now = _planday(sandbox)
    for key, row in rows.items():
        want = Decimal(row.would_send) if row.would_send else before_mapping_change[key]
        assert now[key][0] == want
        assert now[key][1] == held[key][1] + (1 if row.would_send else 0)  # only the changed ones written again
    assert _calls(sandbox.ajour_url) == ajour_calls
    (act,) = store.activity(run_id="replay")
    assert act["status"] == "success" and act["delivered"] == 4 and act["fetched"] > 0
    assert "replay from raw landing" in act["detail"]

    # a second replay sends nothing
    outcomes = _run(store, conns, "replay-again", RunParams(date_from=D1, date_to=D2, replay=True))
    assert outcomes[0].preview["sent"] == 0
    assert _planday(sandbox) == now


def test_cli_dry_run_prints_the_table_and_the_replay_delivers(store, sandbox, ajour_account, capsys):
    from tillflow.cli import main

    account, _ = _first_run(store, ajour_account)
    held = _planday(sandbox)
    ajour_calls = _calls(sandbox.ajour_url)
    store.set_mapping(account.id, "location", "L3", "1002")
    capsys.readouterr()

    assert (
        main(["-i", SPEC.integration, "replay", "cafe_nord", "--from", "2026-11-17", "--to", "2026-11-18", "--dry-run"])
        == 0
    )
    out = capsys.readouterr().out
    assert "target now" in out and "would send" in out
    assert "dry run: nothing written, nothing sent" in out
    assert "would send 4, unchanged 2" in out
    lines = [line for line in out.splitlines() if line.startswith("cafe_nord ")]
    notes = [line.split()[-1] for line in lines if "2026-11-1" in line.split()[3]]
    assert sorted(notes) == ["changed"] * 4 + ["unchanged"] * 2
    assert _planday(sandbox) == held

    assert main(["replay", "cafe_nord", "--from", "2026-11-17", "--to", "2026-11-18"]) == 0
    out = capsys.readouterr().out
    assert "sent 4, unchanged 2" in out and "delivered=4" in out
    assert _planday(sandbox) != held
    assert _calls(sandbox.ajour_url) == ajour_calls


def test_keep_existing_and_overwrite_choose_the_write_mode(store, sandbox, ajour_account, capsys):
    from tillflow.cli import main

    account, _ = _first_run(store, ajour_account)
    store.set_mapping(account.id, "location", "L3", "1002")
    capsys.readouterr()
    # keep existing: the store keeps its values, so nothing changes and nothing would be sent
    assert (
        main(["replay", "cafe_nord", "--from", "2026-11-17", "--to", "2026-11-18", "--keep-existing", "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert "would send 0, unchanged 6" in out and "kept integration value" in out
    # overwrite: every row of the window is sent again (forced)
    assert main(["replay", "cafe_nord", "--from", "2026-11-17", "--to", "2026-11-18", "--overwrite", "--dry-run"]) == 0
    assert "would send 6, unchanged 0" in capsys.readouterr().out


def test_nothing_landed_is_one_clear_error(store, sandbox, ajour_account, capsys):
    from tillflow.cli import main

    ajour_account(http=FAST)
    assert main(["replay", "cafe_nord", "--from", "2026-11-17", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "nothing landed for cafe_nord revenue in 2026-11-17" in err and "never calls the POS" in err
    assert main(["replay", "cafe_nord", "--from", "2026-11-18", "--to", "2026-11-17"]) == 2
    assert "--to: 2026-11-17 lies before --from 2026-11-18" in capsys.readouterr().err
    assert main(["replay", "cafe_nord", "--from", "2026-11-17", "--flow", "nope"]) == 2
    assert "--flow: ajour_to_planday has no flow 'nope'" in capsys.readouterr().err


def test_snapshot_kinds_are_refused_naming_why(store):
    from tillflow.replay import why_not_replayable

    spec = load_spec(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")
    for kind in ("stock", "products"):
        assert "snapshot" in why_not_replayable(kind) and "overwrite what changed at the target" in why_not_replayable(
            kind
        )
    for kind in ("revenue", "revenue_hourly", "clock_times", "ledger", "orders"):
        assert why_not_replayable(kind) is None
    stock = [f for f in spec.flows if f.kind == "stock"]
    with pytest.raises(ConfigError, match=r"^replay: stock is a snapshot kind"):
        plan(store, spec, logical_date=AT, params=RunParams(replay=True), manual=True, flows=stock)


MPLUS = load_spec(ROOT / "dags" / "mpluskassa_to_shiftbase.yaml")


def _mplus_account(store, sandbox, key="centrum"):
    from sandbox.shiftbase import ShiftbaseApp

    ident = "shop7001"
    conns = {
        f"mpluskassa_{key}": ConnectionInfo(
            conn_id=f"mpluskassa_{key}",
            host=f"{sandbox.mpluskassa_url}/7001",
            login=ident,
            password=f"secret-{ident}",
            extra=FAST,
        ),
        f"shiftbase_{key}": ConnectionInfo(
            conn_id=f"shiftbase_{key}", host=f"{sandbox.shiftbase_url}/api", password=f"sb-{key}", extra=FAST
        ),
    }
    org = ShiftbaseApp.org_for(f"sb-{key}")
    account = store.upsert_account(
        MPLUS.integration,
        key,
        name="Centrum",
        conn_id=f"mpluskassa_{key}",
        target_conn_id=f"shiftbase_{key}",
        settings=parse_settings(
            {
                "timezone": "Europe/Amsterdam",
                "vat": "excl",
                "lookback_days": 1,
                "flows": {"revenue": {"enabled": False}},
            },
            spec=MPLUS,
        ),
    )
    for number, user in zip(("101", "102", "103"), org["users"], strict=False):
        store.set_mapping(account.id, "employee", number, user["id"])
    store.set_mapping(account.id, "employee", "105", None)
    return account, conns, org


def _mplus_run(store, conns, run_id, params):
    return run_flows(store, MPLUS, conns, run_id=run_id, flows=["clock_times"], params=params, at=AT, threads=None)[1]


def test_clock_times_replay_imports_the_shifts_of_a_newly_mapped_employee(store, sandbox):
    account, conns, org = _mplus_account(store, sandbox)
    day = RunParams(date_from=D1, date_to=D1)
    (o,) = _mplus_run(store, conns, "ct-first", day)
    assert o.status == "success", o.error
    sheets = requests.get(f"{sandbox.shiftbase_url}/_sandbox/accounts/sb-centrum", timeout=10).json()["account"]
    before = len(sheets["timesheets"])
    unmapped = {r["payload"]["employee_number"] for r in store.rejects(account.id) if "is not mapped" in r["reason"]}
    assert unmapped, "the stand-in's day has shifts of an employee who is not mapped"
    pos_calls = _calls(sandbox.mpluskassa_url)

    employee = sorted(unmapped)[0]
    store.set_mapping(account.id, "employee", employee, org["users"][3]["id"])
    (o,) = _mplus_run(store, conns, "ct-preview", RunParams(date_from=D1, date_to=D1, dry_run=True))
    assert o.status == "success", o.error
    new = o.preview["would_send"]
    assert new >= 1 and o.preview["unchanged"] == before
    now = requests.get(f"{sandbox.shiftbase_url}/_sandbox/accounts/sb-centrum", timeout=10).json()["account"]
    assert len(now["timesheets"]) == before

    (o,) = _mplus_run(store, conns, "ct-replay", RunParams(date_from=D1, date_to=D1, replay=True))
    assert o.status == "success", o.error
    assert o.preview["sent"] == new
    now = requests.get(f"{sandbox.shiftbase_url}/_sandbox/accounts/sb-centrum", timeout=10).json()["account"]
    assert len(now["timesheets"]) == before + new
    assert _calls(sandbox.mpluskassa_url) == pos_calls  # the POS was not called


KASH = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")


def test_ledger_replay_after_a_chart_change_reverses_and_reposts_each_order(store, sandbox):
    from datetime import timedelta

    day = date.today() - timedelta(days=2)
    key = "lille"
    requests.post(f"{sandbox.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": 2}, timeout=5)
    ledger = {"fiscal_year_start": str(day - timedelta(days=2))}
    settings = {"timezone": "Europe/Paris", "lookback_days": 1, "flows": {"ledger": ledger}}
    account = store.upsert_account(
        KASH.integration,
        key,
        name="Lille",
        conn_id=f"kashclick_{key}",
        target_conn_id=f"pennylane_{key}",
        settings=parse_settings(settings, spec=KASH),
    )
    conns = {
        f"kashclick_{key}": ConnectionInfo(
            conn_id=f"kashclick_{key}", host=sandbox.kashclick_url, login=key, password=f"pw-{key}", extra=FAST
        ),
        f"pennylane_{key}": ConnectionInfo(
            conn_id=f"pennylane_{key}",
            host=f"{sandbox.pennylane_url}/api/external/v2",
            login="tillflow-app",
            password=f"prt-{key}",
            extra={"client_secret": "cs-test", **FAST},
        ),
    }

    def run(run_id, params):
        return run_flows(store, KASH, conns, run_id=run_id, flows=["ledger"], params=params, threads=None)[1]

    def entries():
        company = requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/{key}", timeout=10).json()["company"]
        return company.get("entries") or company.get("ledger_entries") or []

    (o,) = run("l-first", RunParams(date_from=day, date_to=day))
    assert o.status == "success", o.error
    posted = len(entries())
    pos_calls = _calls(sandbox.kashclick_url)
    orders = [
        r for r in store.conn.execute("SELECT event_key FROM tillflow.outbox WHERE event_key LIKE %s", ("order:%",))
    ]
    store.conn.commit()
    assert orders

    # every sales account moves (the accountant's new chart): each order is reversed and posted anew
    chart = {"sales": {"20": "707200", "10": "706100", "5.5": "707155", "2.1": "707121"}}
    store.update_settings(
        account.id, parse_settings({**settings, "flows": {"ledger": {**ledger, "chart": chart}}}, spec=KASH)
    )
    (o,) = run("l-preview", RunParams(date_from=day, date_to=day, dry_run=True))
    assert o.status == "success", o.error
    assert o.preview["would_send"] == len(orders)
    assert len(entries()) == posted
    (o,) = run("l-replay", RunParams(date_from=day, date_to=day, replay=True))
    assert o.status == "success", o.error
    assert o.preview["sent"] == len(orders)
    assert len(entries()) == posted + 2 * len(orders)  # a reversal and a new revision per order
    assert _calls(sandbox.kashclick_url) == pos_calls


CCV = load_spec(ROOT / "dags" / "ccv_salespos_to_eaccounting.yaml")


def test_orders_replay_creates_what_the_new_settings_let_through_and_skips_the_snapshot_flows(store, sandbox):
    from datetime import timedelta

    import tillflow.tokens as tokens
    from tillflow.targets.eaccounting import EaccountingClient

    shop = "replaywinkel"
    base = {"timezone": "Europe/Amsterdam", "lookback_days": 14}
    account = store.upsert_account(
        CCV.integration,
        shop,
        name="Replay Winkel",
        conn_id=f"ccv_{shop}",
        target_conn_id=f"eaccounting_{shop}",
        settings=parse_settings(base, spec=CCV),
    )
    conns = {
        f"ccv_{shop}": ConnectionInfo(
            conn_id=f"ccv_{shop}", host=sandbox.ccv_url, login=f"pk-{shop}", password=f"sk-{shop}", extra=FAST
        ),
        f"eaccounting_{shop}": ConnectionInfo(
            conn_id=f"eaccounting_{shop}",
            host=f"{sandbox.eaccounting_url}/v2",
            login="tillflow-app",
            password=f"ert-{shop}",
            extra={"client_secret": "cs-test", "token_url": f"{sandbox.eaccounting_url}/connect/token", **FAST},
        ),
    }
    tokens.set_default(tokens.DbTokenStore())
    ccv = requests.get(f"{sandbox.ccv_url}/_sandbox/shops/{shop}", timeout=10).json()["shop"]
    company = requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=10).json()["company"]
    client = EaccountingClient.from_connection(conns[f"eaccounting_{shop}"])
    for sku in sorted({p["sku"] for p in ccv["products"]}):
        client.create_article(
            {
                "IsActive": True,
                "Number": sku,
                "Name": f"Article {sku}",
                "NetPrice": Decimal("8.26"),
                "GrossPrice": Decimal("9.00"),
                "CodingId": company["codings"][0]["Id"],
                "UnitId": company["units"][0]["Id"],
            }
        )
    window = {"date_from": date.today() - timedelta(days=14), "date_to": date.today()}

    def run(run_id, params, flows=None):
        return run_flows(store, CCV, conns, run_id=run_id, flows=flows or ["orders"], params=params, threads=None)

    def ea_orders():
        return requests.get(f"{sandbox.eaccounting_url}/_sandbox/companies/{shop}", timeout=10).json()["company"][
            "orders"
        ]

    _, (o,) = run("o-first", RunParams(**window))
    assert o.status == "success", o.error
    created = len(ea_orders())
    unpaid = [x for x in ccv["orders"] if not x["paid"]]
    assert created and unpaid
    ccv_calls = _calls(sandbox.ccv_url)

    # the shop wants unpaid orders too: replay the landed orders with the new setting
    settings = {**base, "flows": {"orders": {"paid_only": False}}}
    store.update_settings(account.id, parse_settings(settings, spec=CCV))
    planned, (o,) = run("o-preview", RunParams(**window, dry_run=True), flows=list(CCV.flows))
    assert o.status == "success", o.error
    assert {k: v for k, v in planned.not_run.items() if "snapshot" in v}.keys() == {
        f"{shop} {f.name}" for f in CCV.flows if f.kind in ("products", "stock")
    }  # the snapshot flows are left out, saying why
    new = o.preview["would_send"]
    assert new >= 1 and len(ea_orders()) == created
    _, (o,) = run("o-replay", RunParams(**window, replay=True))
    assert o.status == "success", o.error
    assert o.preview["sent"] == new and len(ea_orders()) == created + new
    assert _calls(sandbox.ccv_url) == ccv_calls
