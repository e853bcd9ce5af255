"""`python -m tillflow test-connection` against the sandbox: the seeds' "test settings and fetch units"."""

from __future__ import annotations

import json
import os

import requests
from tillflow.cli import main

INTEGRATION = "ajour_to_planday"


def _connections(sandbox, key: str, company: str, client: str, password: str | None = None) -> None:
    os.environ[f"AIRFLOW_CONN_AJOUR_{key.upper()}"] = json.dumps(
        {
            "conn_type": "http",
            "host": sandbox.ajour_url,
            "login": "api",
            "password": password or f"pw-{company}",
            "schema": "db",
            "extra": {"company_id": company},
        }
    )
    os.environ[f"AIRFLOW_CONN_PLANDAY_{key.upper()}"] = json.dumps(
        {"conn_type": "http", "host": sandbox.planday_url, "login": client, "password": f"rt-{client}"}
    )


def test_lists_locations_and_marks_the_unmapped_ones(store, sandbox, capsys):
    _connections(sandbox, "popup_x", company="77x", client="popup")
    assert main(["-i", "ajour_to_planday", "accounts", "add", "popup_x"]) == 0
    for loc, unit in (("L1", "1001"), ("L2", "1001"), ("L3", "1002")):
        assert main(["mappings", "set", "popup_x", loc, unit]) == 0
    assert main(["mappings", "set", "popup_x", "L4", "--inactive"]) == 0
    assert main(["mappings", "set", "popup_x", "L9", "1003"]) == 0  # a location Ajour no longer lists
    capsys.readouterr()

    code = main(["test-connection", "popup_x"])
    out = capsys.readouterr().out
    assert code == 1, out  # incomplete: L5 is unmapped
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "→ 1001 Restaurant" in lines["L1"] and "→ 1001 Restaurant" in lines["L2"]
    assert "→ 1002 Bar" in lines["L3"]
    assert "inactive" in lines["L4"]
    assert "UNMAPPED" in lines["L5"] and "Pop-up" in lines["L5"]
    assert "no longer lists" in lines["L9"]
    assert "ajour: credentials OK" in out and "planday: credentials OK; 3 revenue_unit(s)" in out

    assert main(["mappings", "set", "popup_x", "L5", "1003"]) == 0
    capsys.readouterr()
    assert main(["test-connection", "popup_x"]) == 0
    assert "mapping complete" in capsys.readouterr().out


def test_wrong_credentials_are_one_clear_error(store, sandbox, capsys):
    _connections(sandbox, "wrong", company="1001", client="wrong", password="hunter2-secret")
    assert main(["-i", "ajour_to_planday", "accounts", "add", "wrong"]) == 0
    capsys.readouterr()
    code = main(["test-connection", "wrong"])
    captured = capsys.readouterr()
    assert code == 1
    assert "credentials refused" in captured.err and "hunter2" not in captured.err + captured.out
    log = requests.get(f"{sandbox.ajour_url}/_sandbox/requests", timeout=5).json()
    assert [r["status"] for r in log] == [401]


def test_unknown_account_is_exit_2(store, sandbox, capsys):
    assert main(["test-connection", "nobody"]) == 2
    assert "error: account: unknown account 'nobody'" in capsys.readouterr().err


def test_a_target_key_the_target_does_not_list_is_refused_when_the_mapping_is_saved(store, sandbox, capsys):
    _connections(sandbox, "checked", company="78", client="chk")
    assert main(["-i", "ajour_to_planday", "accounts", "add", "checked"]) == 0
    capsys.readouterr()
    assert main(["mappings", "set", "checked", "L1", "9999"]) == 2
    err = capsys.readouterr().err
    assert "target_key: planday has no revenue_unit '9999'" in err and "1001" in err
    assert store.mappings(store.get_account("ajour_to_planday", "checked").id, "location") == {}
    assert main(["mappings", "set", "checked", "L1", "1001"]) == 0


def test_flow_settings_are_set_per_flow_and_validated_by_the_kind(store, capsys):
    assert (
        main(
            [
                "-i",
                "ajour_to_planday",
                "accounts",
                "add",
                "flowset",
                "--flow-setting",
                "revenue.notify_email=ops@bar.example",
                "--flow-setting",
                'revenue.vat="excl"',
            ]
        )
        == 0
    )
    flows = store.get_account("ajour_to_planday", "flowset").settings.flows
    assert flows == {"revenue": {"notify_email": "ops@bar.example", "vat": "excl"}}
    capsys.readouterr()
    assert main(["-i", "ajour_to_planday", "accounts", "update", "flowset", "--flow-setting", "revenue.vat=gross"]) == 2
    assert "settings.flows.revenue: vat" in capsys.readouterr().err


def test_a_department_shiftbase_does_not_list_is_refused_when_the_settings_are_saved(store, sandbox, capsys):
    from sandbox.shiftbase import ShiftbaseApp

    os.environ["AIRFLOW_CONN_SHIFTBASE_DEPT"] = json.dumps(
        {"conn_type": "http", "host": f"{sandbox.shiftbase_url}/api", "password": "sb-dept"}
    )
    real = ShiftbaseApp.org_for("sb-dept")["departments"][0]["id"]
    args = ["-i", "mpluskassa_to_shiftbase", "accounts", "add", "dept", "--flow-setting"]
    assert main([*args, 'clock_times.cost_centers={"10": "999999", "20": "auto"}']) == 2
    assert "has no department 999999" in capsys.readouterr().err
    assert store.find_account("mpluskassa_to_shiftbase", "dept") is None
    assert main([*args, f'clock_times.cost_centers={{"10": "{real}", "30": "skip"}}']) == 0


def test_a_ledger_account_lists_what_its_chart_posts_to(store, sandbox, capsys):
    key = "bistro_cli"
    os.environ[f"AIRFLOW_CONN_KASHCLICK_{key.upper()}"] = json.dumps(
        {"conn_type": "http", "host": sandbox.kashclick_url, "login": key, "password": f"pw-{key}"}
    )
    chart = json.dumps({"payment_methods": {"cash": "530000", "card": "511000"}, "registers": {"R1": "CA1"}})
    settings = ["--flow-setting", "ledger.fiscal_year_start=2026-01-01", "--flow-setting", f"ledger.chart={chart}"]
    assert main(["-i", "kashclick_to_pennylane", "accounts", "add", key, *settings]) == 0
    capsys.readouterr()
    code = main(["-i", "kashclick_to_pennylane", "mappings", "list", key])
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "settings flows.ledger.chart" in out and "UNMAPPED" not in out, out
    assert "→ account 530000" in lines["cash"] and "→ account 511000" in lines["card"]
    assert "→ journal CA1" in lines["R1"] and "NOT IN THE CHART" in lines["R2"]  # R2's journal was left out
    assert "→ sales 707000, VAT 445712" in lines["20"] and "→ sales 707055, VAT 445713" in lines["5.5"]
    missing = ["R2"] + (["transfer"] if "transfer" in lines else [])  # transfers: a few % of the week's payments
    assert all("NOT IN THE CHART" in lines[k] for k in missing)
    assert code == 1 and out.rstrip().endswith(f"{len(missing)} unmapped"), out
