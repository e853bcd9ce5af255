"""Posting rules: every entry balances, credits match totals, the VAT rounding policy, and clear PostingErrors."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tillflow.posting import Chart, PostingError, closing_entries, order_entry, payment_entry, reverse, vat_breakdown
from tillflow.records import Customer, LedgerEntry, OrderLine, SaleOrder, SalePayment, TillClosing

CHART = Chart()
DAY = date(2026, 3, 14)
D = Decimal


def line(total: str, rate: str, qty: str = "1", label: str = "x") -> OrderLine:
    t = D(total)
    return OrderLine(label=label, quantity=D(qty), unit_price_incl=t / D(qty), vat_rate=D(rate), total_incl=t)


def order(*lines: OrderLine, oid="O1", customer: Customer | None = None, total=None) -> SaleOrder:
    total = sum((x.total_incl for x in lines), D("0.00")) if total is None else D(total)
    return SaleOrder(
        order_id=oid, register_id="R1", business_date=DAY, customer=customer, lines=list(lines), total_incl=total
    )


def payment(amount: str, method="cash", pid="P1", register="R1") -> SalePayment:
    return SalePayment(
        payment_id=pid, order_id="O1", register_id=register, business_date=DAY, method=method, amount=D(amount)
    )


def closing(expected: dict, counted: dict, register="R1") -> TillClosing:
    return TillClosing(
        closing_id="Z1",
        register_id=register,
        business_date=DAY,
        expected={k: D(v) for k, v in expected.items()},
        counted={k: D(v) for k, v in counted.items()},
    )


def totals(entry: LedgerEntry) -> tuple[Decimal, Decimal]:
    return sum(x.debit for x in entry.lines), sum(x.credit for x in entry.lines)


def net(entries, accounts) -> Decimal:
    """Credit minus debit on ``accounts`` over ``entries``."""
    return sum((x.credit - x.debit for e in entries for x in e.lines if x.account in accounts), D(0))


# ------------------------------------------------------------------------------------------- examples


def test_vat_is_rounded_on_the_rate_total_not_per_line():
    o = order(line("1.24", "10"), line("1.24", "10"))
    assert vat_breakdown(o) == {"10": (D("2.48"), D("2.25"), D("0.23"))}
    e = order_entry(o, CHART)
    by_account = {x.account: x for x in e.lines}
    assert by_account["411000"].debit == D("2.48")
    assert by_account["706000"].credit == D("2.25")  # per-line rounding would give 1.13 + 1.13 = 2.26
    assert by_account["445711"].credit == D("0.23")  # … and 0.22 VAT
    assert totals(e) == (D("2.48"), D("2.48"))


def test_order_entry_accounts_customer_and_mixed_rates():
    cust = Customer(external_reference="C001", name="Boulangerie Martin", email="compta@martin.fr")
    o = order(line("12.00", "20"), line("5.50", "5.5"), line("1.90", "2.1"), customer=cust)
    e = order_entry(o, CHART)
    assert e.event_key == "order:O1" and e.journal == "VT" and e.date == DAY and e.customer == cust
    debit = [x for x in e.lines if x.debit]
    assert [(x.account, x.debit, x.customer) for x in debit] == [("411000", D("19.40"), "C001")]
    credits = {x.account: x.credit for x in e.lines if x.credit}
    assert credits == {
        "707000": D("10.00"),
        "445712": D("2.00"),
        "707055": D("5.21"),
        "445713": D("0.29"),
        "707021": D("1.86"),
        "445714": D("0.04"),
    }
    assert all(x.customer is None for x in e.lines if x.account != "411000")


def test_rate_keys_are_normalised():
    chart = Chart(sales={"20.0": "707000"}, vat={"20.00": "445712"})
    assert chart.sales == {"20": "707000"} and chart.vat == {"20": "445712"}
    assert order_entry(order(line("12.00", "20.000")), chart).lines[1].account == "707000"


def test_a_refund_line_goes_to_the_other_side():
    e = order_entry(order(line("12.00", "20"), line("-6.00", "20", qty="-1")), CHART)
    assert totals(e) == (D("6.00"), D("6.00"))
    refund = order_entry(order(line("-12.00", "20", qty="-1")), CHART)
    assert {x.account: (x.debit, x.credit) for x in refund.lines} == {
        "411000": (D("0"), D("12.00")),
        "707000": (D("10.00"), D("0")),
        "445712": (D("2.00"), D("0")),
    }


def test_payment_entry():
    cust = Customer(external_reference="C9", name="N")
    p = payment("15.00", "card").model_copy(update={"customer": cust})
    e = payment_entry(p, CHART)
    assert e.event_key == "payment:P1" and e.journal == "CA1"
    assert [(x.account, x.debit, x.credit, x.customer) for x in e.lines] == [
        ("511000", D("15.00"), D("0"), None),
        ("411000", D("0"), D("15.00"), "C9"),
    ]


def test_a_closing_posts_its_takings_globally_and_its_cash_differences():
    [even] = closing_entries(closing({"cash": "10.00", "card": "5.00"}, {"cash": "10.00", "card": "5.00"}), CHART)
    assert even.event_key == "closing:Z1" and even.journal == "CA1"
    # the global lines carry the expected takings (15.00 over both methods), not broken down by VAT
    assert [(x.account, x.debit, x.credit) for x in even.lines] == [
        ("700000", D("15.00"), 0),
        ("700100", 0, D("15.00")),
    ]
    [loss] = closing_entries(closing({"cash": "100.00"}, {"cash": "99.50"}, register="R2"), CHART)
    assert loss.journal == "CA2" and loss.event_key == "closing:Z1"
    assert [(x.account, x.debit, x.credit) for x in loss.lines] == [
        ("700000", D("100.00"), 0),  # what the till expected: the counted 99.50 is not the takings
        ("700100", 0, D("100.00")),
        ("658000", D("0.50"), 0),
        ("530000", 0, D("0.50")),
    ]
    [gain] = closing_entries(closing({"cash": "100.00"}, {"cash": "101.00"}), CHART)
    assert [(x.account, x.debit, x.credit) for x in gain.lines][2:] == [
        ("530000", D("1.00"), 0),
        ("758000", 0, D("1.00")),
    ]
    assert closing_entries(closing({"cash": "0.00"}, {"cash": "0.00"}), CHART) == []  # nothing sold, nothing off


def test_the_general_accounts_are_chapters_of_their_own():
    chart = Chart(general_sales="709000", general_revenue="580000")
    [e] = closing_entries(closing({"cash": "20.00"}, {"cash": "20.00"}), chart)
    assert [(x.account, x.debit, x.credit) for x in e.lines] == [("709000", D("20.00"), 0), ("580000", 0, D("20.00"))]


def test_a_cash_difference_corrected_to_zero_changes_the_entry():
    [off] = closing_entries(closing({"cash": "50.00"}, {"cash": "48.00"}), CHART)
    [fixed] = closing_entries(closing({"cash": "50.00"}, {"cash": "50.00"}), CHART)
    assert fixed.event_key == off.event_key and fixed.lines == off.lines[:2]
    assert {x.account for x in off.lines} - {x.account for x in fixed.lines} == {"658000", "530000"}


def test_a_closing_left_without_entry_reverses_what_was_posted_for_it():
    from tillflow.flows.ledger import Ledger, LedgerSettings

    settings = LedgerSettings(fiscal_year_start=DAY)
    rows, _, rejects = Ledger().map(
        [closing({"cash": "0.00"}, {"cash": "0.00"})], {}, account=None, flow_settings=settings
    )
    assert rows == [("closing:Z1", None)] and rejects == []  # None: the outbox reverses a posted revision


def test_vat_lines_carry_their_rate():
    e = order_entry(order(line("12.00", "20"), line("5.50", "5.50")), CHART)
    assert {x.account: x.vat_rate for x in e.lines} == {
        "411000": None,
        "707000": None,
        "445712": D("20"),
        "707055": None,
        "445713": D("5.5"),
    }
    assert [x.vat_rate for x in reverse(e).lines] == [x.vat_rate for x in e.lines]


def test_reverse_swaps_sides():
    e = order_entry(order(line("12.00", "20")), CHART)
    r = reverse(e, on=date(2026, 3, 20))
    assert r.label == "Reversal of Order O1" and r.date == date(2026, 3, 20) and r.event_key == "order:O1:reversal"
    assert [(x.account, x.debit, x.credit) for x in r.lines] == [(x.account, x.credit, x.debit) for x in e.lines]
    assert reverse(r).lines[0].debit == e.lines[0].debit


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda: order_entry(order(line("10.70", "7")), CHART), ["order O1", "vat_rate 7", "sales"]),
        (
            lambda: order_entry(order(line("10.70", "20")), Chart(vat={"10": "445711"})),
            ["order O1", "vat_rate 20", "vat"],
        ),
        (lambda: order_entry(order(line("10.00", "20"), total="12.00"), CHART), ["order O1", "total_incl"]),
        (lambda: payment_entry(payment("1.00", "bitcoin"), CHART), ["payment P1", "method 'bitcoin'"]),
        (lambda: payment_entry(payment("1.00", register="R9"), CHART), ["payment P1", "register_id 'R9'"]),
        (lambda: closing_entries(closing({"cash": "1"}, {"cash": "1"}, register="R9"), CHART), ["closing Z1", "'R9'"]),
        (lambda: closing_entries(closing({"btc": "1"}, {"btc": "2"}), CHART), ["closing Z1", "method 'btc'"]),
    ],
)
def test_posting_errors_name_the_record_and_field(call, needles):
    with pytest.raises(PostingError) as exc:
        call()
    assert all(n in str(exc.value) for n in needles), str(exc.value)


def test_a_method_without_difference_needs_no_account():
    [e] = closing_entries(closing({"btc": "1.00"}, {"btc": "1.00"}), CHART)
    assert {x.account for x in e.lines} == {CHART.general_sales, CHART.general_revenue}


# ------------------------------------------------------------------------------------------- properties

RATES = [D(k) for k in CHART.sales]
cents = st.integers(min_value=1, max_value=50_000).map(lambda c: D(c) / 100)


@st.composite
def order_lines(draw):
    qty = D(draw(st.sampled_from([1, 2, 3, 5, 12]))) * draw(st.sampled_from([1, 1, 1, -1]))
    unit = draw(cents)
    total = (qty * unit).quantize(D("0.01"))
    return OrderLine(
        label="l", quantity=qty, unit_price_incl=unit, vat_rate=draw(st.sampled_from(RATES)), total_incl=total
    )


@st.composite
def orders_and_payments(draw):
    orders, payments = [], []
    for i in range(draw(st.integers(min_value=1, max_value=8))):
        lines = draw(st.lists(order_lines(), min_size=1, max_size=6))
        with_customer = draw(st.booleans())
        o = SaleOrder(
            order_id=f"O{i}",
            register_id=draw(st.sampled_from(["R1", "R2"])),
            business_date=DAY,
            customer=Customer(external_reference=f"C{i}", name="n") if with_customer else None,
            lines=lines,
            total_incl=sum((x.total_incl for x in lines), D("0.00")),
        )
        orders.append(o)
        split = draw(st.integers(min_value=0, max_value=100))
        first = (o.total_incl * split / 100).quantize(D("0.01"))
        methods = draw(st.lists(st.sampled_from(sorted(CHART.payment_methods)), min_size=2, max_size=2))
        for j, (method, amount) in enumerate([(methods[0], first), (methods[1], o.total_incl - first)]):
            payments.append(
                SalePayment(
                    payment_id=f"O{i}-P{j}",
                    order_id=o.order_id,
                    register_id=o.register_id,
                    business_date=DAY,
                    method=method,
                    amount=amount,
                    customer=o.customer,
                )
            )
    return orders, payments


@st.composite
def closings(draw):
    methods = draw(st.lists(st.sampled_from(sorted(CHART.payment_methods)), min_size=1, max_size=4, unique=True))
    expected = {m: draw(cents) for m in methods}
    counted = {m: expected[m] + D(draw(st.integers(min_value=-500, max_value=500))) / 100 for m in methods}
    return TillClosing(
        closing_id="Z",
        register_id=draw(st.sampled_from(["R1", "R2"])),
        business_date=DAY,
        expected=expected,
        counted=counted,
    )


@settings(max_examples=300, deadline=None)
@given(orders_and_payments(), st.lists(closings(), max_size=3))
def test_every_entry_balances_and_matches_the_sources(data, tills):
    orders, payments = data
    order_entries = [order_entry(o, CHART) for o in orders]
    payment_entries = [payment_entry(p, CHART) for p in payments]
    closing_list = [e for c in tills for e in closing_entries(c, CHART)]
    for e in order_entries + payment_entries + closing_list:
        debit, credit = totals(e)
        assert debit == credit
        assert all(x.debit >= 0 and x.credit >= 0 and not (x.debit and x.credit) for x in e.lines)
        assert all(x.debit == x.debit.quantize(D("0.01")) and x.credit == x.credit.quantize(D("0.01")) for x in e.lines)
        assert totals(reverse(e)) == (credit, debit)
    income = set(CHART.sales.values()) | set(CHART.vat.values())
    for o, e in zip(orders, order_entries, strict=True):
        assert net([e], income) == o.total_incl
        assert net([e], {CHART.customer}) == -o.total_incl
        for key, (incl, excl, vat) in vat_breakdown(o).items():
            assert excl + vat == incl
            assert abs(excl * D(key) / 100 - vat) <= D("0.005") * (1 + D(key) / 100) + D("0.000001")
    method_accounts = set(CHART.payment_methods.values())
    assert -net(payment_entries, method_accounts) == sum((p.amount for p in payments), D(0))
    for c in tills:
        entries = closing_entries(c, CHART)
        diff = sum((c.counted[m] - c.expected[m] for m in c.expected), D(0))
        assert -net(entries, method_accounts) == diff
        assert net(entries, {CHART.cash_gain, CHART.cash_loss}) == diff  # gains credited, losses debited
        takings = sum(c.expected.values(), D(0))
        assert net(entries, {CHART.general_revenue}) == takings == -net(entries, {CHART.general_sales})
        assert len(entries) == 1 and entries[0].event_key == "closing:Z"  # every generated till took something
    # the global lines move nothing between the sales total and the rest: class 7 nets to the orders' sales
    sales = set(CHART.sales.values()) | {CHART.general_sales, CHART.general_revenue}
    assert net(order_entries + payment_entries + closing_list, sales) == net(order_entries, set(CHART.sales.values()))
