"""Canonical records that flow between sources, mapping, store and targets (pydantic, Decimal money)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def money(value: Any) -> Decimal:
    """Parse a money value into a 2-dp Decimal; raise ValueError naming the bad value."""
    if isinstance(value, float):
        value = repr(value)
    try:
        d = Decimal(str(value).strip())
    except Exception as exc:  # decimal.InvalidOperation and friends
        raise ValueError(f"not a decimal amount: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return d.quantize(Decimal("0.01"))


def jsonable(value: Any) -> Any:
    """``value`` with Decimals turned back into strings, so a Reject payload stores as JSON."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RevenueLine(Record):
    """Revenue of one source key (POS location / revenue group / branch) for one business day or hour."""

    source_key: str = Field(min_length=1)
    business_date: date
    #: hour of the business day: whole hours since the business day started (0–24: a 25-hour DST day has 25)
    hour: int | None = Field(default=None, ge=0, le=24)
    amount_incl: Decimal
    amount_excl: Decimal
    ref: str = ""

    @field_validator("amount_incl", "amount_excl", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal:
        return money(v)

    def amount(self, vat: Literal["incl", "excl"]) -> Decimal:
        return self.amount_incl if vat == "incl" else self.amount_excl


class ArticleRecord(Record):
    """One article of the accounting system's register (eAccounting): what the products and stock flows carry to
    the POS. Prices are money (2 dp); the available stock is a plain quantity."""

    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)
    price_excl: Decimal
    price_incl: Decimal
    active: bool = True
    stock_available: Decimal

    @field_validator("price_excl", "price_incl", mode="before")
    @classmethod
    def _money(cls, v: Any) -> Decimal:
        return money(v)

    @field_validator("stock_available", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> Decimal:
        try:
            d = Decimal(str(v).strip())
        except Exception as exc:
            raise ValueError(f"not a quantity: {v!r}") from exc
        if not d.is_finite():
            raise ValueError(f"not a finite quantity: {v!r}")
        return d


class RefItem(Record):
    """A reference item of a source or target: a POS location, a revenue unit, a team…"""

    key: str
    name: str
    extra: dict[str, Any] = Field(default_factory=dict)


class Reject(Record):
    """A record that failed validation: it goes to ``tillflow.rejects`` with its reason and payload."""

    reason: str
    payload: dict[str, Any]
    ref: str = ""


class RawPage(Record):
    """One fetched payload, landed as-is (compressed) before any parsing."""

    flow: str
    request: dict[str, Any]  # method, path, params — already masked, no credentials
    body: bytes
    content_type: str = "application/json"


class TargetRow(Record):
    """One value to deliver: target key (revenue unit…), day, optional hour, amount."""

    target_key: str
    business_date: date
    hour: int | None = None
    amount: Decimal


class DeliveryResult(Record):
    status: Literal["delivered", "skipped"]
    detail: str = ""
    #: the target's own id of the written row (a team day, a timesheet…), remembered per canonical row
    target_id: str | None = None


class ShiftRecord(Record):
    """One POS shift (MplusKASSA ``getShifts``): keyed by the POS's shift number, open until it ends; a break
    is a clock-out and a new shift. Times are aware instants."""

    shift_number: str = Field(min_length=1)
    branch_number: str
    financial_date: date
    employee_number: str
    start: datetime
    end: datetime | None = None
    ended: bool = False
    manually_modified: bool = False
    cost_center: str | None = None
    #: whether the POS's employee list had this employee when the shift was fetched (None: not known)
    employee_listed: bool | None = None


class TimesheetRow(Record):
    """A canonical timesheet: a shift of a mapped employee, with the department it books on (or 'auto')."""

    shift_number: str
    employee_number: str
    user_id: str
    branch_number: str
    business_date: date
    cost_center: str | None = None
    department: str  # a Shiftbase department id, or "auto": the employee's planned (else own) department
    clock_in: datetime
    clock_out: datetime | None = None
    ended: bool = False


# ---------------------------------------------------------------- ledger (Kash.click → Pennylane)


class Customer(Record):
    """A POS customer, found (or created) at the target by ``external_reference``."""

    external_reference: str = Field(min_length=1)
    name: str = Field(min_length=1)
    email: str | None = None


class OrderLine(Record):
    label: str
    quantity: Decimal
    unit_price_incl: Decimal
    vat_rate: Decimal  # percent: Decimal("20"), Decimal("5.5")
    total_incl: Decimal


class SaleOrder(Record):
    """An order registered at a till: its lines with their VAT rates, in money incl. VAT."""

    order_id: str
    register_id: str
    business_date: date
    customer: Customer | None = None
    lines: list[OrderLine]
    total_incl: Decimal


class SalePayment(Record):
    """A payment of an order with one payment method (cash, card, transfer…)."""

    payment_id: str
    order_id: str
    register_id: str
    business_date: date
    method: str
    amount: Decimal
    customer: Customer | None = None


class TillClosing(Record):
    """A till closing: per payment method what the till expected and what was counted."""

    closing_id: str
    register_id: str
    business_date: date
    expected: dict[str, Decimal]
    counted: dict[str, Decimal]


class LedgerLine(Record):
    """One line of a ledger entry, on an account *number* (the target resolves it to its own id); a
    customer line names the customer, whose own receivable account the target resolves."""

    account: str
    label: str
    debit: Decimal = Decimal("0.00")
    credit: Decimal = Decimal("0.00")
    customer: str | None = None  # external reference of the customer (411 lines)
    vat_rate: Decimal | None = None  # percent, on VAT lines: the target opens a missing VAT account with it


class LedgerEntry(Record):
    """A balanced entry for one source event (``event_key`` e.g. ``order:123``), in one journal (a code)."""

    event_key: str
    date: date
    label: str
    journal: str
    lines: list[LedgerLine]
    customer: Customer | None = None
