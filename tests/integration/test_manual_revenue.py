"""Hand-entered and Excel revenue for Kassatellen → Eitje: local hours (DST included), target keys checked
against Eitje's own list, whole-file refusal naming every bad row, dry run, list/delete, keep_manual."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import openpyxl
import pytest
from test_kassatellen_eitje import ROOT, _account, _eitje, _pos_hours, _run
from tillflow.cli import main
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams
from vendor_reads import kassatellen_rows

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


def test_revenue_set_dry_run_shows_the_change_and_writes_nothing(store, capsys, cafe):
    account, _ = cafe
    set_501 = ("revenue", "set", "cafe", "501", "2026-11-18")
    code, out, _ = cli(capsys, *set_501, "12.50", "--hour", "14", "--dry-run")
    assert (code, out) == (
        0,
        "cafe group 501 2026-11-18 14:00+01:00 = 12.50 (new)\ndry run: 1 change(s), nothing written\n",
    )
    assert store.revenue(account.id) == []
    assert cli(capsys, *set_501, "12.50", "--hour", "14")[0] == 0
    code, out, _ = cli(capsys, *set_501, "12.50", "--hour", "14", "--dry-run")
    assert out.endswith("(unchanged)\ndry run: 0 change(s), nothing written\n")
    code, out, _ = cli(capsys, *set_501, "20", "--hour", "14", "--dry-run")
    assert "= 20.00 (was 12.50)" in out
    assert [(r["amount"], r["origin"]) for r in store.revenue(account.id)] == [(Decimal("12.50"), "manual")]


@pytest.mark.parametrize("hour", ["25", "24", "-1", "14:30"])
def test_an_hour_out_of_range_is_refused_naming_the_field(store, capsys, cafe, hour):
    code, out, err = cli(capsys, "revenue", "set", "cafe", "501", "2026-11-18", "10", "--hour", hour)
    assert (code, out) == (2, "")
    assert err == f"error: hour: expected a local hour 0-23 (14, 14:00 or 02:00+01:00), got {hour!r}\n"
    assert store.revenue(cafe[0].id) == []


def test_an_excel_file_without_an_hour_column_imports_whole_days(store, capsys, cafe, tmp_path):
    path = _xlsx(
        tmp_path / "days.xlsx",
        [("cafe", 501, date(2026, 11, 18), 100), ("cafe", 503, "2026-11-19", "7,5")],
        header=("account", "group", "date", "amount"),
    )
    code, out, _ = cli(capsys, "revenue", "import", str(path))
    assert code == 0 and out.endswith("imported 2 row(s) from days.xlsx: 2 changed, 0 unchanged\n")
    assert [(r["target_key"], r["business_date"], r["hour"], r["amount"]) for r in store.revenue(cafe[0].id)] == [
        ("501", date(2026, 11, 18), None, Decimal("100.00")),
        ("503", date(2026, 11, 19), None, Decimal("7.50")),
    ]


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
    # exactly the POS's own value for 501 at 14:00 was kept out (the POS has no whole-day value for 503)
    assert store.activity(run_id="keep")[0]["kept"] == 1
    assert _pos_group(sandbox, 11, datetime(2026, 11, 18, 13, tzinfo=UTC)) not in (Decimal(0), Decimal("999.99"))


def _held(sandbox) -> dict[tuple[int, str | None], Decimal]:
    return {(r["revenue_group_id"], r["hour_start"]): Decimal(str(r["amount"])) for r in _eitje(sandbox, "cafe")}


def _pos_group(sandbox, group: int, hour: datetime) -> Decimal:
    """What the Kassatellen stand-in itself says for one POS group in one hour (incl VAT; 0: no sales)."""
    rows = kassatellen_rows(sandbox.kassatellen_url, "cafe@example.nl", hour, hour + timedelta(hours=1))
    return sum((Decimal(str(r["amountInclVat"])) for r in rows if r["revenueGroupId"] == group), Decimal("0.00"))


def test_deleting_a_delivered_hand_value_of_an_older_day_gives_eitje_the_pos_value_back(store, capsys, cafe, sandbox):
    account, conns = cafe
    day, two_pm = date(2026, 11, 18), datetime(2026, 11, 18, 13, tzinfo=UTC)  # 14:00 CET
    _, outcomes = _run(
        store,
        conns,
        run_id="sync-18",
        at=datetime(2026, 11, 20, 12, tzinfo=UTC),
        params=RunParams(date_from=day, date_to=day),
    )
    assert outcomes[0].status == "success", outcomes[0].error  # the day's POS pages landed
    pos = _pos_group(sandbox, 11, two_pm)
    assert pos > 0 and _held(sandbox)[(501, "2026-11-18T13:00:00Z")] == pos
    assert cli(capsys, "revenue", "set", "cafe", "501", "2026-11-18", "999.99", "--hour", "14")[0] == 0
    assert cli(capsys, "revenue", "set", "cafe", "503", "2026-11-18", "250")[0] == 0
    hourly = datetime(2026, 11, 20, 13, 7, tzinfo=UTC)
    planned, outcomes = _run(store, conns, run_id="hourly-1", at=hourly, manual=False)
    assert outcomes[0].status == "success", outcomes[0].error
    assert (planned.items[0].window_start, planned.items[0].window_end) == (date(2026, 11, 19), date(2026, 11, 20))
    held = _held(sandbox)  # delivered although 18 Nov lies outside the hourly window
    assert (held[(501, "2026-11-18T13:00:00Z")], held[(503, None)]) == (Decimal("999.99"), Decimal("250.00"))

    code, out, _ = cli(capsys, "revenue", "delete", "cafe", "501", "2026-11-18", "--hour", "14")
    assert code == 0 and f"back to the POS value {pos} (from the pages landed for 2026-11-18)" in out
    code, out, _ = cli(capsys, "revenue", "delete", "cafe", "503", "2026-11-18")
    assert code == 0 and "back to the POS value 0.00" in out  # the POS reports hours: it has no whole-day value
    _, outcomes = _run(store, conns, run_id="hourly-2", at=hourly + timedelta(hours=1), manual=False)
    assert outcomes[0].status == "success" and outcomes[0].counts["delivered"] == 2, outcomes[0]
    held = _held(sandbox)
    assert held[(501, "2026-11-18T13:00:00Z")] == pos and held[(503, None)] == Decimal("0.00")
    # every hour Eitje holds for 18 Nov is the POS's own value: none became 0, none kept the hand value
    start, end = datetime(2026, 11, 18, 4, tzinfo=UTC), datetime(2026, 11, 19, 4, tzinfo=UTC)
    hours = {
        (str(r["revenue_group_id"]), datetime.fromisoformat(r["hour_start"].replace("Z", "+00:00"))): Decimal(
            str(r["amount"])
        )
        for r in _eitje(sandbox, "cafe")
        if r["date"] == "2026-11-18" and r["hour_start"]
    }
    assert hours == _pos_hours(sandbox, "cafe@example.nl", start, end) and Decimal(0) not in hours.values()
    assert [r["origin"] for r in store.revenue(account.id) if r["origin"] != "integration"] == []


def test_deleting_a_delivered_hand_value_of_a_day_that_never_landed_waits_for_a_manual_sync(
    store, capsys, cafe, sandbox
):
    account, conns = cafe
    day, two_pm = date(2026, 11, 10), datetime(2026, 11, 10, 13, tzinfo=UTC)
    assert cli(capsys, "revenue", "set", "cafe", "501", "2026-11-10", "77.70", "--hour", "14")[0] == 0
    hourly = datetime(2026, 11, 20, 13, 7, tzinfo=UTC)
    _run(store, conns, run_id="hourly-1", at=hourly, manual=False)
    assert _held(sandbox)[(501, "2026-11-10T13:00:00Z")] == Decimal("77.70")

    code, out, err = cli(capsys, "revenue", "delete", "cafe", "501", "2026-11-10", "--hour", "14")
    assert (code, out) == (2, "")
    assert "nothing from the POS has landed for 2026-11-10" in err and "nothing changed" in err
    conf = '{"accounts": ["cafe"], "date_from": "2026-11-10", "date_to": "2026-11-10"}'
    assert f"airflow dags trigger kassatellen_to_eitje -c '{conf}'" in err
    by_hand = [(r["amount"], r["origin"]) for r in store.revenue(account.id) if r["origin"] != "integration"]
    assert by_hand == [(Decimal("77.70"), "manual")]
    _, outcomes = _run(store, conns, run_id="hourly-2", at=hourly + timedelta(hours=1), manual=False)
    assert outcomes[0].counts["delivered"] == 0  # the target is left alone: no 0 sent
    assert _held(sandbox)[(501, "2026-11-10T13:00:00Z")] == Decimal("77.70")

    # the manual sync for that day: its pages land, and keep_manual keeps the hand value meanwhile
    _, outcomes = _run(store, conns, run_id="sync-10", at=hourly, params=RunParams(date_from=day, date_to=day))
    assert outcomes[0].status == "success" and outcomes[0].counts["kept"] == 1
    pos = _pos_group(sandbox, 11, two_pm)
    code, out, _ = cli(capsys, "revenue", "delete", "cafe", "501", "2026-11-10", "--hour", "14")
    assert code == 0 and f"back to the POS value {pos}" in out
    _run(store, conns, run_id="hourly-3", at=hourly + timedelta(hours=2), manual=False)
    assert pos > 0 and _held(sandbox)[(501, "2026-11-10T13:00:00Z")] == pos
