"""Clock times: POS shifts become timesheets in the workforce tool, keyed by the POS's shift number.

A shift seen open (no end yet), later closed, later corrected updates its one timesheet — never a second
one: the canonical row is keyed by (account, shift number), and the target's own timesheet id is
remembered (``tillflow.object_delivery``, flow ``clock_times``); only shifts whose content changed since
they were last delivered are sent. Breaks are separate clock-out/clock-in shifts (MplusKASSA's pause
button is not supported).

Mapping: POS employee → Shiftbase user (``employee``), or inactive = "do not import". A shift of an
unmapped employee goes to rejects naming the employee (the others still land) and into the import
notification; it is imported by the next run after the employee is mapped. A shift of an employee the POS
does not list (MplusKASSA: no authorisation group) is rejected with that reason instead. Cost centre → department per
cost centre (settings ``cost_centers``): ``skip`` (do not import), ``auto`` (the employee's planned roster
department that day, else their own; the default) or a fixed department id.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, EmailStr, field_validator

from tillflow.errors import DeliveryRefused, RemoteError
from tillflow.flows.base import FlowKind
from tillflow.records import Reject, ShiftRecord, TimesheetRow

log = logging.getLogger(__name__)


class ClockTimesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: cost centre number → "skip" | "auto" | a department id; a cost centre not listed is "auto"
    cost_centers: dict[str, str] = {}
    #: where import problems are mailed (once a day per problem)
    notify_email: EmailStr | None = None
    enabled: bool = True

    @field_validator("cost_centers")
    @classmethod
    def _modes(cls, v: dict[str, str]) -> dict[str, str]:
        for cc, mode in v.items():
            if not str(mode).strip():
                raise ValueError(f"cost centre {cc}: give skip, auto or a department id")
        return {str(k): str(m).strip() for k, m in v.items()}


def _unmapped(shift: ShiftRecord) -> str:
    """Why a shift of an employee without a mapping is rejected: not listed by the POS, or listed but unmapped."""
    if shift.employee_listed is False:
        return (
            f"employee {shift.employee_number} is not listed by the POS (getEmployees does not return them; in "
            "MplusKASSA an employee without an authorisation group is not listed): give them an authorisation "
            "group, then map them to a Shiftbase user (or set them to do not import)"
        )
    return f"employee {shift.employee_number} is not mapped to a Shiftbase user (map it, or set it to do not import)"


def _hash(row: TimesheetRow) -> str:
    data = row.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class ClockTimes(FlowKind):
    name: ClassVar[str] = "clock_times"
    record = ShiftRecord
    table: ClassVar[str] = "timesheets"
    key: ClassVar[tuple[str, ...]] = ("shift_number",)
    windows = ("open_day", "closed_days")
    gate = "with_data"
    delivery = "keyed_upsert"
    settings_model = ClockTimesSettings

    def mapping_kinds(self, source_cls: Any) -> tuple[str, ...]:
        return ("employee",)

    def settings_mapping(self, flow_settings: dict[str, Any], item_kind: str, key: str, *, flow_name: str):
        """Cost centres are set per account (``cost_centers``), not mapped with ``mappings set``."""
        if item_kind != "cost_center":
            return None
        mode = ((flow_settings or {}).get("cost_centers") or {}).get(key, "auto")
        return f"→ department mode {mode} (flows.{flow_name}.cost_centers)", True

    def parse(self, source_cls: Any, page: Any):
        return source_cls.parse_page(page)

    def record_key(self, record: Any) -> tuple:
        return ("shift", record.shift_number)

    def record_day(self, record: Any, settings: Any = None) -> Any:
        return record.financial_date

    def map(self, records: Sequence[ShiftRecord], rules, *, account, flow_settings, mapping_kind: str = "employee"):
        """Shifts → timesheet rows; returns (rows, ignored, rejects): unmapped employees are rejected."""
        settings = flow_settings or ClockTimesSettings()
        rows: list[TimesheetRow] = []
        rejects: list[Reject] = []
        ignored = 0
        for shift in records:
            rule = rules.get(shift.employee_number)
            if rule is None:
                payload = shift.model_dump(mode="json")
                rejects.append(Reject(reason=_unmapped(shift), payload=payload, ref=f"shift {shift.shift_number}"))
                continue
            if rule.inactive:  # "do not import"
                ignored += 1
                continue
            mode = settings.cost_centers.get(shift.cost_center or "", "auto")
            if mode == "skip":
                ignored += 1
                continue
            rows.append(
                TimesheetRow(
                    shift_number=shift.shift_number,
                    employee_number=shift.employee_number,
                    user_id=rule.target_key,
                    branch_number=shift.branch_number,
                    business_date=shift.financial_date,
                    cost_center=shift.cost_center,
                    department=mode,
                    clock_in=shift.start,
                    clock_out=shift.end,
                    ended=shift.ended,
                )
            )
        return rows, ignored, rejects

    def upsert(self, store, account_id, rows, *, mode, run_id) -> dict[str, int]:
        """Merge by shift number; a changed shift (closed, corrected) replaces its row."""
        upserted = unchanged = 0
        with store.conn.transaction():
            for row in rows:
                digest = _hash(row)
                cur = store.conn.execute(
                    """
                    INSERT INTO tillflow.timesheets (account_id, shift_number, employee_number, user_id, branch_number,
                        business_date, cost_center, department, clock_in, clock_out, ended, payload_hash, run_id)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (account_id, shift_number) DO UPDATE SET
                        employee_number = EXCLUDED.employee_number, user_id = EXCLUDED.user_id,
                        branch_number = EXCLUDED.branch_number, business_date = EXCLUDED.business_date,
                        cost_center = EXCLUDED.cost_center, department = EXCLUDED.department,
                        clock_in = EXCLUDED.clock_in, clock_out = EXCLUDED.clock_out, ended = EXCLUDED.ended,
                        payload_hash = EXCLUDED.payload_hash, run_id = EXCLUDED.run_id, updated_at = now()
                    WHERE tillflow.timesheets.payload_hash <> EXCLUDED.payload_hash
                    """,
                    (
                        account_id,
                        row.shift_number,
                        row.employee_number,
                        row.user_id,
                        row.branch_number,
                        row.business_date,
                        row.cost_center,
                        row.department,
                        row.clock_in,
                        row.clock_out,
                        row.ended,
                        digest,
                        run_id,
                    ),
                )
                if cur.rowcount:
                    upserted += 1
                else:
                    unchanged += 1
        return {"upserted": upserted, "unchanged": unchanged}

    def deliver(self, store, item, client, *, run_id, log=None) -> dict[str, int]:
        """Create or update the timesheet of every shift that changed since its last delivery."""
        pending = store.conn.execute(
            """
            SELECT t.*, d.target_id, d.status AS last_status FROM tillflow.timesheets t
              LEFT JOIN tillflow.object_delivery d
                ON d.account_id = t.account_id AND d.flow = 'clock_times' AND d.object_key = t.shift_number
             WHERE t.account_id = %s
               AND (d.object_key IS NULL OR d.payload_hash <> t.payload_hash OR d.status = 'failed'
                    OR %s AND t.business_date BETWEEN %s AND %s)
             ORDER BY t.business_date, t.clock_in, t.shift_number
            """,
            (item.account_id, item.force_delivery, item.window_start, item.window_end),
        ).fetchall()
        store.conn.commit()
        delivered = 0
        refused: list[str] = []
        departments: dict[tuple[str, Any], str | None] = {}
        settings = store.account_by_id(item.account_id).settings  # clock times go out as local wall times
        client.set_business_day(settings.timezone, settings.business_day_cutoff)
        try:
            for t in pending:
                department = t["department"]
                if department == "auto":
                    key = (t["user_id"], t["business_date"])
                    if key not in departments:
                        departments[key] = client.planned_department(t["user_id"], t["business_date"]) or (
                            client.user_department(t["user_id"])
                        )
                    department = departments[key]
                try:
                    build = getattr(client, "timesheet_payload", None)
                    if build is None:  # a target without its own timesheet shape
                        payload = {
                            "user_id": t["user_id"],
                            "date": t["business_date"],
                            "clock_in": t["clock_in"],
                            "clock_out": t["clock_out"],
                            "department_id": department,
                            "shift_number": t["shift_number"],
                            "ended": t["ended"],
                        }
                    else:
                        payload = build(
                            user_id=t["user_id"],
                            day=t["business_date"],
                            clock_in=t["clock_in"],
                            clock_out=t["clock_out"],
                            department_id=department,
                        )
                    known = t["target_id"]
                    if known is None and t["last_status"] == "failed" and hasattr(client, "find_timesheet"):
                        # the last create may have landed with its answer lost: look it up before creating again
                        known = client.find_timesheet(payload)
                    target_id = client.upsert_timesheet(payload, known)
                except Exception as exc:  # recorded failed: a create whose answer was lost is looked up next time
                    _record(store, item.account_id, t, None, "failed", str(exc), run_id)
                    if not (isinstance(exc, RemoteError) and exc.permanent):
                        raise
                    refused.append(f"shift {t['shift_number']} ({t['employee_number']}): {exc}")
                    continue
                status = "updated" if known else "created"
                _record(store, item.account_id, t, target_id, status, "", run_id)
                delivered += 1
        finally:
            store.activity_update(run_id, item.account_id, item.flow, delivered=delivered, failed=len(refused))
        if refused:
            raise DeliveryRefused(
                f"{client.name} refused {len(refused)} of {len(pending)} timesheet(s), {delivered} delivered; "
                f"first: {refused[0]}",
                refused=refused,
            )
        return {"delivered": delivered, "failed": 0, "pending": len(pending)}


def _record(store, account_id: int, t: dict, target_id: str | None, status: str, detail: str, run_id: str) -> None:
    with store.conn.transaction():
        store.conn.execute(
            """
            INSERT INTO tillflow.object_delivery (account_id, flow, object_key, payload_hash, target_id, status,
                                                  detail, run_id)
            VALUES (%s, 'clock_times', %s, %s, %s, %s, %s, %s)
            ON CONFLICT (account_id, flow, object_key) DO UPDATE
               SET payload_hash = EXCLUDED.payload_hash,
                   target_id = coalesce(EXCLUDED.target_id, tillflow.object_delivery.target_id),
                   status = EXCLUDED.status, detail = EXCLUDED.detail, run_id = EXCLUDED.run_id,
                   attempts = tillflow.object_delivery.attempts + 1, updated_at = now()
            """,
            (
                account_id,
                t["shift_number"],
                t["payload_hash"] if status != "failed" else "",
                target_id,
                status,
                detail[:500],
                run_id,
            ),
        )
