"""The clock-times flow kind on real PostgreSQL (the target isolated by a recording fake): one timesheet per
POS shift through open → closed → corrected, unmapped and do-not-import employees, every cost-centre mode;
and the import notifications (real SMTP to the catcher): once a day per problem, again after it cleared."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from tillflow.errors import RemoteError
from tillflow.flows import get_kind
from tillflow.flows.clock_times import ClockTimesSettings
from tillflow.mapping import MappingRule
from tillflow.records import ShiftRecord
from tillflow.specs import parse_settings
from tillflow.sync import WorkItem

DAY = date(2026, 11, 18)
T0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


class FakeShiftbase:
    """Records what would be sent; ids like Shiftbase's; refuses chosen shifts like a 422."""

    name = "shiftbase"

    def __init__(self, refuse=()):
        self.sheets: dict[str, dict] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.refuse = set(refuse)

    def set_business_day(self, tz, cutoff):
        self.tz = tz

    def planned_department(self, user_id, day):
        return "D-planned" if user_id == "u1" else None

    def user_department(self, user_id):
        return f"D-own-{user_id}"

    def upsert_timesheet(self, payload, target_id):
        self.calls.append((payload["shift_number"], target_id))
        if payload["shift_number"] in self.refuse:
            raise RemoteError(
                "shiftbase: timesheet refused (HTTP 422): clocked_out: must be after clocked_in", status=422
            )
        new_id = target_id or f"ts-{len(self.sheets) + 1}"
        self.sheets[new_id] = dict(payload)
        return new_id


def shift(number, employee="E1", start=T0, hours=4.0, ended=True, cc="10"):
    end = start + timedelta(hours=hours) if ended else None
    return ShiftRecord(
        shift_number=number,
        branch_number="1",
        financial_date=DAY,
        employee_number=employee,
        start=start,
        end=end,
        ended=ended,
        cost_center=cc,
    )


@pytest.fixture
def account(store):
    return store.upsert_account(
        "mpluskassa_to_shiftbase", "bar", name="Bar", conn_id="m", target_conn_id="s", settings=parse_settings({})
    )


def _item(account):
    return WorkItem(account.id, account.key, account.name, "clock_times", DAY, DAY, "overwrite")


RULES = {"E1": MappingRule("E1", "u1"), "E2": MappingRule("E2", "u2"), "E9": MappingRule("E9", None)}


def _sync(store, account, shifts, client, settings=None, run="r"):
    kind = get_kind("clock_times")
    rows, ignored, rejects = kind.map(shifts, RULES, account=account, flow_settings=settings or ClockTimesSettings())
    store.activity_start("d", run, account.id, "clock_times", _item(account).window)
    counts = kind.upsert(store, account.id, rows, mode="overwrite", run_id=run)
    counts |= kind.deliver(store, _item(account), client, run_id=run)
    return counts, ignored, rejects


def test_a_shift_seen_open_then_closed_then_corrected_is_one_timesheet_with_the_final_times(store, account):
    client = FakeShiftbase()
    counts, _, _ = _sync(store, account, [shift("S1", ended=False)], client, run="r1")
    assert counts["delivered"] == 1 and client.sheets["ts-1"]["clock_out"] is None
    counts, _, _ = _sync(store, account, [shift("S1", ended=False)], client, run="r2")
    assert counts == {
        "upserted": 0,
        "unchanged": 1,
        "delivered": 0,
        "failed": 0,
        "pending": 0,
    }  # unchanged: not re-sent
    _sync(store, account, [shift("S1", hours=4)], client, run="r3")
    _sync(store, account, [shift("S1", hours=3.5)], client, run="r4")  # corrected in the POS
    assert list(client.sheets) == ["ts-1"]  # never a second timesheet
    assert client.sheets["ts-1"]["clock_out"] == T0 + timedelta(hours=3.5)
    assert client.calls == [("S1", None), ("S1", "ts-1"), ("S1", "ts-1")]


def test_a_break_is_two_shifts_unmapped_goes_to_rejects_do_not_import_is_skipped(store, account):
    client = FakeShiftbase()
    shifts = [
        shift("S1", hours=3),
        shift("S2", start=T0 + timedelta(hours=3.5), hours=4),  # after a break: clock-out/clock-in
        shift("S3", employee="E7"),  # not mapped
        shift("S4", employee="E9"),  # do not import
    ]
    counts, ignored, rejects = _sync(store, account, shifts, client)
    assert counts["delivered"] == 2 and ignored == 1
    assert [r.reason for r in rejects] == [
        "employee E7 is not mapped to a Shiftbase user (map it, or set it to do not import)"
    ]


def test_an_employee_the_pos_does_not_list_is_rejected_as_unlisted_not_as_unmapped(store, account):
    unlisted = shift("S1", employee="E8").model_copy(update={"employee_listed": False})
    listed = shift("S2", employee="E7").model_copy(update={"employee_listed": True})
    counts, _, rejects = _sync(store, account, [unlisted, listed, shift("S3")], FakeShiftbase())
    assert counts["delivered"] == 1
    reasons = {r.ref: r.reason for r in rejects}
    assert reasons["shift S1"].startswith("employee E8 is not listed by the POS")
    assert "without an authorisation group is not listed" in reasons["shift S1"]
    assert reasons["shift S2"] == "employee E7 is not mapped to a Shiftbase user (map it, or set it to do not import)"


