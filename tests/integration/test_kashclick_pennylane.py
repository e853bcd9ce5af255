"""Kash.click → Pennylane through the platform's steps (plan → shard → fetch/map/queue/post) against the
stand-ins and real PostgreSQL: every event posted once and balanced, totals equal to the POS, a re-run
posts nothing, lost answers reconciled without duplicates, a changed event reversed and re-posted, a
cancelled one reversed, bad records to rejects while the rest posts, and the history import."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from runs import run_flows
from tillflow.posting import Chart
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams
from tillflow.windows import last_closed_business_date

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "dags" / "kashclick_to_pennylane.yaml")
DAY = date.today() - timedelta(days=2)
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5, "max_retry_after": 1}


def _account(store, sandbox, key, *, orders_per_day=3, **ledger):
    requests.post(
        f"{sandbox.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": orders_per_day}, timeout=5
    ).raise_for_status()
    settings = {
        "timezone": "Europe/Paris",
        "lookback_days": 1,
        "flows": {"ledger": {"fiscal_year_start": str(DAY - timedelta(days=2)), **ledger}},
    }
    account = store.upsert_account(
        SPEC.integration,
        key,
        name=key.title(),
        conn_id=f"kashclick_{key}",
        target_conn_id=f"pennylane_{key}",
        settings=parse_settings(settings, spec=SPEC),
    )
    return account, _conns(sandbox, key)


def _conns(sandbox, key):
    return {
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


def _run(store, conns, run_id, *, flow="ledger", day=DAY, manual=True, at=None):
    params = RunParams(date_from=day, date_to=day) if manual else RunParams()
    return run_flows(store, SPEC, conns, run_id=run_id, flows=[flow], params=params, at=at, manual=manual)


def _company(sandbox, key):
    return requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/{key}", timeout=10).json()["company"]


def _entries(sandbox, key):
    company = _company(sandbox, key)
    return company.get("entries") or company.get("ledger_entries") or []


def _pos_day(sandbox, key, day=DAY):
    return requests.get(f"{sandbox.kashclick_url}/_sandbox/shops/{key}/day/{day}", timeout=10).json()


def test_a_day_posts_every_event_once_balanced_and_a_rerun_posts_nothing(store, sandbox):
    account, conns = _account(store, sandbox, "lyon")
    _, outcomes = _run(store, conns, "day-1")
    assert [o.status for o in outcomes] == ["success"], outcomes[0].error
    entries = _entries(sandbox, "lyon")
    pieces = Counter(e["piece_number"] for e in entries)
    assert pieces and max(pieces.values()) == 1  # one entry per posting key
    pos = _pos_day(sandbox, "lyon")
    orders = [o for o in pos["orders"] if o["status"] == "validated"]
    payments = [p for p in pos["payments"] if p.get("status", "validated") == "validated"]
    assert len(entries) >= len(orders) + len(payments)
    for e in entries:  # every entry balances to the cent
        lines = e.get("ledger_entry_lines") or e.get("lines")
        assert sum(Decimal(x["debit"]) for x in lines) == sum(Decimal(x["credit"]) for x in lines)
    accounts = requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/lyon/trial_balance", timeout=10).json()
    accounts = accounts["accounts"]
    general = {Chart().general_sales, Chart().general_revenue}  # the closings' global lines, checked below
    sales_and_vat = sum(
        Decimal(a["credit"]) - Decimal(a["debit"])
        for number, a in accounts.items()
        if number.startswith(("70", "4457")) and number not in general
    )
    assert sales_and_vat == sum(Decimal(o["totalIncl"]) for o in orders)  # the books equal the POS
    # each closing's global lines carry its expected takings: the register's payments of the day, once
    takings = sum(Decimal(m["expected"]) for c in pos["closings"] for m in c["methods"])
    assert takings == sum(Decimal(p["amount"]) for p in payments) > 0
    assert accounts[Chart().general_sales]["debit"] == accounts[Chart().general_revenue]["credit"] == f"{takings:.2f}"
    assert pieces.keys() >= {f"lyon:closing:{c['id']}:r1" for c in pos["closings"]}
    vat_accounts = {a["number"]: a["vat_rate"] for a in _company(sandbox, "lyon")["ledger_accounts"]}
    rates = {str(line["vatRate"]) for o in orders for line in o["lines"]}
    expected = {Chart().vat[r]: f"FR_{int(Decimal(r) * 10)}" for r in rates}
    assert {n: vat_accounts[n] for n in expected} == expected  # created with Pennylane's VAT rate code

    _, outcomes = _run(store, conns, "day-2")
    assert outcomes[0].status == "success"
    assert len(_entries(sandbox, "lyon")) == len(entries)  # nothing posted twice


def test_lost_answers_are_looked_up_before_any_repost(store, sandbox):
    account, conns = _account(store, sandbox, "nice")
    requests.post(
        f"{sandbox.pennylane_url}/_sandbox/lose",
        json={"count": 3, "paths": ["/api/external/v2/ledger_entries"]},
        timeout=5,
    ).raise_for_status()
    _, outcomes = _run(store, conns, "lost-1")
    assert outcomes[0].status == "failed" and outcomes[0].retryable  # unknown outcomes: the retry looks them up
    _, outcomes = _run(store, conns, "lost-2")
    assert outcomes[0].status == "success", outcomes[0].error
    pieces = Counter(e["piece_number"] for e in _entries(sandbox, "nice"))
    assert max(pieces.values()) == 1
    states = Counter(
        r["state"]
        for r in store.conn.execute("SELECT state FROM tillflow.outbox WHERE account_id = %s", (account.id,)).fetchall()
    )
    store.conn.commit()
    assert states["reconciled"] == 3 and "unknown" not in states


def test_a_changed_order_is_reversed_and_posted_anew_a_cancelled_one_reversed(store, sandbox):
    account, conns = _account(store, sandbox, "metz")
    _run(store, conns, "chg-1")
    pos = _pos_day(sandbox, "metz")
    first, second = pos["orders"][0]["id"], pos["orders"][1]["id"]
    new_lines = [{"label": "Menu", "quantity": "1", "unitPriceIncl": "19.90", "vatRate": 10, "totalIncl": "19.90"}]
    requests.post(
        f"{sandbox.kashclick_url}/_sandbox/shops/metz",
        timeout=5,
        json={"date": str(DAY), "modify_orders": {first: {"lines": new_lines}}, "cancel_orders": [second]},
    ).raise_for_status()
    before = len(_entries(sandbox, "metz"))
    _, outcomes = _run(store, conns, "chg-2")
    assert outcomes[0].status == "success", outcomes[0].error
    history = store.conn.execute(
        "SELECT event_key, kind, revision, state FROM tillflow.outbox WHERE account_id = %s AND event_key = ANY(%s) "
        "ORDER BY id",
        (account.id, [f"order:{first}", f"order:{second}"]),
    ).fetchall()
    store.conn.commit()
    kinds = Counter((r["event_key"], r["kind"]) for r in history)
    assert kinds[(f"order:{first}", "reversal")] == 1 and kinds[(f"order:{first}", "entry")] == 2
    assert kinds[(f"order:{second}", "reversal")] == 1 and kinds[(f"order:{second}", "entry")] == 1
    assert len(_entries(sandbox, "metz")) > before  # reversals and the new revision, never an edit


def test_a_closing_whose_cash_difference_is_corrected_to_zero_is_reversed_and_posted_anew(store, sandbox):
    account, conns = _account(store, sandbox, "tours")
    z = _pos_day(sandbox, "tours")["closings"][0]
    expected = next(m["expected"] for m in z["methods"] if m["method"] == "cash")
    surplus = f"{Decimal(expected) + Decimal('2.00'):.2f}"

    def recount(counted):
        requests.post(
            f"{sandbox.kashclick_url}/_sandbox/shops/tours",
            json={"date": str(DAY), "recount_closings": {z["id"]: {"cash": counted}}},
            timeout=5,
        ).raise_for_status()

    def closing_entries():
        return {e["piece_number"]: e for e in _entries(sandbox, "tours") if f":closing:{z['id']}:" in e["piece_number"]}

    def accounts(entry):
        return {(x["ledger_account"]["number"], x["debit"], x["credit"]) for x in entry["ledger_entry_lines"]}

    recount(surplus)  # counted 2.00 more cash than expected: a gain
    _, outcomes = _run(store, conns, "z-1")
    assert outcomes[0].status == "success", outcomes[0].error
    first = f"tours:closing:{z['id']}:r1"
    assert list(closing_entries()) == [first]
    assert {("530000", "2.00", "0.00"), ("758000", "0.00", "2.00")} <= accounts(closing_entries()[first])

    recount(expected)  # the count is corrected: no difference any more
    _, outcomes = _run(store, conns, "z-2")
    assert outcomes[0].status == "success", outcomes[0].error
    history = store.conn.execute(
        "SELECT kind, revision, state FROM tillflow.outbox WHERE account_id = %s AND event_key = %s ORDER BY id",
        (account.id, f"closing:{z['id']}"),
    ).fetchall()
    store.conn.commit()
    assert [(r["kind"], r["revision"], r["state"]) for r in history] == [
        ("entry", 1, "superseded"),  # posted, then reversed
        ("reversal", 1, "confirmed"),
        ("entry", 2, "confirmed"),
    ]
    held = closing_entries()
    assert sorted(held) == sorted([first, f"{first}:rev", f"tours:closing:{z['id']}:r2"])  # never an edit
    assert accounts(held[first]) == {(n, c, d) for n, d, c in accounts(held[f"{first}:rev"])}
    new = accounts(held[f"tours:closing:{z['id']}:r2"])
    assert not {n for n, _, _ in new} & {"530000", "658000", "758000"}  # only the global lines remain
    balance = requests.get(f"{sandbox.pennylane_url}/_sandbox/companies/tours/trial_balance", timeout=10).json()
    assert balance["accounts"]["758000"]["balance"] == "0.00"

    before = len(_entries(sandbox, "tours"))
    _run(store, conns, "z-3")
    assert len(_entries(sandbox, "tours")) == before  # settled: a re-run posts nothing


def test_bad_records_go_to_rejects_naming_them_and_the_rest_posts(store, sandbox):
    account, conns = _account(store, sandbox, "caen")
    bad = [
        "lines_not_adding_up",
        "unknown_vat_rate",
        "unknown_payment_method",
        "closing_unknown_register",
        "customer_without_email",
        "customer_without_name",
    ]
    requests.post(
        f"{sandbox.kashclick_url}/_sandbox/shops/caen", json={"date": str(DAY), "bad_records": bad}, timeout=5
    ).raise_for_status()
    _, outcomes = _run(store, conns, "bad")
    assert outcomes[0].status == "success", outcomes[0].error
    d = f"{DAY:%Y%m%d}"
    reasons = {r["ref"]: r["reason"] for r in store.rejects(account.id)}
    expected = {
        f"order {d}-lines_not_adding_up": "lines add up to 16.10, field totalIncl says 17.10",
        f"order:{d}-unknown_vat_rate": "field vat_rate 7 has no sales account",
        f"payment:{d}-unknown_payment_method-P1": "field method 'bitcoin' has no account",
        f"closing:Z-R9-{d}": "field register_id 'R9' has no journal",
        f"order {d}-customer_without_email": "missing field(s): customer.email",
        f"order {d}-customer_without_name": "missing field(s): customer.name",
    }
    assert reasons.keys() == expected.keys(), reasons
    for ref, needle in expected.items():
        assert needle in reasons[ref], (ref, reasons[ref])
    # every other event of the day is posted, exactly once (the order paid in bitcoin is a good order)
    pos = _pos_day(sandbox, "caen")
    refused = {f"order:{d}-{k}" for k in ("lines_not_adding_up", "unknown_vat_rate", "customer_without_email")}
    refused |= {f"order:{d}-customer_without_name", f"payment:{d}-unknown_payment_method-P1", f"closing:Z-R9-{d}"}
    events = {f"order:{o['id']}" for o in pos["orders"]} | {f"payment:{p['id']}" for p in pos["payments"]}
    events |= {f"closing:{c['id']}" for c in pos["closings"]}
    assert refused <= events
    pieces = Counter(e["piece_number"] for e in _entries(sandbox, "caen"))
    assert pieces == Counter(f"caen:{event}:r1" for event in events - refused)


def test_the_fiscal_year_start_is_required_when_the_account_is_saved():
    from tillflow.errors import ConfigError

    with pytest.raises(ConfigError, match="fiscal_year_start"):
        parse_settings({"flows": {"ledger": {}}}, spec=SPEC)


def test_the_history_import_posts_from_the_fiscal_year_start_once(store, sandbox):
    now = datetime.now(UTC)  # one instant for the plan and for what it must choose (the 05:00 cutoff)
    account, conns = _account(store, sandbox, "brest", orders_per_day=1)
    store.update_settings(account.id, account.settings.model_copy(update={"activated_at": now - timedelta(minutes=10)}))
    planned, outcomes = _run(store, conns, "hist-1", flow="history", manual=False, at=now)
    assert [o.status for o in outcomes] == ["success"], outcomes[0].error if outcomes else planned.not_run
    item = planned.items[0]
    # the last closed business day: yesterday, or the day before while today's cutoff (05:00 local) is not past
    s = account.settings
    closed = last_closed_business_date(now, s.timezone, s.business_day_cutoff)
    assert item.window_start == DAY - timedelta(days=2) and item.window_end == closed
    days = {e["date"] for e in _entries(sandbox, "brest")}
    assert str(DAY - timedelta(days=2)) in days
    planned, _ = _run(store, conns, "hist-2", flow="history", manual=False, at=now + timedelta(minutes=5))
    assert planned.items == [] and "done" in planned.not_run["brest"]


def test_a_payload_the_client_refuses_before_sending_fails_that_row_only():
    from tillflow.errors import ConfigError, RemoteError, is_permanent
    from tillflow.flows.ledger import _Poster

    class Refuses:
        name = "pennylane"

        def post(self, payload, key):
            raise ConfigError(f"entry {key}: lines do not balance")

    with pytest.raises(RemoteError) as err:
        _Poster(Refuses(), store=None).post({}, "acct:order:1:r1")
    assert err.value.status == 422 and is_permanent(err.value) and "do not balance" in str(err.value)


def test_the_demo_trial_balance_matches_the_pos_day(store, sandbox):
    from tillflow.demo import PENNYLANE_DEMO, pennylane_summary, seed_pennylane

    key = PENNYLANE_DEMO["key"]
    seed_pennylane(store)  # the demo's own account: default chart, fiscal year from 1 January
    requests.post(f"{sandbox.kashclick_url}/_sandbox/shops/{key}", json={"orders_per_day": 5}, timeout=5)
    conns = _conns(sandbox, key)
    _, outcomes = _run(store, conns, "demo")
    assert outcomes[0].status == "success", outcomes[0].error
    text, ok = pennylane_summary(
        store, {"kashclick_url": sandbox.kashclick_url, "pennylane_url": sandbox.pennylane_url}
    )
    assert ok, text
    assert "POS till closings: takings" in text and "700000 debit" in text and "700100 credit" in text
