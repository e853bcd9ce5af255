"""`python -m tillflow …` in process against the real store: what each command writes, and that every bad
input exits 2 with one `error: <field>…` line and changes nothing."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal

import pandas as pd
import pytest
from tillflow.cli import main
from tillflow.mapping import MappingRule
from tillflow.store import Store

INTEGRATION = "ajour_to_planday"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    argv = argv if "-i" in argv else ("-i", INTEGRATION, *argv)  # two integrations exist: name this one
    checked = (("revenue", "set"), ("revenue", "import"), ("mappings", "set"))
    if argv[2:4] in checked and "--no-check" not in argv:
        argv = (*argv, "--no-check")  # these units are made up: Planday's own list is not asked
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def db_state(store: Store) -> dict[str, list[tuple]]:
    """Every row of the tables the CLI writes, with their timestamps."""
    tables = {
        "accounts": "SELECT * FROM tillflow.accounts ORDER BY id",
        "mappings": "SELECT * FROM tillflow.mappings ORDER BY account_id, kind, source_key",
        "revenue": "SELECT * FROM tillflow.revenue ORDER BY account_id, target_key, business_date, hour",
        "rejects": "SELECT * FROM tillflow.rejects ORDER BY id",
    }
    state = {name: [tuple(r.values()) for r in store.conn.execute(sql).fetchall()] for name, sql in tables.items()}
    store.conn.commit()
    return state


@pytest.fixture
def account(store, capsys):
    code, _, err = run(
        capsys, "accounts", "add", "bar-nord", "--name", "Bar Nord", "--run-time", "07:00", "--lookback", "2"
    )
    assert code == 0, err
    return store.get_account(INTEGRATION, "bar-nord")


# ---------------------------------------------------------------- accounts


def test_accounts_add_with_defaults(store, capsys):
    code, out, err = run(capsys, "accounts", "add", "cafe-syd")
    assert (code, err) == (0, "")
    a = store.get_account(INTEGRATION, "cafe-syd")
    assert (a.name, a.conn_id, a.target_conn_id) == ("cafe-syd", "ajour_cafe-syd", "planday_cafe-syd")
    s = a.settings
    assert (s.timezone, s.vat, s.write_mode, s.lookback_days) == ("Europe/Copenhagen", "incl", "keep_manual", 3)
    assert f"{s.run_time:%H:%M}" == "05:00" and f"{s.business_day_cutoff:%H:%M}" == "05:00"
    assert s.weekdays == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] and s.active
    assert out.startswith("added cafe-syd (cafe-syd) for ajour_to_planday: {")
    assert json.loads(out.split(": ", 1)[1]) == s.to_json()


def test_accounts_add_with_every_option(store, capsys):
    code, _, err = run(
        capsys,
        "-i",
        INTEGRATION,
        "accounts",
        "add",
        "bistro",
        "--name",
        "Bistro Øst",
        "--conn-id",
        "ajour_shared",
        "--target-conn-id",
        "planday_main",
        "--timezone",
        "Europe/Paris",
        "--vat",
        "excl",
        "--write-mode",
        "overwrite",
        "--lookback",
        "31",
        "--run-time",
        "07:00",
        "--weekdays",
        "FRIDAY, mon",
        "--start-date",
        "2026-11-01",
        "--cutoff",
        "04:30",
        "--owner-email",
        "chef@bistro.example",
    )
    assert code == 0, err
    a = store.get_account(INTEGRATION, "bistro")
    assert (a.name, a.conn_id, a.target_conn_id) == ("Bistro Øst", "ajour_shared", "planday_main")
    assert a.settings.activated_at is not None  # when its activation backfill (if the integration has one) is due
    assert a.settings.to_json() | {"activated_at": None} == {
        "activated_at": None,
        "timezone": "Europe/Paris",
        "vat": "excl",
        "write_mode": "overwrite",
        "lookback_days": 31,
        "run_time": "07:00",
        "weekdays": ["mon", "fri"],
        "active": True,
        "start_date": "2026-11-01",
        "business_day_cutoff": "04:30",
        "owner_email": "chef@bistro.example",
    }


def test_accounts_update_changes_only_what_is_given(store, capsys, account):
    code, out, err = run(capsys, "accounts", "update", "bar-nord", "--lookback", "5", "--vat", "excl")
    assert code == 0, err
    assert out.startswith("updated bar-nord (Bar Nord)")
    after = store.get_account(INTEGRATION, "bar-nord")
    assert after.id == account.id
    assert (after.settings.lookback_days, after.settings.vat) == (5, "excl")
    assert after.settings.model_copy(update={"lookback_days": 2, "vat": "incl"}) == account.settings
    assert (after.name, after.conn_id, after.target_conn_id) == (account.name, account.conn_id, account.target_conn_id)


def test_pause_and_resume(store, capsys, account):
    assert run(capsys, "accounts", "pause", "bar-nord") == (0, "paused bar-nord\n", "")
    paused = store.get_account(INTEGRATION, "bar-nord").settings
    assert paused.active is False
    assert paused.model_copy(update={"active": True}) == account.settings
    assert run(capsys, "accounts", "resume", "bar-nord") == (0, "resumed bar-nord\n", "")
    resumed = store.get_account(INTEGRATION, "bar-nord").settings
    assert resumed.activated_at > account.settings.activated_at  # a re-activation: its own activation backfill
    assert resumed.model_copy(update={"activated_at": account.settings.activated_at}) == account.settings


def test_pausing_is_a_stored_status_of_the_account_and_each_flow(store, capsys, account):
    store.set_flow_status(account.id, "revenue", "needs_mapping", "unmapped location(s): L9")
    run(capsys, "accounts", "pause", "bar-nord")
    state = store.flow_state(account.id, "revenue")
    assert (state["status"], state["status_detail"]) == ("paused", "account is paused")
    paused = store.get_account(INTEGRATION, "bar-nord")
    assert (paused.status, paused.status_detail) == ("paused", "revenue: account is paused")
    code, out, _ = run(capsys, "accounts", "show", "bar-nord")
    assert json.loads(out)["flows"]["revenue"]["status"] == "paused"

    run(capsys, "accounts", "resume", "bar-nord")  # ok until the next run checks mapping and credentials again
    assert store.flow_state(account.id, "revenue")["status"] == "ok"
    assert store.get_account(INTEGRATION, "bar-nord").status == "ok"

    # one flow switched off: that flow is paused, with its own reason
    run(capsys, "accounts", "update", "bar-nord", "--flow-setting", "revenue.enabled=false")
    state = store.flow_state(account.id, "revenue")
    assert (state["status"], state["status_detail"]) == ("paused", "flow is off for this account")
    run(capsys, "accounts", "update", "bar-nord", "--flow-setting", "revenue.enabled=true")
    assert store.flow_state(account.id, "revenue")["status"] == "ok"
    # a failing flow is not made ok by a settings change that leaves it on
    store.set_flow_status(account.id, "revenue", "failing", "boom")
    run(capsys, "accounts", "update", "bar-nord", "--name", "Bar Nord")
    assert store.flow_state(account.id, "revenue")["status"] == "failing"


def test_accounts_list_text_and_json(store, capsys, account):
    run(capsys, "accounts", "add", "cafe-syd", "--weekdays", "sat,sun")
    run(capsys, "accounts", "pause", "cafe-syd")
    code, out, _ = run(capsys, "accounts", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["account", "name", "active", "status"]
    assert lines[1].split()[:8] == ["bar-nord", "Bar", "Nord", "yes", "ok", "07:00", "daily", "never"]
    assert lines[2].split()[:7] == ["cafe-syd", "cafe-syd", "no", "paused", "05:00", "sat,sun", "never"]

    code, out, _ = run(capsys, "accounts", "list", "--json")
    rows = json.loads(out)
    assert [(r["account"], r["active"], r["lookback"], r["run_time"], r["weekdays"]) for r in rows] == [
        ("bar-nord", True, 2, "07:00", "mon,tue,wed,thu,fri,sat,sun"),
        ("cafe-syd", False, 3, "05:00", "sat,sun"),
    ]
    assert all(r["integration"] == INTEGRATION and r["last_run"] is None for r in rows)


def test_accounts_list_shows_the_last_run(store, capsys, account):
    from tillflow.sources.base import Window

    store.activity_start(
        INTEGRATION, "manual__1", account.id, "revenue", Window(date(2026, 11, 18), date(2026, 11, 19))
    )
    store.activity_update("manual__1", account.id, "revenue", delivered=4, status="success", finished=True)
    [row] = json.loads(run(capsys, "accounts", "list", "--json")[1])
    assert row["last_run"]["status"] == "success"
    assert row["last_run"]["window"] == "2026-11-18..2026-11-19"
    assert row["last_run"]["delivered"] == 4


def test_accounts_list_when_empty(store, capsys):
    assert run(capsys, "accounts", "list") == (0, "no accounts\n", "")
    assert json.loads(run(capsys, "accounts", "list", "--json")[1]) == []


def test_accounts_show(store, capsys, account):
    run(capsys, "mappings", "set", "bar-nord", "loc-2", "U1")
    run(capsys, "mappings", "set", "bar-nord", "loc-1", "--inactive")
    code, out, _ = run(capsys, "accounts", "show", "bar-nord")
    shown = json.loads(out)
    assert code == 0
    assert shown["account"] == "bar-nord" and shown["name"] == "Bar Nord"
    assert (shown["conn_id"], shown["target_conn_id"]) == ("ajour_bar-nord", "planday_bar-nord")
    assert shown["settings"] == account.settings.to_json()
    assert shown["mappings"] == {"loc-1": "inactive", "loc-2": "U1"}
    assert list(shown["mappings"]) == ["loc-1", "loc-2"]


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing changed

BAD = [
    (["accounts", "update", "nope", "--lookback", "2"], r"account: unknown account 'nope' .*known: bar-nord"),
    (["accounts", "pause", "nope"], r"account: unknown account 'nope'"),
    (["accounts", "resume", "nope"], r"account: unknown account 'nope'"),
    (["accounts", "show", "nope"], r"account: unknown account 'nope'"),
    (["accounts", "add", "new", "--lookback", "0"], r"(settings: )?lookback_days: .*1"),
    (["accounts", "add", "new", "--lookback", "32"], r"(settings: )?lookback_days: .*31"),
    (["accounts", "add", "new", "--lookback", "abc"], r"lookback_days: expected a whole number, got 'abc'"),
    (["accounts", "update", "bar-nord", "--lookback", "32"], r"(settings: )?lookback_days: "),
    (["accounts", "add", "new", "--run-time", "04:00"], r"run_time: .*05:00 at the earliest, got 04:00"),
    (["accounts", "update", "bar-nord", "--run-time", "04:00"], r"run_time: .*05:00 at the earliest"),
    (["accounts", "update", "bar-nord", "--run-time", "07:30"], r"(settings: )?run_time: .*does not tick"),
    (["accounts", "add", "new", "--weekdays", "mon,frj"], r"weekdays: unknown day\(s\) frj"),
    (["accounts", "add", "new", "--timezone", "Mars/Base"], r"(settings: )?timezone: unknown timezone 'Mars/Base'"),
    (["accounts", "add", "new", "--vat", "gross"], r"(settings: )?vat: "),
    (["accounts", "add", "new", "--write-mode", "replace"], r"(settings: )?write_mode: "),
    (["accounts", "add", "new", "--start-date", "2026-02-30"], r"(settings: )?start_date: "),
    (["accounts", "add", "bar-nord"], r"account: 'bar-nord' already exists"),
    (["-i", "nope_to_nowhere", "accounts", "list"], r"--integration: unknown integration 'nope_to_nowhere'"),
    (["mappings", "set", "bar-nord", "loc-1"], r"target_key: give a target key, or --inactive"),
    (["mappings", "set", "bar-nord", "loc-1", "U1", "--inactive"], r"target_key: "),
    (["mappings", "set", "nope", "loc-1", "U1"], r"account: unknown account 'nope'"),
    (["mappings", "remove", "bar-nord", "loc-9"], r"source_key: 'loc-9' has no location mapping"),
    (["revenue", "set", "bar-nord", "U1", "2026-11-20", "abc"], r"amount: not an amount: 'abc'"),
    (["revenue", "set", "bar-nord", "U1", "2026-11-20", "NaN"], r"amount: not an amount: 'NaN'"),
    (["revenue", "set", "bar-nord", "U1", "2026-13-01", "10"], r"date: expected YYYY-MM-DD, got '2026-13-01'"),
    (["revenue", "set", "bar-nord", "U1", "20/11/2026", "10"], r"date: expected YYYY-MM-DD"),
    (["revenue", "set", "nope", "U1", "2026-11-20", "10"], r"account: unknown account 'nope'"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_error_line_and_changes_nothing(store, capsys, account, argv, message):
    run(capsys, "mappings", "set", "bar-nord", "loc-1", "U1")
    run(capsys, "revenue", "set", "bar-nord", "U1", "2026-11-19", "10")
    before = db_state(store)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert re.match(message, lines[0].removeprefix("error: ")), lines[0]
    assert db_state(store) == before


def test_a_bad_account_key_is_a_clean_error(store, capsys):
    before = db_state(store)
    code, _, err = run(capsys, "accounts", "add", "Bar Nord!")
    assert code == 2
    assert err.startswith("error: ")
    assert db_state(store) == before


def test_a_date_with_trailing_garbage_is_refused(store, capsys, account):
    before = db_state(store)
    code, _, err = run(capsys, "revenue", "set", "bar-nord", "U1", "2026-11-201", "10")
    assert (code, err.split(":")[0:2]) == (2, ["error", " date"])
    assert db_state(store) == before


# ---------------------------------------------------------------- mappings and hand-entered revenue


def test_mappings_set_overwrite_inactive_and_remove(store, capsys, account):
    assert run(capsys, "mappings", "set", "bar-nord", "loc-1", "U1") == (0, "bar-nord: location loc-1 → U1\n", "")
    run(capsys, "mappings", "set", "bar-nord", "loc-2", "U1")
    run(capsys, "mappings", "set", "bar-nord", "loc-1", "U2")
    assert (
        run(capsys, "mappings", "set", "bar-nord", "loc-3", "--inactive")[1] == "bar-nord: location loc-3 → inactive\n"
    )
    assert store.mappings(account.id, "location") == {
        "loc-1": MappingRule("loc-1", "U2"),
        "loc-2": MappingRule("loc-2", "U1"),
        "loc-3": MappingRule("loc-3", None),
    }
    assert run(capsys, "mappings", "remove", "bar-nord", "loc-2") == (0, "bar-nord: location loc-2 unmapped\n", "")
    assert set(store.mappings(account.id, "location")) == {"loc-1", "loc-3"}
    run(capsys, "mappings", "set", "bar-nord", "emp-1", "E7", "--kind", "employee")
    assert store.mappings(account.id, "employee") == {"emp-1": MappingRule("emp-1", "E7")}
    assert "emp-1" not in store.mappings(account.id, "location")


def test_revenue_set_is_manual_and_exact(store, capsys, account):
    code, out, err = run(capsys, "revenue", "set", "bar-nord", "U1", "2026-11-19", "1234,5")
    assert (code, err) == (0, "")
    assert (
        out
        == "bar-nord group U1 2026-11-19 (day) = 1234.50 (manual; keep_manual protects it; the next run delivers it)\n"
    )
    [row] = store.revenue(account.id)
    assert (row["target_key"], row["business_date"], row["hour"]) == ("U1", date(2026, 11, 19), None)
    assert row["amount"] == Decimal("1234.50") and row["origin"] == "manual"
    run(capsys, "revenue", "set", "bar-nord", "U1", "2026-11-19", "0.10")
    assert [(r["amount"], r["origin"]) for r in store.revenue(account.id)] == [(Decimal("0.10"), "manual")]


@pytest.fixture
def excel_file(tmp_path):
    path = tmp_path / "hand-kept.xlsx"
    pd.DataFrame(
        {
            "Account": ["bar-nord", "bar-nord", "bar-nord", "ghost", "bar-nord"],
            "Unit": ["U1", "U2", "U1", "U1", "U3"],
            "Date": [
                datetime(2026, 11, 18),
                datetime(2026, 11, 18),
                datetime(2026, 11, 19),
                datetime(2026, 11, 19),
                "2026-11-20",
            ],
            "Amount": ["100.10", "abc", "0.20", "5", "7,5"],
        }
    ).to_excel(path, index=False)
    return path


def test_revenue_import_with_a_bad_row_is_refused_whole_naming_every_bad_row(store, capsys, account, excel_file):
    run(capsys, "revenue", "set", "bar-nord", "U1", "2026-11-19", "50.00")  # a hand value the sheet would replace
    before = db_state(store)
    code, out, err = run(capsys, "revenue", "import", str(excel_file), "--no-check")
    assert code == 1
    assert out == "refused hand-kept.xlsx: 2 problem(s); nothing imported (fix the file and import it again)\n"
    assert err.splitlines() == [
        "row 3, column amount: not an amount: 'abc'",
        "row 5, column account: unknown account 'ghost'",
    ]
    assert db_state(store) == before


def test_a_good_revenue_file_imports_atomically_and_dry_run_writes_nothing(store, capsys, account, tmp_path):
    path = tmp_path / "good.xlsx"
    pd.DataFrame(
        {
            "Account": ["bar-nord", "bar-nord"],
            "Unit": ["U1", "U3"],
            "Date": [datetime(2026, 11, 18), "2026-11-20"],
            "Amount": ["100.10", "7,5"],
        }
    ).to_excel(path, index=False)
    before = db_state(store)
    code, out, _ = run(capsys, "revenue", "import", str(path), "--no-check", "--dry-run")
    assert code == 0 and "dry run: 2 change(s), 0 unchanged, 2 row(s); nothing written" in out
    assert db_state(store) == before
    code, out, _ = run(capsys, "revenue", "import", str(path), "--no-check")
    assert code == 0 and out.endswith("imported 2 row(s) from good.xlsx: 2 changed, 0 unchanged\n")
    assert [(r["target_key"], r["business_date"], r["amount"], r["origin"]) for r in store.revenue(account.id)] == [
        ("U1", date(2026, 11, 18), Decimal("100.10"), "excel"),
        ("U3", date(2026, 11, 20), Decimal("7.50"), "excel"),
    ]


def test_revenue_import_with_a_missing_column_changes_nothing(store, capsys, account, tmp_path):
    path = tmp_path / "no-amount.xlsx"
    pd.DataFrame({"account": ["bar-nord"], "unit": ["U1"], "date": ["2026-11-18"]}).to_excel(path, index=False)
    before = db_state(store)
    code, out, err = run(capsys, "revenue", "import", str(path))
    assert (code, out) == (2, "")
    assert (
        err
        == "error: file: no-amount.xlsx misses column(s) amount (need account, group, date, amount; hour optional)\n"
    )
    assert db_state(store) == before


def test_revenue_import_of_a_file_that_is_not_excel(store, capsys, account, tmp_path):
    path = tmp_path / "notes.xlsx"
    path.write_text("not a spreadsheet")
    code, _, err = run(capsys, "revenue", "import", str(path))
    assert code == 2
    assert err.startswith(f"error: file: cannot read {path} as .xlsx")


def test_importing_the_same_sheet_twice_changes_nothing(store, capsys, account, tmp_path):
    path = tmp_path / "good.xlsx"
    pd.DataFrame(
        {
            "account": ["bar-nord", "bar-nord"],
            "unit": ["U1", "U2"],
            "date": ["2026-11-18", "2026-11-19"],
            "amount": [1, 2],
        }
    ).to_excel(path, index=False)
    code, out, _ = run(capsys, "revenue", "import", str(path))
    assert code == 0 and out.endswith("imported 2 row(s) from good.xlsx: 2 changed, 0 unchanged\n")
    first = db_state(store)  # with the rows' timestamps: a rewrite of the same value would show
    assert len(first["revenue"]) == 2
    code, out, _ = run(capsys, "revenue", "import", str(path))
    assert code == 0 and out.endswith("imported 2 row(s) from good.xlsx: 0 changed, 2 unchanged\n")
    assert db_state(store) == first


def test_accounts_show_and_list_give_each_flows_own_state(store, capsys, account):
    from datetime import UTC

    from tillflow.sources.base import Window

    store.flow_success(
        account.id,
        "revenue",
        due_at=datetime(2026, 11, 20, 6, 0, tzinfo=UTC),
        window=Window(date(2026, 11, 18), date(2026, 11, 19)),
        run_id="r1",
    )
    store.set_flow_status(account.id, "hourly", "needs_mapping", "unmapped revenue_group(s): G7")
    code, out, _ = run(capsys, "accounts", "show", "bar-nord")
    flows = json.loads(out)["flows"]
    assert flows["revenue"]["status"] == "ok" and flows["revenue"]["last_window"] == "2026-11-18..2026-11-19"
    assert flows["revenue"]["last_due"] == "2026-11-20T06:00+00:00"
    assert flows["hourly"] == {**flows["hourly"], "status": "needs_mapping", "last_success": None}
    # the account's summary status is the worst of its flows; one flow never overwrote the other
    assert json.loads(out)["status"] == "needs_mapping"
    assert json.loads(out)["status_detail"] == "hourly: unmapped revenue_group(s): G7"
    code, out, _ = run(capsys, "accounts", "list", "--json")
    (row,) = json.loads(out)
    assert {f: v["status"] for f, v in row["flows"].items()} == {"hourly": "needs_mapping", "revenue": "ok"}
    store.flow_success(account.id, "hourly", due_at=None, window=None, run_id="r2")
    assert store.get_account(INTEGRATION, "bar-nord").status == "ok"
