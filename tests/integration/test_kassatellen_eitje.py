"""Kassatellen → Eitje through the platform's steps (plan → shard → fetch/map/upsert/deliver) against the
stand-ins and real PostgreSQL: hours as instants on both DST days, the cutoff, the mapping gate, rejects,
an expiring token, wrong credentials and the activation backfill."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import requests
from runs import run_flows
from tillflow.sources.base import ConnectionInfo
from tillflow.specs import load_spec, parse_settings
from tillflow.sync import RunParams, plan_run, run_shard
from vendor_reads import eitje_records, kassatellen_rows

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "dags" / "kassatellen_to_eitje.yaml")
MAPPING = {"11": "501", "12": "502"}  # 13 (gift cards, never sells) is marked inactive
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "read_timeout": 5}
AMS = ZoneInfo("Europe/Amsterdam")


def _account(store, sandbox, key="cafe", *, cutoff="05:00", mapped=True, **settings):
    account = store.upsert_account(
        SPEC.integration,
        key,
        name=f"Café {key}",
        conn_id=f"kassatellen_{key}",
        target_conn_id=f"eitje_{key}",
        settings=parse_settings(
            {"timezone": "Europe/Amsterdam", "business_day_cutoff": cutoff, "lookback_days": 1, **settings}, spec=SPEC
        ),
    )
    if mapped:
        for src, dst in MAPPING.items():
            store.set_mapping(account.id, "revenue_group", src, dst)
        store.set_mapping(account.id, "revenue_group", "13", None)
    conns = {
        f"kassatellen_{key}": ConnectionInfo(
            conn_id=f"kassatellen_{key}",
            host=sandbox.kassatellen_url,
            login=f"{key}@example.nl",
            password=f"pw-{key}@example.nl",
            extra=FAST,
        ),
        f"eitje_{key}": ConnectionInfo(
            conn_id=f"eitje_{key}",
            host=sandbox.eitje_url,
            login=f"env-{key}",
            password=f"pw-env-{key}",
            extra={"partner_username": "tillflow", "partner_password": "pp-tillflow", **FAST},
        ),
    }
    return account, conns


def _run(store, conns, *, run_id, at, flows=None, params=None, manual=True, spec=SPEC):
    flows = flows or [spec.flow("revenue")]
    return run_flows(
        store, spec, conns, run_id=run_id, flows=flows, params=params, at=at, manual=manual,
        dag_id="kassatellen_to_eitje",
    )  # fmt: skip


def _pos_hours(sandbox, user, start: datetime, end: datetime) -> dict[tuple[str, datetime], Decimal]:
    """What the POS stand-in says per (Eitje group, hour instant), read straight from it (incl VAT)."""
    out: dict = defaultdict(Decimal)
    for r in kassatellen_rows(sandbox.kassatellen_url, user, start, end):
        group = MAPPING.get(str(r["revenueGroupId"]))
        if group:
            hour = datetime.fromisoformat(r["hourStart"].replace("Z", "+00:00"))
            out[(group, hour)] += Decimal(str(r["amountInclVat"]))
    return dict(out)


def _eitje(sandbox, key) -> list[dict]:
    return eitje_records(sandbox.eitje_url, f"env-{key}")


@pytest.mark.parametrize(
    ("day", "cutoff", "hours"),
    [
        (date(2026, 10, 25), "00:00", 25),  # the calendar day of the autumn change has 25 hours
        (date(2026, 3, 29), "00:00", 23),  # the spring one 23
        (date(2026, 10, 24), "05:00", 25),  # with a 05:00 cutoff the change falls in the business day before
        (date(2026, 10, 25), "05:00", 24),
    ],
)
def test_dst_days_hour_by_hour_every_hour_once_totals_to_the_cent(store, sandbox, day, cutoff, hours):
    account, conns = _account(store, sandbox, cutoff=cutoff)
    _, outcomes = _run(
        store,
        conns,
        run_id=f"dst-{day}-{cutoff}",
        at=datetime(2026, 11, 2, 12, tzinfo=UTC),
        params=RunParams(date_from=day, date_to=day),
    )
    assert [o.status for o in outcomes] == ["success"], [o.error for o in outcomes]
    h, m = map(int, cutoff.split(":"))
    start = datetime(day.year, day.month, day.day, h, m, tzinfo=AMS).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time().replace(hour=h, minute=m), AMS).astimezone(UTC)
    pos = _pos_hours(sandbox, "cafe@example.nl", start, end)
    rows = _eitje(sandbox, "cafe")
    # every hour written once: two hours of the business day sent as one instant would overwrite each other
    assert all(r["updated_count"] == 0 for r in rows)
    by_key = {
        (str(r["revenue_group_id"]), datetime.fromisoformat(r["hour_start"].replace("Z", "+00:00"))): Decimal(
            str(r["amount"])
        )
        for r in rows
    }
    assert by_key == pos  # to the cent, per group and instant
    assert all(r["date"] == day.isoformat() for r in rows)
    # the canonical table holds the same hours, numbered by whole hours since the business day began
    canon = store.revenue(account.id)
    assert {(c["target_key"], c["hour"]) for c in canon} == {(g, (t - start) // timedelta(hours=1)) for g, t in pos}
    # the stand-in sells 11:00-03:00 local: the last hour is 23:00, or 02:00 with the 05:00 cutoff
    assert max(c["hour"] for c in canon) == (hours - 1 if cutoff == "00:00" else hours - 3)
    if cutoff == "00:00" and hours == 25:
        two_am = [k for k in by_key if k[1].astimezone(AMS).hour == 2 and k[0] == "502"]
        assert len(two_am) == 2  # the repeated 02:00 is two hours, each with its own value
    assert sum(c["amount"] for c in canon) == sum(pos.values())


def test_sales_after_midnight_belong_to_the_previous_business_day(store, sandbox):
    account, conns = _account(store, sandbox, cutoff="05:00")
    _run(
        store,
        conns,
        run_id="cutoff",
        at=datetime(2026, 11, 20, 12, tzinfo=UTC),
        params=RunParams(date_from=date(2026, 11, 18), date_to=date(2026, 11, 18)),
    )
    rows = _eitje(sandbox, "cafe")
    after_midnight = [
        r for r in rows if datetime.fromisoformat(r["hour_start"].replace("Z", "+00:00")).astimezone(AMS).hour in (0, 1)
    ]
    assert after_midnight, "the stand-in sells until 02:00"
    for r in after_midnight:
        local = datetime.fromisoformat(r["hour_start"].replace("Z", "+00:00")).astimezone(AMS)
        assert local.date() == date(2026, 11, 19) and r["date"] == "2026-11-18"


def test_the_gate_needs_every_listed_group_even_without_sales_and_closes_again_for_a_new_one(store, sandbox):
    account, conns = _account(store, sandbox, mapped=False)
    store.set_mapping(account.id, "revenue_group", "11", "501")
    store.set_mapping(account.id, "revenue_group", "12", "502")  # 13 sells nothing, but is listed
    at = datetime(2026, 11, 20, 12, 7, tzinfo=UTC)
    _, outcomes = _run(store, conns, run_id="gate-1", at=at, manual=False)
    assert [o.status for o in outcomes] == ["needs_mapping"]
    state = store.flow_state(account.id, "revenue")
    assert state["status"] == "needs_mapping" and "13 (Cadeaubonnen)" in state["status_detail"]
    assert "13 (Cadeaubonnen)" in store.activity(run_id="gate-1")[0]["error"]
    assert _eitje(sandbox, "cafe") == []  # nothing synced while the gate is closed
    assert {i["key"] for i in store.source_items(account.id, "revenue_group")} == {"11", "12", "13"}

    store.set_mapping(account.id, "revenue_group", "13", None)  # inactive is enough
    _, outcomes = _run(store, conns, run_id="gate-2", at=at + timedelta(hours=1), manual=False)
    assert [o.status for o in outcomes] == ["success"], outcomes[0].error
    assert _eitje(sandbox, "cafe")

    requests.post(
        f"{sandbox.kassatellen_url}/_sandbox/users/cafe@example.nl",
        json={"extra_groups": [{"id": 14, "name": "Terras"}]},
        timeout=5,
    ).raise_for_status()
    _, outcomes = _run(store, conns, run_id="gate-3", at=at + timedelta(hours=2), manual=False)
    assert [o.status for o in outcomes] == ["needs_mapping"] and "14 (Terras)" in outcomes[0].error


def test_a_negative_or_non_numeric_amount_or_an_hour_outside_the_day_goes_to_rejects_and_the_rest_lands(store, sandbox):
    account, conns = _account(store, sandbox)
    start, end = datetime(2026, 11, 18, 4, tzinfo=UTC), datetime(2026, 11, 19, 4, tzinfo=UTC)  # business day 18 Nov
    pos = _pos_hours(sandbox, "cafe@example.nl", start, end)  # the good rows, read before the bad ones are added
    bad = [  # in hours that also have a good row for the group
        {"hourStart": "2026-11-18T12:00:00Z", "revenueGroupId": 11, "amountInclVat": -5, "amountExclVat": -4},
        {"hourStart": "2026-11-18T13:00:00Z", "revenueGroupId": 12, "amountInclVat": "12,50", "amountExclVat": 10},
    ]
    stray = [{"hourStart": "2026-11-25T12:00:00Z", "revenueGroupId": 11, "amountInclVat": 7, "amountExclVat": 6}]
    requests.post(
        f"{sandbox.kassatellen_url}/_sandbox/users/cafe@example.nl",
        json={"bad_rows": bad, "stray_rows": stray},
        timeout=5,
    ).raise_for_status()
    _, outcomes = _run(
        store,
        conns,
        run_id="rejects",
        at=datetime(2026, 11, 20, 12, tzinfo=UTC),
        params=RunParams(date_from=date(2026, 11, 18), date_to=date(2026, 11, 18)),
    )
    assert outcomes[0].status == "success", outcomes[0].error
    assert sorted(r["reason"] for r in store.rejects(account.id)) == [
        "field 'amountInclVat' is negative: -5.00",
        "field 'amountInclVat' is not a number: '12,50'",
        "hour 2026-11-25T12:00:00Z lies outside the business days asked for (2026-11-18T04:00Z..)",
    ]
    assert store.activity(run_id="rejects")[0]["rejected"] == 3
    held = {
        (str(r["revenue_group_id"]), datetime.fromisoformat(r["hour_start"].replace("Z", "+00:00"))): Decimal(
            str(r["amount"])
        )
        for r in _eitje(sandbox, "cafe")
    }
    assert held == pos and sum(held.values()) == sum(pos.values())  # the rest landed, to the cent


def test_an_expired_token_is_renewed_once_and_wrong_credentials_fail_once_without_retries(store, sandbox):
    from tillflow.errors import AuthError
    from tillflow.sources.kassatellen import KassatellenClient

    _, conns = _account(store, sandbox)
    client = KassatellenClient.from_connection(conns["kassatellen_cafe"])
    assert len(client.test_connection()) == 3 and client.logins == 1
    requests.post(f"{sandbox.kassatellen_url}/_sandbox/tokens/expire", timeout=5).raise_for_status()
    assert len(client.test_connection()) == 3 and client.logins == 2  # renewed by one new login

    wrong = KassatellenClient.from_connection(
        ConnectionInfo(conn_id="k", host=sandbox.kassatellen_url, login="cafe@example.nl", password="nope", extra=FAST)
    )
    before = len(requests.get(f"{sandbox.kassatellen_url}/_sandbox/requests", timeout=5).json())
    with pytest.raises(AuthError, match="wrong e-mail or password") as err:
        wrong.test_connection()
    assert "nope" not in str(err.value)
    calls = requests.get(f"{sandbox.kassatellen_url}/_sandbox/requests", timeout=5).json()[before:]
    assert [c["path"] for c in calls] == ["/auth/login"]  # one call, no retry storm


def test_wrong_credentials_in_a_run_fail_the_account_once_as_auth_failed_and_the_task_is_not_retried(
    store, sandbox, monkeypatch
):
    """Through the run task itself (RunAccountsOperator.execute, connections from Airflow's environment):
    one login refused, one clear error on the account, no HTTP retries, AirflowFailException (no task retry)."""
    from airflow.sdk.exceptions import AirflowFailException
    from tillflow.operators import RunAccountsOperator

    account, conns = _account(store, sandbox)
    for conn_id, c in conns.items():
        password = "nope" if conn_id.startswith("kassatellen") else c.password
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps({"conn_type": "http", "host": c.host, "login": c.login, "password": password, "extra": c.extra}),
        )
    run_id = "scheduled__wrong-password"
    planned = plan_run(
        store,
        SPEC,
        [SPEC.flow("revenue")],
        dag_id="kassatellen_to_eitje",
        run_id=run_id,
        logical_date=datetime(2026, 11, 20, 12, 7, tzinfo=UTC),
        params=RunParams(),
        manual=False,
    )
    task = RunAccountsOperator(task_id="run", spec=SPEC, shard=planned.shards[0])
    context = {"run_id": run_id, "dag_run": SimpleNamespace(run_type="scheduled"), "params": {}}
    with pytest.raises(AirflowFailException, match="failed for good") as failed:
        task.execute(context)
    assert "nope" not in str(failed.value)

    calls = requests.get(f"{sandbox.kassatellen_url}/_sandbox/requests", timeout=5).json()
    assert [(c["path"], c["status"]) for c in calls] == [("/auth/login", 401)]  # one login, no retry storm
    state = store.flow_state(account.id, "revenue")
    assert state["status"] == "auth_failed"
    assert state["status_detail"] == (
        "AuthError: kassatellen: login refused for cafe@example.nl: wrong e-mail or password "
        "(the ones the customer uses to log into Kassatellen)"
    )
    [row] = store.activity(run_id=run_id)
    assert (row["status"], row["error"], row["retries"]) == ("failed", state["status_detail"], 0)
    assert _eitje(sandbox, "cafe") == []


def test_activation_backfill_five_minutes_after_then_hourly_until_it_succeeds_once_per_activation(store, sandbox):
    activated = datetime(2026, 11, 20, 9, 2, tzinfo=UTC)
    account, conns = _account(store, sandbox, mapped=False, activated_at=activated.isoformat())
    # the spec's month, planned; the deliveries below use a 3-day copy of the flow to keep the test short
    month = SPEC.flow("activation")
    short_flow = month.model_copy(update={"activation": month.activation.model_copy(update={"days": 3})})
    short = SPEC.model_copy(update={"flows": [SPEC.flow("revenue"), short_flow]})

    def tick(minute_offset, run_id, spec=short, at=None):
        when = at or activated + timedelta(minutes=minute_offset)
        return _run(store, conns, run_id=run_id, at=when, flows=[spec.flow("activation")], manual=False, spec=spec)

    planned, _ = tick(3, "act-early")
    assert planned.items == [] and "due at 2026-11-20 09:07" in planned.not_run["cafe"]
    planned, outcomes = tick(8, "act-1", spec=SPEC)  # 5 minutes after: attempted, but the mapping is incomplete
    assert [o.status for o in outcomes] == ["needs_mapping"]
    assert (planned.items[0].window_start, planned.items[0].window_end) == (date(2026, 10, 20), date(2026, 11, 20))
    planned, _ = tick(38, "act-2")
    assert planned.items == []  # not every tick: hourly after a failed attempt
    for src, dst in MAPPING.items():
        store.set_mapping(account.id, "revenue_group", src, dst)
    store.set_mapping(account.id, "revenue_group", "13", None)
    planned, outcomes = tick(68, "act-3")
    assert [o.status for o in outcomes] == ["success"], outcomes[0].error
    days = {r["date"] for r in _eitje(sandbox, "cafe")}
    assert days == {"2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"}
    planned, _ = tick(130, "act-4")
    assert planned.items == [] and "done" in planned.not_run["cafe"]  # exactly once

    # re-activation after a pause does it again
    settings = store.account_by_id(account.id).settings
    store.update_settings(account.id, settings.model_copy(update={"active": False}))
    planned, _ = tick(0, "act-paused", at=activated + timedelta(days=1))
    assert planned.items == [] and planned.not_run["cafe"] == "paused"
    again = activated + timedelta(days=2)
    store.update_settings(account.id, settings.model_copy(update={"active": True, "activated_at": again}))
    planned, _ = tick(0, "act-5", at=again + timedelta(minutes=1))
    assert planned.items == []
    planned, outcomes = tick(0, "act-6", at=again + timedelta(minutes=5))
    assert [o.status for o in outcomes] == ["success"]


def test_activation_backfill_with_incomplete_credentials_is_retried_every_hour_until_it_succeeds_once(store, sandbox):
    """Settings incomplete at first (the Kassatellen password not entered, then the Eitje connection not
    added): every hourly attempt fails with a clear error, none in between; the first complete one succeeds
    and is the last for this activation."""
    from tillflow.errors import ConfigError

    activated = datetime(2026, 11, 20, 9, 2, tzinfo=UTC)
    account, complete = _account(store, sandbox, activated_at=activated.isoformat())  # mapped: only settings lack
    month = SPEC.flow("activation")
    short_flow = month.model_copy(update={"activation": month.activation.model_copy(update={"days": 3})})
    short = SPEC.model_copy(update={"flows": [SPEC.flow("revenue"), short_flow]})

    class Conns(dict):  # like the run task's lookup: an undefined connection is a ConfigError naming it
        def __missing__(self, conn_id):
            raise ConfigError(f"connection: {conn_id!r} is not defined; add it with `airflow connections add`")

    no_password = Conns(complete, kassatellen_cafe=replace(complete["kassatellen_cafe"], password=""))
    no_eitje = Conns({k: v for k, v in complete.items() if k != "eitje_cafe"})
    attempts = []

    def tick(minutes, conns):
        at = activated + timedelta(minutes=minutes)
        planned, outcomes = _run(
            store, conns, run_id=f"act-{minutes}", at=at, flows=[short.flow("activation")], manual=False, spec=short
        )
        if planned.items:
            attempts.append(minutes)
        return planned, outcomes

    _, outcomes = tick(8, no_password)
    assert [(o.status, o.retryable) for o in outcomes] == [("failed", False)]
    assert "password (Kassatellen password) is required" in outcomes[0].error
    planned, _ = tick(38, no_password)
    assert planned.items == [] and "due at 2026-11-20 10:10 UTC" in planned.not_run["cafe"]
    _, outcomes = tick(68, no_password)
    assert [o.status for o in outcomes] == ["failed"]
    _, outcomes = tick(128, no_eitje)
    assert [o.status for o in outcomes] == ["failed"] and "'eitje_cafe' is not defined" in outcomes[0].error
    assert _eitje(sandbox, "cafe") == []
    tick(158, Conns(complete))  # settings complete now, but the next attempt is an hour after the last
    _, outcomes = tick(188, Conns(complete))
    assert [o.status for o in outcomes] == ["success"], outcomes[0].error
    assert {r["date"] for r in _eitje(sandbox, "cafe")} == {"2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"}
    for minutes in (248, 308, 60 * 24):
        planned, _ = tick(minutes, Conns(complete))
        assert "done" in planned.not_run["cafe"]
    assert attempts == [8, 68, 128, 188]  # hourly while incomplete, exactly one success
    assert store.flow_state(account.id, "activation")["backfill_done_at"] is not None


def test_the_demo_summary_fails_unless_eitje_holds_what_was_synced_and_the_gate_held_het_anker(store, sandbox):
    from tillflow.demo import EITJE_DAG_ID, eitje_demo_accounts, eitje_summary, seed_eitje

    seed_eitje(store)  # what `make demo` seeds, run against the test's stand-ins
    conns = {}
    for key, acc in eitje_demo_accounts().items():
        conns[f"kassatellen_{key}"] = ConnectionInfo(
            conn_id=f"kassatellen_{key}",
            host=sandbox.kassatellen_url,
            login=acc["email"],
            password=f"pw-{acc['email']}",
            extra=FAST,
        )
        conns[f"eitje_{key}"] = ConnectionInfo(
            conn_id=f"eitje_{key}",
            host=sandbox.eitje_url,
            login=acc["eitje_user"],
            password=f"pw-{acc['eitje_user']}",
            extra={"partner_username": "tillflow", "partner_password": "pp-tillflow", **FAST},
        )
    urls = {"eitje_url": sandbox.eitje_url}
    text, ok = eitje_summary(store, urls)
    assert not ok and text.count("FAILED: the run never listed") == 2  # no run: nothing to show is a failure

    _, outcomes = _run(store, conns, run_id="demo", at=datetime(2026, 11, 20, 12, 7, tzinfo=UTC), manual=False)
    assert sorted(o.status for o in outcomes) == ["needs_mapping", "success"]
    text, ok = eitje_summary(store, urls)
    assert ok, text
    assert "held at the mapping gate until group(s) 13 are mapped (on purpose)" in text and "MISMATCH" not in text

    requests.post(f"{sandbox.eitje_url}/_sandbox/reset", timeout=5).raise_for_status()  # Eitje lost it all
    text, ok = eitje_summary(store, urls)
    assert not ok and "MISMATCH" in text

    store.set_mapping(store.get_account(EITJE_DAG_ID, "het_anker").id, "revenue_group", "13", None)
    text, ok = eitje_summary(store, urls)  # fully mapped now, but never synced: not a pass either
    assert not ok and "FAILED: every group is mapped, but nothing synced" in text


def test_backfill_ticks_over_a_range_are_idempotent(store, sandbox):
    """What `airflow backfill create --dag-id kassatellen_to_eitje` runs: the plan of each hourly tick in
    backfill mode (the PlanOperator of a backfill run); a second pass over the same ticks sends nothing."""
    account, conns = _account(store, sandbox)
    ticks = [datetime(2026, 11, 18, 20, 7, tzinfo=UTC) + timedelta(hours=i) for i in range(3)]

    def backfill(tag):
        delivered = 0
        for n, tick in enumerate(ticks):
            planned = plan_run(
                store,
                SPEC,
                [SPEC.flow("revenue")],
                dag_id="kassatellen_to_eitje",
                run_id=f"backfill-{tag}-{n}",
                logical_date=tick,
                params=RunParams(),
                manual=False,
                backfill=True,
            )
            assert [(i.window_start, i.window_end) for i in planned.items] == [(date(2026, 11, 17), date(2026, 11, 18))]
            for shard in planned.shards:
                for o in run_shard(
                    SPEC,
                    dag_id="kassatellen_to_eitje",
                    run_id=f"backfill-{tag}-{n}",
                    shard=shard["shard"],
                    conns=conns.__getitem__,
                ).outcomes:
                    assert o.status == "success", o.error
                    delivered += o.counts["delivered"]
        return delivered

    assert backfill("a") > 0
    held = _eitje(sandbox, "cafe")
    assert backfill("b") == 0  # nothing changed at the POS: nothing re-sent
    assert _eitje(sandbox, "cafe") == held
