"""The ledger outbox against the real store, with a fake ledger that can lose answers: every posting
lands exactly once, changes are reversals plus new entries, never edits."""

from __future__ import annotations

import pytest
from tillflow.delivery.outbox import post_outbox
from tillflow.errors import DeliveryRefused, RemoteError, TransientError
from tillflow.specs import parse_settings
from tillflow.store.outbox import Outbox, OutboxStateError


def entry(amount: str) -> dict:
    return {
        "label": "order",
        "lines": [
            {"account": "411", "debit": amount, "credit": "0.00"},
            {"account": "706", "debit": "0.00", "credit": amount},
        ],
    }


def reverse(payload: dict) -> dict:
    lines = [{**ln, "debit": ln["credit"], "credit": ln["debit"]} for ln in payload["lines"]]
    return {**payload, "label": f"reversal of {payload['label']}", "lines": lines}


class FakeLedger:
    name = "ledger"

    def __init__(self):
        self.entries: dict[str, dict] = {}  # piece number → payload
        self.calls: list[str] = []
        self.lose_next = 0
        self.refuse: set[str] = set()
        self.down = False

    def post(self, payload, posting_key):
        self.calls.append(posting_key)
        if self.down:
            raise TransientError("ledger: connection refused after 6 attempts")
        if posting_key in self.refuse:
            raise RemoteError("ledger: HTTP 422: entry is not balanced", status=422)
        self.entries[posting_key] = payload
        if self.lose_next:
            self.lose_next -= 1
            raise TransientError("ledger: POST /ledger_entries timed out; outcome unknown")
        return f"E{len(self.entries)}"

    def find(self, posting_key):
        if posting_key not in self.entries:
            return None
        return f"E{list(self.entries).index(posting_key) + 1}"


@pytest.fixture
def ctx(store):
    account = store.upsert_account(
        "kashclick_to_pennylane", "shop", name="Shop", conn_id="x", settings=parse_settings({})
    )
    return store, Outbox(store.conn), account


def test_posting_twice_posts_once(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    assert outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse) == []
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")["posted"] == 1
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")["posted"] == 0
    (row,) = outbox.history(acc.id, "ledger", "order:1")
    assert (row["state"], row["target_ref"], row["posting_key"]) == ("confirmed", "E1", "shop:order:1:r1")
    assert ledger.calls == ["shop:order:1:r1"]