def test_every_cost_centre_mode(store, account):
    client = FakeShiftbase()
    settings = ClockTimesSettings(cost_centers={"10": "skip", "20": "D-fixed", "30": "auto"})
    shifts = [shift("S1", cc="10"), shift("S2", cc="20"), shift("S3", cc="30"), shift("S4", employee="E2", cc="40")]
    counts, ignored, _ = _sync(store, account, shifts, client, settings=settings)
    assert ignored == 1  # cost centre 10: do not import
    by_shift = {s["shift_number"]: s["department_id"] for s in client.sheets.values()}
    # fixed; automatic = the planned roster department of that day; else the employee's own department
    assert by_shift == {"S2": "D-fixed", "S3": "D-planned", "S4": "D-own-u2"}


def test_a_refused_timesheet_is_recorded_and_the_others_go(store, account):
    from tillflow.errors import DeliveryRefused

    client = FakeShiftbase(refuse={"S2"})
    with pytest.raises(DeliveryRefused, match="refused 1 of 3 timesheet"):
        _sync(store, account, [shift("S1"), shift("S2"), shift("S3")], client)
    assert {s["shift_number"] for s in client.sheets.values()} == {"S1", "S3"}
    failed = store.conn.execute(
        "SELECT object_key, detail FROM tillflow.object_delivery WHERE status = 'failed'"
    ).fetchall()
    assert [(r["object_key"], "clocked_out" in r["detail"]) for r in failed] == [("S2", True)]
    client.refuse.clear()
    counts, _, _ = _sync(store, account, [shift("S1"), shift("S2"), shift("S3")], client, run="again")
    assert counts["delivered"] == 1  # only the one that failed is sent again


def test_notifications_once_a_day_per_problem_and_again_after_it_cleared(store, account, mail_server, mail):
    import os

    from tillflow.problem_mail import notify, smtp_sender
    from tillflow.sources.base import ConnectionInfo

    conn = ConnectionInfo(
        conn_id="smtp_default",
        host="127.0.0.1",
        port=mail_server.port,
        extra={"disable_tls": True, "disable_ssl": True, "from_email": "tillflow@localhost"},
    )
    assert os.environ["AIRFLOW_CONN_SMTP_DEFAULT"]
    send = smtp_sender(conn)
    problems = {
        "unmapped employee E7": "employee E7 is not mapped to a Shiftbase user",
        "the import failed": "the import failed: RemoteError: mpluskassa: getShifts answered a SOAP fault",
    }
    now = datetime(2026, 11, 18, 10, 0, tzinfo=UTC)

    def tick(minutes, current):
        return notify(
            store,
            account,
            "clock_times",
            "2026-11-17..2026-11-18",
            "ops@bar.example",
            current,
            send,
            now=now + timedelta(minutes=minutes),
            secrets=["s3cret"],
        )

    assert tick(0, problems) == 2
    [msg] = mail.messages
    assert msg["To"] == "ops@bar.example" and "2 problem(s)" in msg["Subject"]
    body = msg.get_body(preferencelist=("plain",)).get_content()
    assert "employee E7 is not mapped" in body and "SOAP fault" in body and msg.get_content_type() == "text/plain"
    assert tick(15, problems) == 0 and tick(23 * 60, problems) == 0  # not every 15 minutes
    assert tick(24 * 60, problems) == 2  # a day later, still there: once more
    assert tick(24 * 60 + 15, {"unmapped employee E7": problems["unmapped employee E7"]}) == 0  # the failure cleared
    assert tick(24 * 60 + 30, problems) == 1  # and came back: reported again at once
    assert len(mail.messages) == 3
    assert all("s3cret" not in m.as_string() for m in mail.messages)


def test_a_create_whose_answer_was_lost_is_looked_up_not_created_twice(store, account):
    from tillflow.errors import TransientError

    class LosesOneAnswer(FakeShiftbase):
        lost = False

        def upsert_timesheet(self, payload, target_id):
            new_id = super().upsert_timesheet(payload, target_id)
            if not self.lost:
                self.lost = True
                raise TransientError("shiftbase: POST /timesheets answered HTTP 502 (outcome unknown)")
            return new_id

        def find_timesheet(self, payload):
            return next((i for i, s in self.sheets.items() if s["shift_number"] == payload["shift_number"]), None)

    client = LosesOneAnswer()
    with pytest.raises(TransientError):
        _sync(store, account, [shift("S1")], client, run="r1")
    counts, _, _ = _sync(store, account, [shift("S1")], client, run="r2")
    assert counts["delivered"] == 1 and list(client.sheets) == ["ts-1"]  # found, updated, not a second one
    assert client.calls == [("S1", None), ("S1", "ts-1")]
