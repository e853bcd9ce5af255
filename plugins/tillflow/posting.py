"""Posting rules: POS orders, payments and till closings → balanced ledger entries. Pure: no I/O, Decimal only.

Accounts come from a :class:`Chart` (the account's "accounting chapters" settings), with defaults from the
French chart of accounts (PCG):

* **order** (journal ``sales_journal``, ``VT``): debit the customer account ``411`` with the order's total
  incl. VAT (naming the customer's external reference when the order has a customer); per VAT rate, credit
  the rate's sales account (``70x``) with the amount excl. VAT and the rate's VAT account (``4457x``) with
  the VAT. A VAT line carries its rate (``vat_rate``): the target opens a missing VAT account with it.
* **payment** (journal of the payment's register): debit the payment method's account (``530`` cash,
  ``511`` card…), credit ``411``.
* **till closing** (journal of the closing's register): one entry, ``closing:<id>``, holding

  - the **global lines** Kash.click posts at closing: debit the general sales account ``general_sales``
    (``700000``, not broken down by VAT), credit the general revenue account ``general_revenue``
    (``700100``), each with the closing's **expected takings** — the sum of ``expected`` over its payment
    methods, i.e. the register's validated payments of the day. What was counted is not the takings: the
    difference is posted on its own lines below. Both defaults are class-70 accounts, so the pair leaves the
    sales total (and the per-rate sales and VAT accounts the orders credit) unchanged; an account that wants
    them elsewhere sets its own chapters;
  - the **cash differences**, per payment method: counted < expected → debit ``658`` (cash loss), credit the
    method's account; counted > expected → debit the method's account, credit ``758`` (cash gain); nothing
    when equal. A method without a difference needs no account.

  A closing with no takings and no difference has no entry. A closing whose counted cash is corrected later
  gets a different entry: the outbox reverses the posted one and posts the new one.
* :func:`reverse` swaps debits and credits (a cancelled or changed event already posted).

A negative amount (a refund line, a refunded order) goes to the other side, so no line carries a
negative amount.

**VAT rounding policy.** VAT is computed per order *and per rate*, on the rate's total incl. VAT, never
per line: ``excl = round_half_up(total_incl_of_rate / (1 + rate/100), 2)`` and
``vat = total_incl_of_rate − excl``. So the order's credits add up to its total incl. VAT exactly, and the
VAT of a rate carries at most one rounding (half a cent). Example: two lines of 1.24 at 10 % → total 2.48,
excl 2.25, VAT 0.23 (rounding per line would give 1.13 + 1.13 = 2.26 excl and 0.22 VAT).

Every entry is checked to balance (sum of debits = sum of credits, to the cent) before it is returned.
Missing settings raise :class:`PostingError` naming the record and the field.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tillflow.records import LedgerEntry, LedgerLine, SaleOrder, SalePayment, TillClosing

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)


class PostingError(ValueError):
    """A record cannot be posted with the chart: the message names the record and the field."""


def rate_key(rate: Decimal | int | float | str) -> str:
    """The chart key of a VAT rate: ``Decimal("20.0")`` → ``"20"``, ``5.50`` → ``"5.5"``."""
    d = Decimal(str(rate)).normalize()
    text = format(d, "f")
    return text if "." not in text else text.rstrip("0").rstrip(".")


def round_half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def excl_of(total_incl: Decimal, rate: Decimal) -> Decimal:
    """The amount excl. VAT of an amount incl. VAT at ``rate`` percent, rounded half up to the cent."""
    return round_half_up(total_incl * HUNDRED / (HUNDRED + rate))


class Chart(BaseModel):
    """The accounts and journals posting uses (per account settings). VAT rates are keys like ``"20"``,
    ``"5.5"`` (any spelling of the same number is normalised: ``"20.0"`` → ``"20"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sales: dict[str, str] = Field(
        default_factory=lambda: {"20": "707000", "10": "706000", "5.5": "707055", "2.1": "707021"}
    )
    vat: dict[str, str] = Field(
        default_factory=lambda: {"20": "445712", "10": "445711", "5.5": "445713", "2.1": "445714"}
    )
    customer: str = "411000"
    payment_methods: dict[str, str] = Field(
        default_factory=lambda: {"cash": "530000", "card": "511000", "transfer": "512000", "cheque": "511200"}
    )
    cash_loss: str = "658000"
    cash_gain: str = "758000"
    #: till closing, global lines: debited with the closing's expected takings (not broken down by VAT)
    general_sales: str = "700000"
    #: till closing, global lines: credited with the same amount
    general_revenue: str = "700100"
    sales_journal: str = "VT"
    #: register id → journal code
    registers: dict[str, str] = Field(default_factory=lambda: {"R1": "CA1", "R2": "CA2"})
    #: first day of the fiscal year (needed to import history; validated where that import is set up)
    fiscal_year_start: date | None = None

    @field_validator("sales", "vat", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[str, Any] = {}
        for key, account in v.items():
            try:
                out[rate_key(key)] = account
            except Exception as exc:  # decimal.InvalidOperation
                raise ValueError(f"VAT rate key {key!r} is not a number") from exc
        return out

    def sales_account(self, rate: Decimal, where: str) -> str:
        account = self.sales.get(rate_key(rate))
        if not account:
            raise PostingError(f"{where}: field vat_rate {rate_key(rate)} has no sales account in the chart (sales)")
        return account

    def vat_account(self, rate: Decimal, where: str) -> str:
        account = self.vat.get(rate_key(rate))
        if not account:
            raise PostingError(f"{where}: field vat_rate {rate_key(rate)} has no VAT account in the chart (vat)")
        return account

    def method_account(self, method: str, where: str) -> str:
        account = self.payment_methods.get(method)
        if not account:
            raise PostingError(
                f"{where}: field method {method!r} has no account in the chart (payment_methods); "
                f"known: {', '.join(sorted(self.payment_methods)) or 'none'}"
            )
        return account

    def chapter(self, kind: str, key: str) -> str | None:
        """What the chart posts a source reference item to (``kind`` as the POS lists it: ``payment_method``,
        ``register``, ``vat_rate``), e.g. ``"→ account 530000 (chart.payment_methods)"``; None when it has
        nothing for it (posting would refuse the event)."""
        if kind == "payment_method":
            account = self.payment_methods.get(key)
            return f"→ account {account} (chart.payment_methods)" if account else None
        if kind == "register":
            journal = self.registers.get(key)
            return f"→ journal {journal} (chart.registers)" if journal else None
        if kind == "vat_rate":
            rate = rate_key(key)
            sales, vat = self.sales.get(rate), self.vat.get(rate)
            return f"→ sales {sales}, VAT {vat} (chart.sales, chart.vat)" if sales and vat else None
        return None

    def register_journal(self, register_id: str, where: str) -> str:
        journal = self.registers.get(register_id)
        if not journal:
            raise PostingError(
                f"{where}: field register_id {register_id!r} has no journal in the chart (registers); "
                f"known: {', '.join(sorted(self.registers)) or 'none'}"
            )
        return journal


def _side(
    account: str,
    label: str,
    amount: Decimal,
    *,
    debit: bool,
    customer: str | None = None,
    vat_rate: Decimal | None = None,
) -> LedgerLine:
    """A line for ``amount`` on the debit (or credit) side; a negative amount goes to the other side."""
    amount = round_half_up(amount)
    if amount < 0:
        amount, debit = -amount, not debit
    side = {"debit": amount} if debit else {"credit": amount}
    return LedgerLine(account=account, label=label, customer=customer, vat_rate=vat_rate, **side)


def _checked(entry: LedgerEntry) -> LedgerEntry:
    debit = sum((line.debit for line in entry.lines), ZERO)
    credit = sum((line.credit for line in entry.lines), ZERO)
    if debit != credit:  # not an assert: it must hold under python -O too
        raise AssertionError(f"entry {entry.event_key} does not balance: debit {debit} ≠ credit {credit}")
    return entry


def vat_breakdown(order: SaleOrder) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    """Per VAT rate key: (total incl., excl., VAT) of the order, under the rounding policy above."""
    incl: dict[str, Decimal] = defaultdict(lambda: ZERO)
    rates: dict[str, Decimal] = {}
    for line in order.lines:
        key = rate_key(line.vat_rate)
        incl[key] += line.total_incl
        rates[key] = Decimal(key)
    out = {}
    for key in sorted(incl, key=lambda k: Decimal(k), reverse=True):
        excl = excl_of(incl[key], rates[key])
        out[key] = (incl[key], excl, incl[key] - excl)
    return out


def order_entry(order: SaleOrder, chart: Chart) -> LedgerEntry:
    """The sales entry of an order: debit 411 total incl., credit sales and VAT per rate.

    :raises PostingError: an unknown VAT rate, or lines that do not add up to ``total_incl``.
    """
    where = f"order {order.order_id}"
    lines_total = sum((line.total_incl for line in order.lines), ZERO)
    if lines_total != order.total_incl:
        raise PostingError(f"{where}: field total_incl {order.total_incl} ≠ the lines' total {lines_total}")
    breakdown = vat_breakdown(order)
    for i, line in enumerate(order.lines, start=1):
        chart.sales_account(line.vat_rate, f"{where} line {i}")
        chart.vat_account(line.vat_rate, f"{where} line {i}")
    label = f"Order {order.order_id}"
    customer = order.customer.external_reference if order.customer else None
    lines = [_side(chart.customer, label, order.total_incl, debit=True, customer=customer)]
    for key, (_incl, excl, vat) in breakdown.items():
        rate = Decimal(key)
        if excl:
            lines.append(_side(chart.sales_account(rate, where), f"{label} sales {key} %", excl, debit=False))
        if vat:
            account = chart.vat_account(rate, where)
            lines.append(_side(account, f"{label} VAT {key} %", vat, debit=False, vat_rate=rate))
    return _checked(
        LedgerEntry(
            event_key=f"order:{order.order_id}",
            date=order.business_date,
            label=label,
            journal=chart.sales_journal,
            lines=lines,
            customer=order.customer,
        )
    )


def payment_entry(payment: SalePayment, chart: Chart) -> LedgerEntry:
    """Debit the payment method's account, credit 411 (in the register's journal).

    :raises PostingError: a method with no account, a register with no journal.
    """
    where = f"payment {payment.payment_id}"
    account = chart.method_account(payment.method, where)
    journal = chart.register_journal(payment.register_id, where)
    label = f"Payment {payment.payment_id} ({payment.method}) of order {payment.order_id}"
    customer = payment.customer.external_reference if payment.customer else None
    lines = [
        _side(account, label, payment.amount, debit=True),
        _side(chart.customer, label, payment.amount, debit=False, customer=customer),
    ]
    return _checked(
        LedgerEntry(
            event_key=f"payment:{payment.payment_id}",
            date=payment.business_date,
            label=label,
            journal=journal,
            lines=lines,
            customer=payment.customer,
        )
    )


def closing_takings(closing: TillClosing) -> Decimal:
    """The amount of a closing's global lines: its expected takings, summed over its payment methods."""
    return sum(closing.expected.values(), ZERO)


def closing_entries(closing: TillClosing, chart: Chart) -> list[LedgerEntry]:
    """The entry of a till closing: the global lines (expected takings, general sales → general revenue),
    then the cash differences; one entry, or none when there are no takings and no difference.

    :raises PostingError: a register with no journal (always checked), a method with a difference and no account.
    """
    where = f"closing {closing.closing_id}"
    journal = chart.register_journal(closing.register_id, where)
    label = f"Till closing {closing.closing_id} ({closing.register_id})"
    lines: list[LedgerLine] = []
    takings = closing_takings(closing)
    if takings:
        text = f"{label} takings"
        lines += [
            _side(chart.general_sales, text, takings, debit=True),
            _side(chart.general_revenue, text, takings, debit=False),
        ]
    for method in sorted(set(closing.expected) | set(closing.counted)):
        diff = closing.counted.get(method, ZERO) - closing.expected.get(method, ZERO)
        if diff == 0:
            continue
        account = chart.method_account(method, f"{where} ({method})")
        text = f"{label} {method} {'loss' if diff < 0 else 'gain'}"
        if diff < 0:
            lines += [_side(chart.cash_loss, text, -diff, debit=True), _side(account, text, -diff, debit=False)]
        else:
            lines += [_side(account, text, diff, debit=True), _side(chart.cash_gain, text, diff, debit=False)]
    if not lines:
        return []
    entry = LedgerEntry(
        event_key=f"closing:{closing.closing_id}", date=closing.business_date, label=label, journal=journal, lines=lines
    )
    return [_checked(entry)]


def reverse(entry: LedgerEntry, *, on: date | None = None) -> LedgerEntry:
    """The reversal of a posted entry: debits and credits swapped, label ``"Reversal of …"``, event key
    ``<event_key>:reversal``, dated ``on`` (default: the entry's own date)."""
    lines = [
        LedgerLine(
            account=line.account,
            label=f"Reversal of {line.label}",
            debit=line.credit,
            credit=line.debit,
            customer=line.customer,
            vat_rate=line.vat_rate,
        )
        for line in entry.lines
    ]
    return _checked(
        LedgerEntry(
            event_key=f"{entry.event_key}:reversal",
            date=on or entry.date,
            label=f"Reversal of {entry.label}",
            journal=entry.journal,
            lines=lines,
            customer=entry.customer,
        )
    )