def test_a_lost_answer_is_looked_up_and_never_posted_twice(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    ledger.lose_next = 1
    for i in range(3):
        outbox.enqueue(acc.id, acc.key, "ledger", f"order:{i}", entry(f"{i + 1}.00"), reverse=reverse)
    first = post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    assert first == {"posted": 2, "reconciled": 0, "failed": 0, "unknown": 1, "held": 0}
    assert outbox.history(acc.id, "ledger", "order:0")[0]["state"] == "unknown"
    again = post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")
    assert again == {"posted": 0, "reconciled": 1, "failed": 0, "unknown": 0, "held": 0}
    assert ledger.calls.count("shop:order:0:r1") == 1 and len(ledger.entries) == 3
    assert outbox.history(acc.id, "ledger", "order:0")[0]["state"] == "reconciled"


def test_an_unknown_outcome_that_did_not_land_is_posted_again_once(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:9", entry("9.00"), reverse=reverse)
    (row,) = outbox.due(acc.id, "ledger")
    outbox.mark_unknown(outbox.mark_sent(row, "r0"), "the worker died mid-call")  # nothing reached the ledger
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")["posted"] == 1
    assert ledger.calls == ["shop:order:9:r1"]


def test_a_changed_event_gets_a_reversal_and_a_new_entry_never_an_edit(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    made = outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("12.50"), reverse=reverse)
    assert [(r["kind"], r["posting_key"]) for r in made] == [
        ("reversal", "shop:order:1:r1:rev"),
        ("entry", "shop:order:1:r2"),
    ]
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")
    assert ledger.calls == ["shop:order:1:r1", "shop:order:1:r1:rev", "shop:order:1:r2"]
    assert ledger.entries["shop:order:1:r1"] == entry("10.00")  # the posted entry was never edited
    assert ledger.entries["shop:order:1:r1:rev"]["lines"][0] == {"account": "411", "debit": "0.00", "credit": "10.00"}
    states = [(r["kind"], r["revision"], r["state"]) for r in outbox.history(acc.id, "ledger", "order:1")]
    assert states == [("entry", 1, "superseded"), ("reversal", 1, "confirmed"), ("entry", 2, "confirmed")]
    # a change before the new entry was sent just updates the claim
    outbox.enqueue(acc.id, acc.key, "ledger", "order:2", entry("1.00"), reverse=reverse)
    outbox.enqueue(acc.id, acc.key, "ledger", "order:2", entry("2.00"), reverse=reverse)
    (claim,) = outbox.history(acc.id, "ledger", "order:2")
    assert claim["payload"] == entry("2.00") and claim["revision"] == 1


def test_a_deleted_event_is_reversed_and_an_unsent_one_dropped(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "payment:1", entry("5.00"), reverse=reverse)
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    (rev,) = outbox.delete_event(acc.id, acc.key, "ledger", "payment:1", reverse=reverse)
    assert rev["kind"] == "reversal" and rev["posting_key"] == "shop:payment:1:r1:rev"
    assert outbox.delete_event(acc.id, acc.key, "ledger", "payment:1", reverse=reverse) == []  # once
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")
    assert [r["state"] for r in outbox.history(acc.id, "ledger", "payment:1")] == ["superseded", "confirmed"]
    outbox.enqueue(acc.id, acc.key, "ledger", "payment:2", entry("7.00"), reverse=reverse)
    (dropped,) = outbox.delete_event(acc.id, acc.key, "ledger", "payment:2", reverse=reverse)
    assert (
        dropped["state"] == "superseded" and post_outbox(outbox, acc.id, "ledger", ledger, run_id="r3")["posted"] == 0
    )
    assert "shop:payment:2:r1" not in ledger.calls


def test_illegal_transitions_are_refused_naming_the_posting(ctx):
    store, outbox, acc = ctx
    (row,) = outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("1.00"), reverse=reverse)
    with pytest.raises(OutboxStateError, match="outbox shop:order:1:r1: cannot go from claimed to confirmed"):
        outbox.confirm(row, "E1")
    with pytest.raises(OutboxStateError, match="cannot go from claimed to reconciled"):
        outbox.reconcile(row, "E1")
    sent = outbox.mark_sent(row, "r1")
    with pytest.raises(OutboxStateError, match="cannot go from sent to sent"):
        outbox.mark_sent(sent, "r1")


def test_a_refused_posting_fails_alone_and_the_others_go(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    ledger.refuse = {"shop:order:2:r1"}
    for i in range(4):
        outbox.enqueue(acc.id, acc.key, "ledger", f"order:{i}", entry("1.00"), reverse=reverse)
    with pytest.raises(DeliveryRefused, match="not balanced"):
        post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    states = {i: outbox.history(acc.id, "ledger", f"order:{i}")[0]["state"] for i in range(4)}
    assert states == {0: "confirmed", 1: "confirmed", 2: "failed", 3: "confirmed"}
    assert "not balanced" in outbox.history(acc.id, "ledger", "order:2")[0]["error"]


def test_a_target_that_is_down_leaves_the_posting_claimed(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    ledger.down = True
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("1.00"), reverse=reverse)
    with pytest.raises(TransientError):
        post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    assert outbox.history(acc.id, "ledger", "order:1")[0]["state"] == "claimed"
    ledger.down = False
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")["posted"] == 1


def test_a_posting_left_sent_by_a_dead_worker_is_looked_up_not_posted_again(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    for i in (1, 2):
        outbox.enqueue(acc.id, acc.key, "ledger", f"order:{i}", entry("1.00"), reverse=reverse)
    landed, lost = outbox.due(acc.id, "ledger")
    ledger.post(dict(landed["payload"]), outbox.mark_sent(landed, "r0")["posting_key"])  # reached the ledger...
    outbox.mark_sent(lost, "r0")  # ...this one never did; then the worker was killed
    counts = post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    assert counts == {"posted": 1, "reconciled": 1, "failed": 0, "unknown": 0, "held": 0}
    assert ledger.calls == ["shop:order:1:r1", "shop:order:2:r1"]  # each exactly once
    assert [outbox.history(acc.id, "ledger", f"order:{i}")[0]["state"] for i in (1, 2)] == ["reconciled", "confirmed"]


def test_a_second_pass_at_the_same_time_is_refused(ctx, pg_url):
    from tillflow.store import Store

    store, outbox, acc = ctx
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("1.00"), reverse=reverse)
    ledger = FakeLedger()
    with Store.open(pg_url) as other:
        with Outbox(other.conn).posting(acc.id, "ledger"):
            with pytest.raises(TransientError, match="another pass is posting"):
                post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    assert ledger.calls == [] and post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")["posted"] == 1


def test_a_replacement_waits_for_the_reversal_of_what_it_replaces(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    outbox.enqueue(acc.id, acc.key, "ledger", "order:2", entry("3.00"), reverse=reverse)
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("12.00"), reverse=reverse)
    outbox.enqueue(acc.id, acc.key, "ledger", "order:2", entry("4.00"), reverse=reverse)
    ledger.refuse = {"shop:order:1:r1:rev"}
    ledger.lose_next = 0
    with pytest.raises(DeliveryRefused):
        post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")
    assert "shop:order:1:r2" not in ledger.entries  # never both 10.00 and 12.00 in the ledger
    assert ledger.entries["shop:order:2:r2"] == entry("4.00")  # the other event went on
    assert outbox.history(acc.id, "ledger", "order:1")[-1]["state"] == "claimed"

    ledger.refuse = set()
    (rev,) = [r for r in outbox.history(acc.id, "ledger", "order:1") if r["kind"] == "reversal"]
    outbox.retry(rev)  # fixed by hand: failed → claimed
    counts = post_outbox(outbox, acc.id, "ledger", ledger, run_id="r3")
    assert counts["posted"] == 2 and counts["held"] == 0
    assert ledger.calls[-2:] == ["shop:order:1:r1:rev", "shop:order:1:r2"]


def test_a_replacement_is_held_while_its_reversal_outcome_is_unknown(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("12.00"), reverse=reverse)
    ledger.lose_next = 1
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2") == {
        "posted": 0,
        "reconciled": 0,
        "failed": 0,
        "unknown": 1,
        "held": 1,
    }
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r3") == {
        "posted": 1,
        "reconciled": 1,
        "failed": 0,
        "unknown": 0,
        "held": 0,
    }
    assert ledger.calls == ["shop:order:1:r1", "shop:order:1:r1:rev", "shop:order:1:r2"]


