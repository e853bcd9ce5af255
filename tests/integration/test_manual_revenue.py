"""Hand-entered and Excel revenue for Kassatellen → Eitje: local hours (DST included), target keys checked
against Eitje's own list, whole-file refusal naming every bad row, dry run, list/delete, keep_manual."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import openpyxl
import pytest
import requests
from test_kassatellen_eitje import ROOT, _account, _eitje, _run
from tillflow.cli import main
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams

SPEC = load_spec(ROOT / "dags" / "kassatellen_to_eitje.yaml")
INTEGRATION = ["-i", "kassatellen_to_eitje"]


@pytest.fixture
def cafe(store, sandbox, monkeypatch):
    account, conns = _account(store, sandbox)
    for conn_id, c in conns.items():  # the CLI reads Airflow connections: here from the environment
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps(
                {"conn_type": "http", "host": c.host, "login": c.login, "password": c.password, "extra": c.extra}
            ),
        )
    return account, conns


def cli(capsys, *argv):
    code = main([*INTEGRATION, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _xlsx(path, rows, header=("account", "group", "date", "hour", "amount")):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(list(header))
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return path


def test_hours_are_local_clock_hours_and_the_repeated_dst_hour_needs_its_offset(store, capsys, cafe):
    account, _ = cafe
    code, _, err = cli(capsys, "revenue", "set", "cafe", "502", "2026-10-24", "7.00", "--hour", "02:00")
    assert code == 2 and "02:00 happens twice on 2026-10-25" in err and "02:00+02:00 or 02:00+01:00" in err
    code, _, err = cli(capsys, "revenue", "set", "cafe", "502", "2026-03-28", "7.00", "--hour", "02")
    assert code == 2 and "does not exist on 2026-03-29" in err
    assert cli(capsys, "revenue", "set", "cafe", "502", "2026-10-24", "1.00", "--hour", "02:00+02:00")[0] == 0
    assert cli(capsys, "revenue", "set", "cafe", "502", "2026-10-24", "2.00", "--hour", "02:00+01:00")[0] == 0
    assert cli(capsys, "revenue", "set", "cafe", "501", "2026-11-18", "3.00", "--hour", "14")[0] == 0
    rows = {(r["target_key"], r["business_date"], r["hour"]): r["amount"] for r in store.revenue(account.id)}
    # business day 24 Oct starts 05:00 CEST: 02:00+02:00 next night is hour 21, the second 02:00 hour 22
    assert rows == {
        ("502", date(2026, 10, 24), 21): Decimal("1.00"),
        ("502", date(2026, 10, 24), 22): Decimal("2.00"),
        ("501", date(2026, 11, 18), 9): Decimal("3.00"),
    }
    code, out, _ = cli(capsys, "revenue", "list", "cafe")
    assert code == 0 and "02:00+02:00" in out and "02:00+01:00" in out and "14:00+01:00" in out


def test_an_unknown_group_is_refused_naming_it(store, capsys, cafe):
    code, out, err = cli(capsys, "revenue", "set", "cafe", "999", "2026-11-18", "10")
    assert code == 2 and out == ""
    assert "eitje has no '999' for cafe" in err and "501, 502, 503" in err
    assert store.revenue(cafe[0].id) == []


def test_a_bad_file_is_refused_whole_listing_every_bad_row(store, capsys, cafe, tmp_path):
    path = _xlsx(
        tmp_path / "bad.xlsx",
        [
            ("cafe", 501, date(2026, 11, 18), 12, 10),
            ("cafe", 501, "18-11-2026", 13, 10),  # bad date
            ("cafe", 999, date(2026, 11, 18), 14, 10),  # unknown group
            ("cafe", 501, date(2026, 11, 18), 12, 11),  # duplicate of row 2
            ("cafe", 502, date(2026, 11, 18), None, "-3"),  # negative
        ],
    )
    code, out, err = cli(capsys, "revenue", "import", str(path))
    assert code == 1 and "nothing imported" in out
    assert err.splitlines() == [
        "row 3, column date: expected YYYY-MM-DD, got '18-11-2026'",
        "row 5, duplicate of row 2 (same account, group, date and hour)",
        "row 6, column amount: negative amount -3",
        "row 4, column group: eitje has no '999' for cafe (known: 501, 502, 503)",
    ]
    assert store.revenue(cafe[0].id) == []

    no_hour_col = _xlsx(
        tmp_path / "cols.xlsx", [("cafe", 501, date(2026, 11, 18))], header=("account", "group", "date")
    )
    code, _, err = cli(capsys, "revenue", "import", str(no_hour_col))
    assert code == 2 and "misses column(s) amount" in err


def test_a_good_file_imports_atomically_dry_run_first_then_list_and_delete(store, capsys, cafe, sandbox, tmp_path):
    account, conns = cafe
    path = ROOT / "include" / "demo" / "eitje_revenue.xlsx"
    store.delete_account("kassatellen_to_eitje", "de_leeuw")
    store.upsert_account(
        "kassatellen_to_eitje",
        "de_leeuw",
        name="De Leeuw",
        conn_id="kassatellen_cafe",
        target_conn_id="eitje_cafe",
        settings=parse_settings({"timezone": "Europe/Amsterdam"}, spec=SPEC),
    )
    code, out, _ = cli(capsys, "revenue", "import", str(path), "--dry-run")
    assert code == 0 and "dry run: 3 change(s), 0 unchanged, 3 row(s); nothing written" in out
    leeuw = store.get_account("kassatellen_to_eitje", "de_leeuw")
    assert store.revenue(leeuw.id) == []
    code, out, _ = cli(capsys, "revenue", "import", str(path))
    assert code == 0 and "imported 3 row(s) from eitje_revenue.xlsx: 3 changed" in out
    assert {(r["target_key"], r["hour"], r["origin"]) for r in store.revenue(leeuw.id)} == {
        ("503", None, "excel"),
        ("501", 7, "excel"),
        ("502", 22, "excel"),
    }
    assert cli(capsys, "revenue", "import", str(path))[1].endswith("0 changed, 3 unchanged\n")  # idempotent
    code, out, _ = cli(capsys, "revenue", "list", "de_leeuw")
    assert "3 row(s) entered by hand" in out
    assert cli(capsys, "revenue", "delete", "de_leeuw", "503", "2026-11-20")[0] == 0
    assert len(store.revenue(leeuw.id)) == 2
    assert cli(capsys, "revenue", "delete", "de_leeuw", "503", "2026-11-20")[0] == 2  # nothing left to undo


def test_keep_manual_protects_a_hand_value_from_the_pos_and_the_run_delivers_it(store, capsys, cafe, sandbox):
    account, conns = cafe
    assert cli(capsys, "revenue", "set", "cafe", "501", "2026-11-18", "999.99", "--hour", "14")[0] == 0
    assert cli(capsys, "revenue", "set", "cafe", "503", "2026-11-18", "250")[0] == 0  # a whole-day value
    _, outcomes = _run(
        store,
        conns,
        run_id="keep",
        at=datetime(2026, 11, 20, 12, tzinfo=UTC),
        params=RunParams(date_from=date(2026, 11, 18), date_to=date(2026, 11, 18)),
    )
    assert outcomes[0].status == "success", outcomes[0].error
    held = {(r["revenue_group_id"], r["hour_start"]): Decimal(str(r["amount"])) for r in _eitje(sandbox, "cafe")}
    assert held[(501, "2026-11-18T13:00:00Z")] == Decimal("999.99")  # 14:00 CET; the POS value was kept out
    assert held[(503, None)] == Decimal("250.00")
    assert store.activity(run_id="keep")[0]["kept"] >= 1
    requests.get(f"{sandbox.eitje_url}/_sandbox/state", timeout=5).raise_for_status()