def test_an_event_deleted_then_back_unchanged_before_the_reversal_went_is_posted_again(ctx):
    store, outbox, acc = ctx
    ledger = FakeLedger()
    outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")
    outbox.delete_event(acc.id, acc.key, "ledger", "order:1", reverse=reverse)
    (again,) = outbox.enqueue(acc.id, acc.key, "ledger", "order:1", entry("10.00"), reverse=reverse)
    assert (again["kind"], again["posting_key"]) == ("entry", "shop:order:1:r2")
    post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")
    assert ledger.calls == ["shop:order:1:r1", "shop:order:1:r1:rev", "shop:order:1:r2"]


def test_a_conflict_answer_is_looked_up_next_pass_and_the_others_go(ctx):
    store, outbox, acc = ctx

    class Conflicting(FakeLedger):
        def post(self, payload, posting_key):
            if posting_key == "shop:order:0:r1":
                self.entries[posting_key] = payload  # it was there already: 409 duplicate piece number
                raise RemoteError("ledger: HTTP 409: piece number already used", status=409)
            return super().post(payload, posting_key)

    ledger = Conflicting()
    for i in range(2):
        outbox.enqueue(acc.id, acc.key, "ledger", f"order:{i}", entry("1.00"), reverse=reverse)
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r1")["unknown"] == 1
    assert outbox.history(acc.id, "ledger", "order:1")[0]["state"] == "confirmed"
    assert post_outbox(outbox, acc.id, "ledger", ledger, run_id="r2")["reconciled"] == 1
